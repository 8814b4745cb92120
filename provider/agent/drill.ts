/**
 * A restore drill of one point, on the machine that holds it (the agent's `drill-point`): what a
 * person restoring it would live through, in a scratch folder removed afterwards. The manifest is
 * checked first (signature, HMAC, place); then each item is restored through its source kind's
 * restore, which compares the stored file's and the restored data's SHA-256 with the manifest's;
 * `qemu-img check` runs on each stored file; and, when asked, the restored disk boots under QEMU
 * (TCG, the disk in snapshot mode) until a marker appears on its serial console.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import type { SigningPublicKey } from "../common/signingKey";
import { CofferError, isCofferError } from "../common/errors";
import { restorerOf } from "../sources/registry";
import { checkManifest } from "./backupSet";
import { checkImage } from "./image";
import type { Manifest, ManifestItem } from "./manifest";
import type { CinderVolumeItem } from "../sources/cinderVolume";
import { withPrivateDir, withSecretFd } from "./tempFiles";
import { start } from "./tools";

export type DrillCheckStatus = "ok" | "failed" | "skipped";
export const DRILL_CHECKS = ["manifest", "hash", "qemuImgCheck", "boot"] as const;
export type DrillCheck = (typeof DRILL_CHECKS)[number];

export interface DrillChecks {
  /** The manifest's signature (a signed point), HMAC and place. */
  manifest: DrillCheckStatus;
  /** Each item restored: the stored file's SHA-256, then the restored data's, against the manifest's. */
  hash: DrillCheckStatus;
  /** `qemu-img check` of each stored file. */
  qemuImgCheck: DrillCheckStatus;
  /** Present when a boot was asked for. */
  boot?: DrillCheckStatus;
}

export interface BootRequest {
  /** Text the guest writes to its first serial port once it is up. */
  marker: string;
  timeoutSeconds: number;
  memoryMiB: number;
  /** The item whose disk boots; default: the point's first item. */
  item?: string;
}

export interface DrillRequest {
  /** The point's folder (its manifest's). */
  pointDir: string;
  /** The keys the point was made with; the manifest names the one its HMAC needs. */
  keys: { passphrase?: string; manifestKey?: string };
  /** The public key a signed point's manifest must be signed with (the set's state says which). */
  publicKey?: SigningPublicKey;
  /** Where the scratch folder is made; default the system's temp folder. */
  scratchDir?: string;
  boot?: BootRequest;
}

export interface DrillReport {
  ok: boolean;
  checks: DrillChecks;
  /** The first check that failed, and why: "hash: item web-1-root: ...". */
  failure?: string;
  /** The items restored and checked. */
  items: string[];
  /** Items this drill can't restore (a Cinder backup with no copy in the target), and why. */
  notDrilled: { item: string; reason: string }[];
  /**
   * What the authentic manifest records of its Cinder sources (with a copy in the target or not):
   * what a drill of their Cinder backups restores from, in Pulumi's process.
   */
  cinderSources?: { item: string; source: CinderVolumeItem }[];
  durationMs: number;
}

export interface DrillEvents {
  signal?: AbortSignal;
  progress?: (item: string, percent: number) => void;
}

/** The error's message, starting with `subject` ("item web-1-root") once. */
function messageOf(error: unknown, subject: string): string {
  const message = isCofferError(error) ? error.shortMessage : (error as Error).message;
  return message.startsWith(`${subject}:`) ? message : `${subject}: ${message}`;
}

/** Drills one point; a check that fails is reported, not thrown (the target unreachable is thrown). */
export async function drillPoint(req: DrillRequest, events: DrillEvents = {}): Promise<DrillReport> {
  const started = Date.now();
  const checks: DrillChecks = {
    manifest: "skipped",
    hash: "skipped",
    qemuImgCheck: "skipped",
    ...(req.boot ? { boot: "skipped" as const } : {}),
  };
  const failures: string[] = [];
  const stopIfAborted = () => {
    if (events.signal?.aborted) throw new CofferError("ABORTED", "the drill was stopped");
  };
  /** A check's failure; a stopped drill is no failure of the point, and ends the drill. */
  const failOn = (check: DrillCheck, error: unknown, subject: string) => {
    if (isCofferError(error) && error.code === "ABORTED") throw error;
    fail(check, messageOf(error, subject));
  };
  const fail = (check: DrillCheck, message: string) => {
    checks[check] = "failed";
    failures.push(`${check}: ${message}`);
  };
  let cinderSources: NonNullable<DrillReport["cinderSources"]> = [];
  const report = (items: string[] = [], notDrilled: DrillReport["notDrilled"] = []): DrillReport => ({
    ok: failures.length === 0,
    checks,
    ...(failures.length > 0 ? { failure: failures[0] } : {}),
    items,
    notDrilled,
    ...(cinderSources.length > 0 ? { cinderSources } : {}),
    durationMs: Date.now() - started,
  });

  const opened = await checkManifest(req.pointDir, { ...req.keys, publicKey: req.publicKey });
  if (!opened.ok) {
    fail("manifest", opened.failures.map((f) => f.replace(/^manifest: /, "")).join("; "));
    return report();
  }
  const { manifest } = opened;
  if (manifest.keySource === "recipients") {
    fail("manifest", "the point is sealed for recipients: a drill has no recipient's private key to open it");
    return report();
  }
  checks.manifest = "ok";
  cinderSources = [...manifest.items, ...(manifest.cloudItems ?? [])].flatMap((i) =>
    i.source.kind === "cinderVolume" ? [{ item: i.name, source: i.source }] : [],
  );
  const notDrilled = (manifest.cloudItems ?? []).map((item) => ({
    item: item.name,
    reason: "only the cloud holds its backup (no copy in the target)",
  }));
  const drilled = manifest.items.filter((item) => restorerOf(item) !== undefined);
  for (const item of manifest.items.filter((i) => !drilled.includes(i))) {
    notDrilled.push({ item: item.name, reason: `its source kind, ${item.source.kind}, has no restore` });
  }
  const items = drilled.map((i) => i.name);
  // Only Cinder holds the point's backups: what drills them is a scratch volume (the provider's).
  if (drilled.length === 0 && notDrilled.length > 0 && notDrilled.length === cinderSources.length) {
    return report(items, notDrilled);
  }
  if (drilled.length === 0) {
    // A drill that restores nothing proves nothing.
    const why = notDrilled.map((n) => `${n.item}: ${n.reason}`).join("; ");
    fail("hash", `no item of the point can be restored here (${why || "it has no items"})`);
    return report(items, notDrilled);
  }

  await withSecretFd(opened.backupsKey ?? "", async (key) => {
    await withPrivateDir(
      "drill",
      async (dir) => {
        const restored = new Map<string, string>();
        for (const item of drilled) {
          stopIfAborted();
          const file = path.join(dir, `${item.name}.raw`);
          const onProgress = events.progress && ((percent: number) => events.progress!(item.name, percent));
          const step = <T>(_label: string, _total: number, work: (p?: (percent: number) => void) => Promise<T>) =>
            work(onProgress);
          try {
            await restorerOf(item)!({ file, format: "raw" }, { setDir: req.pointDir, key, step });
            restored.set(item.name, file);
          } catch (error) {
            failOn("hash", error, `item ${item.name}`);
          }
        }
        if (checks.hash === "skipped") checks.hash = "ok";
        for (const item of drilled) {
          stopIfAborted();
          try {
            await checkImage(path.join(req.pointDir, item.file), item.encrypted, key, `item ${item.name}`);
          } catch (error) {
            failOn("qemuImgCheck", error, `item ${item.name}`);
          }
        }
        if (checks.qemuImgCheck === "skipped") checks.qemuImgCheck = "ok";
        stopIfAborted();
        if (req.boot && (await bootCheck(req.boot, manifest, restored, dir, fail, events.signal))) checks.boot = "ok";
      },
      req.scratchDir,
    );
  });
  return report(items, notDrilled);
}

/** Boots the asked item's restored disk: true when the marker appeared; a failure goes to `fail("boot", ...)`. */
async function bootCheck(
  boot: BootRequest,
  manifest: Manifest,
  restored: Map<string, string>,
  dir: string,
  fail: (check: DrillCheck, message: string) => void,
  signal?: AbortSignal,
): Promise<boolean> {
  const item: ManifestItem | undefined = boot.item
    ? manifest.items.find((i) => i.name === boot.item)
    : manifest.items[0];
  if (!item) {
    const has = manifest.items.map((i) => i.name).join(", ") || "none";
    fail("boot", `the point has no item ${boot.item ?? "to boot"} (its items: ${has})`);
    return false;
  }
  const disk = restored.get(item.name);
  if (!disk) {
    fail("boot", `item ${item.name} was not restored, so it can't boot`);
    return false;
  }
  try {
    await bootUntilMarker({ disk, dir, boot, subject: `item ${item.name}`, signal });
    return true;
  } catch (error) {
    if (isCofferError(error) && error.code === "ABORTED") throw error;
    fail("boot", messageOf(error, `item ${item.name}`));
    return false;
  }
}

/** How often the serial console's file is read while waiting for the marker. */
const SERIAL_POLL_MS = 200;

/**
 * Boots `disk` (raw) under QEMU with TCG, its writes kept in a throw-away overlay (snapshot=on),
 * the first serial port written to a file in `dir`, until `boot.marker` appears there; then QEMU
 * is stopped by its pid, always. It dies with this process too (see `start`).
 */
export async function bootUntilMarker(options: {
  disk: string;
  dir: string;
  boot: BootRequest;
  subject: string;
  signal?: AbortSignal;
}): Promise<void> {
  const { disk, dir, boot, subject } = options;
  const serial = path.join(dir, `serial-${path.basename(disk)}.log`);
  await fs.writeFile(serial, "", { mode: 0o600 });
  // A comma in a -drive value is written twice.
  const drive = `file=${disk.replace(/,/g, ",,")},format=raw,if=ide,snapshot=on`;
  const args = [
    ...["-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none"],
    ...["-m", String(boot.memoryMiB), "-drive", drive, "-serial", `file:${serial}`, "-no-reboot"],
  ];
  const qemu = await start("qemu-system-x86_64", args, { subject, signal: options.signal, discardStdout: true });
  const ended: { why?: string } = {};
  qemu.finished.then(
    () => (ended.why = `${subject}: QEMU exited before the marker appeared`),
    (error: Error) => (ended.why = messageOf(error, subject)),
  );
  const deadline = Date.now() + boot.timeoutSeconds * 1000;
  try {
    for (;;) {
      const console = await fs.readFile(serial, "utf8").catch(() => "");
      if (console.includes(boot.marker)) return;
      if (options.signal?.aborted) throw new CofferError("ABORTED", `${subject}: the boot was stopped`);
      if (ended.why !== undefined) throw new CofferError("QEMU_FAILED", ended.why);
      if (Date.now() >= deadline) {
        const tail = console
          .slice(-160)
          .replace(/[^\x20-\x7e]+/g, " ")
          .trim();
        const printed = tail ? `; its serial console ends with "${tail}"` : "; its serial console stayed empty";
        throw new CofferError(
          "VERIFY_FAILED",
          `${subject}: timed out after ${boot.timeoutSeconds} s waiting for "${boot.marker}" ` +
            `on the serial console${printed}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, SERIAL_POLL_MS));
    }
  } finally {
    qemu.stop();
    await qemu.finished.catch(() => undefined);
  }
}
