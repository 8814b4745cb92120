import { createHash } from "node:crypto";
import * as path from "node:path";
import {
  Manifest,
  ManifestItem,
  WRAPPED_MANIFEST_SCHEMA_VERSION,
  signatureProblem,
} from "../../provider/agent/manifest";
import { parsePublicKey } from "../../provider/common/signingKey";
import type { SetIndex } from "../../provider/agent/pointIndex";
import type { SetHost } from "../../provider/backupSet/provider";

/**
 * An in-memory stand-in for coffer-agent, for provider tests that are about the history (which
 * points are taken, verified, pruned, kept) rather than about qemu: it records every call, keeps
 * manifests and indexes per folder, and lets a test damage a point.
 */
export function fakeAgent(options: { now: () => Date; hosts?: Record<string, string> } = { now: () => new Date() }) {
  const calls: { where: string; command: string; request: Record<string, any> }[] = [];
  const manifests = new Map<string, Manifest>();
  /** The Ed25519 signature written beside each manifest, by folder. */
  const signatures = new Map<string, string>();
  const indexes = new Map<string, SetIndex>();
  const damaged = new Map<string, string>();
  const unreachable = new Set<string>();
  const notes: string[] = [];
  let points = 0;

  const item = (request: Record<string, any>): ManifestItem => {
    const sha = createHash("sha256").update(`${request.setId}/${request.pointId}/${request.name}`).digest("hex");
    const at = options.now().toISOString();
    return {
      name: request.name,
      host: "fake",
      source: { kind: "disk", path: request.source.disk ?? "/d", format: "raw" },
      file: `${request.name}.qcow2`,
      format: request.encrypted ? "qcow2-in-luks" : "qcow2",
      compression: request.compression,
      encrypted: request.encrypted,
      virtualSize: 1 << 20,
      sizeBytes: 4096,
      streamSha256: sha,
      fileSha256: sha,
      verifiedAtBackup: request.integrityCheck,
      startedAt: at,
      finishedAt: at,
    };
  };

  const handlers: Record<string, (request: Record<string, any>) => unknown> = {
    "check-target": () => ({ targetId: "target-1" }),
    "backup-item": (request) => item(request),
    version: () => ({ qemu: "7.2.0", node: process.version, manifestSchema: WRAPPED_MANIFEST_SCHEMA_VERSION }),
    "write-manifest": (request) => {
      manifests.set(request.setDir, request.manifest);
      if (request.signature) signatures.set(request.setDir, request.signature);
      return path.join(request.setDir, "manifest.json");
    },
    "verify-set": (request) => {
      const manifest = manifests.get(request.setDir);
      const checkedAt = options.now().toISOString();
      const base = { checkedAt, level: request.level, targetId: "target-1" };
      if (!manifest) return { ...base, status: "missing", failures: [`manifest: ${request.setDir} is missing`] };
      const problem = damaged.get(request.setDir);
      if (problem) return { ...base, status: "failed", failures: [problem], manifest };
      // The real check of the signature, over the manifest as the test may have changed it.
      if (request.publicKey) {
        const parsed = parsePublicKey(request.publicKey, "publicKey");
        if (!parsed.ok) throw new Error(parsed.problem);
        const signature = signatures.get(request.setDir);
        const text = JSON.stringify({ manifest, hmacSha256: "0".repeat(64), ed25519Signature: signature });
        const bad = signatureProblem(text, parsed.key);
        if (bad) return { ...base, status: "failed", failures: [bad.message], manifest };
      }
      return { ...base, status: "ok", failures: [], manifest };
    },
    "delete-set": (request) => {
      manifests.delete(request.setDir);
      return { deleted: request.setDir };
    },
    "delete-points": (request) => {
      for (const dir of request.pointDirs) manifests.delete(dir);
      return { deleted: request.pointDirs, failed: [] };
    },
    "read-index": (request) => {
      const index = indexes.get(request.setDir);
      const present = (id: string) => [...manifests.keys()].some((dir) => path.basename(dir) === id);
      return index && { index: { ...index, points: index.points.filter((p) => present(p.id)) }, targetId: "target-1" };
    },
    "write-index": (request) => {
      indexes.set(request.setDir, request.index);
      return { written: request.setDir };
    },
  };

  const host: SetHost = {
    agent: (where) => ({
      where: where ?? "local",
      async call<T>(command: string, request: object): Promise<T> {
        const at = where ?? "local";
        calls.push({ where: at, command, request: request as Record<string, any> });
        if (unreachable.has(at)) throw new Error(`host ${at} can't be reached over ssh`);
        return handlers[command](request as Record<string, any>) as T;
      },
    }),
    newSetId: () => "nightly-1a2b3c4d",
    newPointId: () => `p${String(++points).padStart(3, "0")}`,
    now: options.now,
    progress: () => undefined,
    note: (message) => notes.push(message),
  };
  return { host, calls, manifests, signatures, indexes, damaged, unreachable, notes };
}
