/**
 * Merging a pruned link into the kept point that builds on it, from the provider's side (the agent's
 * half is provider/agent/merge.ts): the merged backups are made and verified by the agent, the
 * rewritten manifests are composed, HMAC'd and signed here (the signing key never leaves this
 * process), and the agent swaps them in. Used by `pulumi up`'s retention and by `coffer prune`.
 */
import { sha256Text } from "../agent/chain";
import type { ItemChain } from "../agent/chainLink";
import {
  Manifest,
  ManifestItem,
  openManifest,
  pointSecret,
  readManifest,
  renderSignedManifest,
  signManifest,
} from "../agent/manifest";
import type { MergedFile, RewrittenManifest } from "../agent/merge";
import type { SetOwner } from "../agent/setOwner";
import { CofferError } from "../common/errors";
import type { TargetRef } from "../common/targetIdentity";
import type { AgentClient } from "./agentClient";

/** A point's manifest as it is now. */
export interface PointManifest {
  pointId: string;
  manifest: Manifest;
}

/**
 * The manifests a merge of `from` into `into` rewrites, in order (`into` first, then each point after
 * it that names a rewritten manifest's digest): `into`'s merged items build on what `from`'s built on,
 * one link shorter; each later link names its base's new digest and depth. `render` makes a manifest's
 * file (HMAC, signature): its digest is what the next link names. Pure but for `render`.
 */
export async function rewriteManifests(input: {
  from: PointManifest;
  into: PointManifest;
  files: readonly MergedFile[];
  /** The points after `into` in its chains, oldest first (others are passed over). */
  later: readonly PointManifest[];
  render: (manifest: Manifest) => Promise<string>;
}): Promise<(RewrittenManifest & { manifest: Manifest })[]> {
  const { from, into, files } = input;
  const items = into.manifest.items.map((item): ManifestItem => {
    const base = item.chain?.base;
    if (!item.chain || base?.pointId !== from.pointId) return item;
    const merged = files.find((f) => f.item === item.name);
    const fromItem = from.manifest.items.find((i) => i.name === base.item && i.file === base.file);
    if (!merged || !fromItem) {
      const what = merged ? `point ${from.pointId} has no backup ${base.file}` : "the agent merged no backup of it";
      throw new CofferError("INVALID_INPUT", `point ${into.pointId}: item ${item.name}: ${what}`);
    }
    const { base: _from, fullBecause: _full, merged: earlier, ...kept } = item.chain;
    const chain: ItemChain = {
      ...kept,
      ...(fromItem.chain?.base ? { base: fromItem.chain.base } : {}),
      depth: fromItem.chain?.depth ?? 0,
      merged: [...(earlier ?? []), from.pointId],
    };
    return { ...item, file: merged.file, sizeBytes: merged.sizeBytes, fileSha256: merged.fileSha256, chain };
  });
  const rewritten: (RewrittenManifest & { manifest: Manifest })[] = [];
  const add = async (pointId: string, manifest: Manifest) => {
    rewritten.push({ pointId, manifest, text: await input.render(manifest) });
  };
  await add(into.pointId, { ...into.manifest, items });
  for (const point of input.later) {
    let changed = false;
    const laterItems = point.manifest.items.map((item): ManifestItem => {
      const base = item.chain?.base;
      const now = base && rewritten.find((r) => r.pointId === base.pointId);
      if (!item.chain || !base || !now) return item;
      // By name: a merged base's file has a new name, which the link must name too.
      const baseItem = now.manifest.items.find((i) => i.name === base.item);
      if (!baseItem) return item;
      changed = true;
      const chain = { ...item.chain, base: { ...base, file: baseItem.file, manifestSha256: sha256Text(now.text) } };
      return { ...item, chain: { ...chain, depth: (baseItem.chain?.depth ?? 0) + 1 } };
    });
    if (changed) await add(point.pointId, { ...point.manifest, items: laterItems });
  }
  return rewritten;
}

/** What merging needs: the agent of the set's manifest host and the set's keys (as the point was made). */
export interface MergeContext {
  agent: AgentClient;
  target: TargetRef;
  /** The set's folder. */
  setDir: string;
  /** The point's keys: the passphrase of an encrypted set (it unwraps the chain's key), else the manifest key. */
  keys: { passphrase?: string; manifestKey?: string };
  /** Signs the rewritten manifests; absent: they are written unsigned. */
  signingKey?: string;
  /** Refuse to write a signed manifest back unsigned (a person's prune: the policy may still sign). */
  keepSigned?: boolean;
  owner: SetOwner;
  /** Every secret, for redaction. */
  secrets: string[];
}

export interface MergeResult {
  /** The rewritten manifests, `into`'s first. */
  rewritten: { pointId: string; manifest: Manifest }[];
  /** Committed, but its clean-up left for the next command on the set (why). */
  unfinished?: string;
}

/**
 * Merges point `from` into point `into` (which builds on it), rewriting `into`'s manifest and those of
 * `later` (the points after it, oldest first) that name a rewritten one. Every manifest read must
 * verify with the set's keys first. Throws, with both points as they were, when anything fails before
 * the swap is committed.
 */
export async function mergePoint(
  ctx: MergeContext,
  ids: { from: string; into: string; later: readonly string[] },
): Promise<MergeResult> {
  const { agent, target, setDir, secrets } = ctx;
  const version = await agent.call("version", {});
  if (!version.merges) {
    const fix = "install the same coffer version where Pulumi runs and on every host";
    throw new CofferError("AGENT_PROTOCOL_MISMATCH", `coffer-agent on ${agent.where} can't merge points: ${fix}`);
  }
  const read = async (pointId: string) => {
    const { text } = await agent.call("read-manifest", { target, setDir: `${setDir}/${pointId}` });
    if (text === undefined) throw new CofferError("SOURCE_MISSING", `point ${pointId}: its manifest is missing`);
    const parsed = readManifest(text);
    if (!parsed.ok) throw new CofferError("VERIFY_FAILED", `point ${pointId}: ${parsed.problem}`);
    return { pointId, manifest: parsed.manifest, text };
  };
  const into = await read(ids.into);
  const encrypted = into.manifest.policy.encrypted;
  const given = encrypted ? ctx.keys.passphrase : ctx.keys.manifestKey;
  const secret = given === undefined ? undefined : await pointSecret(into.manifest, given);
  if (secret === undefined) {
    throw new CofferError("VERIFY_FAILED", `point ${ids.into}: the set's key does not open its manifest`);
  }
  const allSecrets = [...secrets, secret];
  const points = [await read(ids.from), into, ...(await Promise.all(ids.later.map(read)))];
  // Every manifest the merge rewrites (into's and the later ones), not only into's.
  const signed = points.slice(1).find((p) => p.manifest.signing);
  if (ctx.keepSigned && signed?.manifest.signing && !ctx.signingKey) {
    const key = signed.manifest.signing.keyFingerprint;
    throw new CofferError(
      "INVALID_INPUT",
      `point ${signed.pointId}'s manifest is signed (key ${key}): give the signing key`,
    );
  }
  for (const point of points) {
    const opened = await openManifest(point.text, secret);
    if (!opened.ok || !opened.authentic) {
      throw new CofferError(
        "VERIFY_FAILED",
        `point ${point.pointId}: its manifest does not verify with its chain's key`,
      );
    }
  }
  const request = { target, setDir, from: ids.from, into: ids.into, manifestSecret: secret, owner: ctx.owner };
  const { files } = await agent.call("merge-prepare", request, { secrets: allSecrets });
  let rewritten: Awaited<ReturnType<typeof rewriteManifests>>;
  try {
    rewritten = await rewriteManifests({
      from: points[0],
      into,
      files,
      later: points.slice(2),
      render: async (manifest) => {
        const { signing: _old, ...unsigned } = manifest;
        const signed: { manifest: Manifest; signature?: string } = ctx.signingKey
          ? signManifest(unsigned, ctx.signingKey)
          : { manifest: unsigned };
        return renderSignedManifest(signed.manifest, secret, signed.signature);
      },
    });
  } catch (error) {
    await agent.call("merge-abort", { target, setDir, from: ids.from, into: ids.into }).catch(() => undefined);
    throw error;
  }
  const manifests = rewritten.map(({ pointId, text }) => ({ pointId, text }));
  const committed = await agent
    .call("merge-commit", { ...request, manifests }, { secrets: allSecrets })
    .catch(async (error: Error) => {
      // A reply lost after the commit (a dropped connection): the manifest in place says whether it happened.
      const now = await agent.call("read-manifest", { target, setDir: `${setDir}/${ids.into}` }).catch(() => ({}));
      if ((now as { text?: string }).text === rewritten[0].text) return { removed: ids.from };
      // Not committed: undo what was prepared (only a "prepared" journal is), or it blocks the set's next merges.
      await agent.call("merge-abort", { target, setDir, from: ids.from, into: ids.into }).catch(() => undefined);
      throw error;
    });
  return {
    rewritten: rewritten.map(({ pointId, manifest }) => ({ pointId, manifest })),
    ...("unfinished" in committed && committed.unfinished ? { unfinished: committed.unfinished } : {}),
  };
}
