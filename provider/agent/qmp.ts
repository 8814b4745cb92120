import { randomBytes } from "node:crypto";
import * as net from "node:net";
import * as os from "node:os";
import { CofferError } from "../common/errors";
import { Compression } from "./image";
import { pidAlive } from "./tools";

type Json = Record<string, unknown>;

/** A QMP connection over a unix socket: JSON commands with ids, events to listeners. */
export class QmpClient {
  private buffer = "";
  private nextId = 0;
  private readonly pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private closedError: Error | undefined;

  private constructor(
    private readonly socket: net.Socket,
    private readonly subject: string,
  ) {
    socket.on("data", (chunk) => this.receive(chunk.toString()));
    const gone = () =>
      new CofferError("QEMU_FAILED", `${subject}: QEMU closed its QMP socket (did the VM stop or crash?)`);
    socket.on("close", () => this.fail(gone()));
    // A QEMU killed while commands are in flight resets the socket before closing it: same cause.
    socket.on("error", (error: NodeJS.ErrnoException) =>
      this.fail(
        error.code === "ECONNRESET" || error.code === "EPIPE"
          ? gone()
          : new CofferError("QEMU_FAILED", `${subject}: QMP socket error: ${error.message}`),
      ),
    );
  }

  static async connect(socketPath: string, subject: string): Promise<QmpClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(socketPath);
      s.once("connect", () => resolve(s));
      s.once("error", (error: NodeJS.ErrnoException) =>
        reject(
          new CofferError(
            "SOURCE_MISSING",
            `${subject}: no QEMU answers on ${socketPath} (${error.code ?? error.message}): check the VM is running and the socket path`,
          ),
        ),
      );
    });
    const client = new QmpClient(socket, subject);
    await client.greeting();
    await client.execute("qmp_capabilities");
    return client;
  }

  private greetingWaiter: ((v: unknown) => void) | undefined;
  private greeting(): Promise<unknown> {
    return new Promise((resolve) => (this.greetingWaiter = resolve));
  }

  private receive(text: string) {
    this.buffer += text;
    let newline: number;
    while ((newline = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      const message = JSON.parse(line) as Json;
      if ("QMP" in message) this.greetingWaiter?.(message);
      const id = message.id as string | undefined;
      if (id === undefined || !this.pending.has(id)) continue;
      const waiter = this.pending.get(id)!;
      this.pending.delete(id);
      if ("error" in message) {
        const error = message.error as { class: string; desc: string };
        waiter.reject(new CofferError("QEMU_FAILED", `${this.subject}: QEMU refused: ${error.desc}`));
      } else waiter.resolve(message.return);
    }
  }

  private fail(error: Error) {
    this.closedError ??= error;
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }

  execute<T = unknown>(command: string, args?: Json): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `coffer-${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(
        JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + "\n",
      );
    });
  }

  close() {
    this.socket.end();
  }
}

/** Names of what a backup adds to a running QEMU: `coffer-<host>-<pid>-<random>`. */
function newTag(): string {
  return `coffer-${os.hostname().replace(/[^A-Za-z0-9]/g, "")}-${process.pid}-${randomBytes(3).toString("hex")}`;
}

const TAG = /^coffer-([A-Za-z0-9]*)-(\d+)-[0-9a-f]{6}/;

/** True for a tag this host made in a process that is gone. */
function isStale(name: string): boolean {
  const match = TAG.exec(name);
  return !!match && match[1] === os.hostname().replace(/[^A-Za-z0-9]/g, "") && !pidAlive(Number(match[2]));
}

/** Removes jobs, nodes and secrets that a killed Coffer run left in this QEMU. */
export async function sweepStale(qmp: QmpClient): Promise<string[]> {
  const removed: string[] = [];
  const jobs = await qmp.execute<{ id: string; status: string }[]>("query-jobs");
  for (const job of jobs.filter((j) => isStale(j.id))) {
    if (job.status !== "concluded") await qmp.execute("job-cancel", { id: job.id }).catch(() => undefined);
    await waitFor(
      async () =>
        (await qmp.execute<{ id: string; status: string }[]>("query-jobs")).find((j) => j.id === job.id)?.status ===
        "concluded",
      10_000,
    );
    await qmp.execute("job-dismiss", { id: job.id }).catch(() => undefined);
    removed.push(job.id);
  }
  const nodes = await qmp.execute<{ "node-name": string }[]>("query-named-block-nodes", { flat: true });
  for (const node of nodes.filter((n) => isStale(n["node-name"]))) {
    await qmp.execute("blockdev-del", { "node-name": node["node-name"] }).catch(() => undefined);
    removed.push(node["node-name"]);
  }
  const objects = await qmp.execute<{ name: string }[]>("qom-list", { path: "/objects" });
  for (const object of objects.filter((o) => isStale(o.name))) {
    await qmp.execute("object-del", { id: object.name }).catch(() => undefined);
    removed.push(object.name);
  }
  return removed;
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A dirty bitmap of a disk, as query-block reports it. */
export interface DirtyBitmap {
  name: string;
  recording: boolean;
  persistent: boolean;
  busy: boolean;
  /** Set when QEMU loaded it from a disk that was not closed cleanly: it may miss writes. */
  inconsistent?: boolean;
  granularity: number;
  /** Bytes marked dirty. */
  count: number;
}

interface BlockInfo {
  device: string;
  qdev?: string;
  inserted?: {
    "node-name": string;
    drv: string;
    image: { "virtual-size": number };
    "dirty-bitmaps"?: DirtyBitmap[];
  };
}

/** A running VM's disk as a backup reads it. */
export interface SourceNode {
  node: string;
  virtualSize: number;
  /** Its format driver ("qcow2", "raw", ...): only qcow2 keeps bitmaps across restarts. */
  driver: string;
  bitmaps: DirtyBitmap[];
}

/** The node behind `device`: a qdev id ("vda"), a BlockBackend name, or a node name. */
export async function findSourceNode(qmp: QmpClient, device: string, subject: string): Promise<SourceNode> {
  const blocks = await qmp.execute<BlockInfo[]>("query-block");
  const match = blocks.find(
    (b) =>
      b.inserted &&
      (b.device === device ||
        b.qdev === device ||
        b.qdev?.split("/").includes(device) ||
        b.inserted["node-name"] === device),
  );
  if (!match?.inserted) {
    const known = blocks
      .map((b) => b.qdev?.split("/").find((p, i, all) => all[i - 1] === "peripheral") ?? b.device)
      .filter(Boolean);
    throw new CofferError(
      "SOURCE_MISSING",
      `${subject}: the VM has no disk "${device}" (it has: ${known.join(", ") || "none"})`,
    );
  }
  const { inserted } = match;
  return {
    node: inserted["node-name"],
    virtualSize: inserted.image["virtual-size"],
    driver: inserted.drv,
    bitmaps: inserted["dirty-bitmaps"] ?? [],
  };
}

/** The node named `nodeName` (a qemu-storage-daemon's, which has no BlockBackend for query-block to list). */
export async function findNamedNode(qmp: QmpClient, nodeName: string, subject: string): Promise<SourceNode> {
  const nodes = await qmp.execute<
    { "node-name": string; drv: string; image: { "virtual-size": number }; "dirty-bitmaps"?: DirtyBitmap[] }[]
  >("query-named-block-nodes", { flat: true });
  const node = nodes.find((n) => n["node-name"] === nodeName);
  if (!node) throw new CofferError("QEMU_FAILED", `${subject}: QEMU has no node ${nodeName}`);
  return {
    node: nodeName,
    virtualSize: node.image["virtual-size"],
    driver: node.drv,
    bitmaps: node["dirty-bitmaps"] ?? [],
  };
}

/** Removes the bitmaps `names` from `node`; one already gone is no error. */
export async function removeBitmaps(qmp: QmpClient, node: string, names: readonly string[]): Promise<void> {
  for (const name of names) await qmp.execute("block-dirty-bitmap-remove", { node, name }).catch(() => undefined);
}

export interface RunningBackupRequest {
  qmp: QmpClient;
  sourceNode: string;
  /** An empty backup image made beforehand (image.ts createEmptyBackup). */
  target: string;
  encrypted: boolean;
  passphrase?: string;
  compression: Compression;
  bandwidthLimitMiBps: number;
  subject: string;
  signal?: AbortSignal;
  onProgress?: (percent: number) => void;
  /**
   * Incremental backups: `start` names a persistent dirty bitmap added in the same transaction as
   * the copy (so it marks exactly the writes after it); with `since`, an existing bitmap's, only the
   * clusters it marks are copied (sync "bitmap", the bitmap left as it is). `start` is removed again
   * when the copy fails.
   */
  bitmaps?: { start: string; since?: string };
}

/**
 * A point-in-time copy of a running VM's disk: blockdev-add of the target, then a
 * blockdev-backup job (sync full, or the clusters a bitmap marks; `speed` counts every byte, zeros
 * too), polled for progress, then job-dismiss and blockdev-del. What it adds to QEMU is removed in
 * `finally`, or by the next run's sweepStale if this process is killed.
 */
export async function backupRunningVm(req: RunningBackupRequest): Promise<void> {
  const { qmp } = req;
  const tag = newTag();
  const keyId = `${tag}-key`;
  const nodeName = `${tag}-target`;
  const jobId = `${tag}-job`;
  const added = { key: false, node: false, job: false, bitmap: false };
  let copied = false;
  try {
    if (req.encrypted) {
      if (!req.passphrase) throw new Error("an encrypted backup needs the passphrase");
      // Over the QMP socket, never on a command line.
      await qmp.execute("object-add", { "qom-type": "secret", id: keyId, data: req.passphrase, format: "raw" });
      added.key = true;
    }
    const file = { driver: "file", filename: req.target };
    await qmp.execute("blockdev-add", {
      "node-name": nodeName,
      driver: "qcow2",
      "detect-zeroes": "unmap",
      discard: "unmap",
      file: req.encrypted ? { driver: "luks", "key-secret": keyId, file } : file,
      // Our own new image: nothing its header might name is ever opened.
      backing: null,
    });
    added.node = true;
    const since = req.bitmaps?.since;
    const backup = {
      "job-id": jobId,
      device: req.sourceNode,
      target: nodeName,
      ...(since ? { sync: "bitmap", bitmap: since, "bitmap-mode": "never" } : { sync: "full" }),
      speed: req.bandwidthLimitMiBps * 1024 * 1024,
      compress: req.compression !== "none",
      "auto-dismiss": false,
    };
    if (req.bitmaps) {
      const start = { node: req.sourceNode, name: req.bitmaps.start, persistent: true };
      await qmp.execute("transaction", {
        actions: [
          { type: "block-dirty-bitmap-add", data: start },
          { type: "blockdev-backup", data: backup },
        ],
      });
      added.bitmap = true;
    } else {
      await qmp.execute("blockdev-backup", backup);
    }
    added.job = true;
    for (;;) {
      if (req.signal?.aborted) {
        await qmp.execute("job-cancel", { id: jobId }).catch(() => undefined);
        throw new CofferError("ABORTED", `${req.subject}: stopped before it finished`);
      }
      const job = (
        await qmp.execute<
          { id: string; status: string; "current-progress": number; "total-progress": number; error?: string }[]
        >("query-jobs")
      ).find((j) => j.id === jobId);
      if (!job) throw new CofferError("QEMU_FAILED", `${req.subject}: the backup job disappeared from QEMU`);
      if (job["total-progress"] > 0) req.onProgress?.((100 * job["current-progress"]) / job["total-progress"]);
      if (job.status === "concluded") {
        if (job.error)
          throw new CofferError(
            job.error.includes("No space") ? "DISK_FULL" : "QEMU_FAILED",
            `${req.subject}: the backup job failed: ${job.error}`,
          );
        break;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    copied = true;
  } finally {
    if (added.bitmap && !copied) await removeBitmaps(qmp, req.sourceNode, [req.bitmaps!.start]);
    if (added.job) {
      await qmp.execute("job-cancel", { id: jobId }).catch(() => undefined);
      await waitFor(
        async () =>
          (await qmp.execute<{ id: string; status: string }[]>("query-jobs").catch(() => [])).every(
            (j) => j.id !== jobId || j.status === "concluded",
          ),
        10_000,
      ).catch(() => undefined);
      await qmp.execute("job-dismiss", { id: jobId }).catch(() => undefined);
    }
    if (added.node) await qmp.execute("blockdev-del", { "node-name": nodeName }).catch(() => undefined);
    if (added.key) await qmp.execute("object-del", { id: keyId }).catch(() => undefined);
  }
}
