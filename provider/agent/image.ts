import { createHash } from "node:crypto";
import { createReadStream, promises as fs } from "node:fs";
import { CofferError } from "../common/errors";
import * as path from "node:path";
import { NBD_PID_FILE, NBD_SOCKET, SecretFd, withPrivateDir } from "./tempFiles";
import { KEY_FD_PATH, RunningTool, partialName, retryLuksCreation, run, start, toolFailure } from "./tools";

export type Compression = "none" | "zstd" | "zlib";

/**
 * How Coffer stores a backup. Unencrypted: a qcow2 file, compressed or not. Encrypted: a qcow2
 * image inside a LUKS container, whatever the compression. Never qcow2's own LUKS encryption:
 * QEMU 7.2 writes compressed clusters into it unencrypted, and a container encrypts every byte
 * of the qcow2 (metadata included) below the compression.
 */
export interface StoredFormat {
  compression: Compression;
  encrypted: boolean;
}

export const SECRET_ID = "coffer-key";

export function backupFileName(item: string, format: StoredFormat): string {
  return format.encrypted ? `${item}.qcow2.luks` : `${item}.qcow2`;
}

/** Escapes a value for qemu's key=value option syntax (a comma is written twice). */
function optionValue(value: string): string {
  return value.replace(/,/g, ",,");
}

/** The passphrase as a qemu secret object: read from the unnamed file the tool gets as fd 3. */
export const SECRET_OBJECT = `secret,id=${SECRET_ID},file=${KEY_FD_PATH}`;

/** The --image-opts string that opens a stored backup as the guest sees it. */
export function backupImageOpts(file: string, encrypted: boolean): string {
  return encrypted
    ? `driver=qcow2,file.driver=luks,file.key-secret=${SECRET_ID},file.file.driver=file,file.file.filename=${optionValue(file)}`
    : `driver=qcow2,file.driver=file,file.filename=${optionValue(file)}`;
}

function keyArgs(key: SecretFd | undefined): string[] {
  return key ? ["--object", SECRET_OBJECT] : [];
}

export interface SourceInfo {
  format: "raw" | "qcow2";
  virtualSize: number;
}

/** What a stopped VM's disk file holds. A disk a running QEMU holds is refused (it is "locked"). */
export async function sourceInfo(file: string, subject: string): Promise<SourceInfo> {
  let text: string;
  try {
    text = await run("qemu-img", ["info", "--output=json", file], { subject });
  } catch (error) {
    if ((error as CofferError).code === "SOURCE_LOCKED") {
      throw new CofferError(
        "SOURCE_LOCKED",
        `${subject}: ${file} is in use by a running QEMU: back it up through the VM's QMP socket (qmpSocket + device) instead`,
        { cause: error },
      );
    }
    if ((error as CofferError).code === "SOURCE_MISSING") {
      throw new CofferError("SOURCE_MISSING", `${subject}: ${file} does not exist or can't be opened: check the disk path`, { cause: error });
    }
    throw error;
  }
  const info = JSON.parse(text) as { format: string; "virtual-size": number; encrypted?: boolean };
  if (info.format !== "raw" && info.format !== "qcow2") {
    throw new CofferError("QEMU_FAILED", `${subject}: ${file} is a ${info.format} image: Coffer backs up raw and qcow2 disks`);
  }
  if (info.encrypted) {
    throw new CofferError("QEMU_FAILED", `${subject}: ${file} is an encrypted qcow2: Coffer can't read it without its key`);
  }
  return { format: info.format, virtualSize: info["virtual-size"] };
}

/**
 * Makes an empty backup image of `virtualSize` at `file` to write into with `convert -n` or a
 * QMP job: a qcow2 (with the compression type set), wrapped in LUKS when a key is given.
 */
export async function createEmptyBackup(
  file: string,
  virtualSize: number,
  compression: Compression,
  key: SecretFd | undefined,
  subject: string,
) {
  const compressionType = compression === "zlib" ? "zlib" : "zstd";
  if (!key) {
    await run("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `compression_type=${compressionType}`, file, String(virtualSize)], { subject });
    return;
  }
  // The bytes of an empty qcow2 become the payload of a LUKS container; qcow2 then grows inside it.
  // A partial name: if this process is killed here, sweeps and deletes still find the file.
  const inner = path.join(path.dirname(file), partialName(`${path.basename(file)}-inner`));
  try {
    await run("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `compression_type=${compressionType}`, inner, String(virtualSize)], { subject });
    const toLuks = ["convert", "-f", "raw", "-O", "luks", ...keyArgs(key), "-o", `key-secret=${SECRET_ID}`];
    await retryLuksCreation(() =>
      run("qemu-img", [...toLuks, inner, file], {
        subject,
        key,
      }),
    );
  } finally {
    await fs.rm(inner, { force: true });
  }
}

export interface ConvertRequest {
  source: string;
  sourceFormat: "raw" | "qcow2";
  target: string;
  format: StoredFormat;
  virtualSize: number;
  bandwidthLimitMiBps: number;
  key?: SecretFd;
  subject: string;
  signal?: AbortSignal;
  onProgress?: (percent: number) => void;
}

/** Copies a stopped VM's disk into a new backup image in one pass. */
export async function convertDisk(req: ConvertRequest): Promise<void> {
  const compress = req.format.compression !== "none";
  const common = [
    "convert",
    "-p",
    ...(compress ? ["-c", "-m", "4", "-W"] : []),
    // -r counts the source's non-zero bytes per second.
    ...(req.bandwidthLimitMiBps > 0 ? ["-r", `${req.bandwidthLimitMiBps}M`] : []),
    "-f",
    req.sourceFormat,
  ];
  const onStdoutLine = (line: string) => {
    const match = /\(([\d.]+)\/100%\)/.exec(line);
    if (match && req.onProgress) req.onProgress(Number(match[1]));
  };
  if (req.format.encrypted) {
    if (!req.key) throw new Error("an encrypted backup needs its key");
    await createEmptyBackup(req.target, req.virtualSize, req.format.compression, req.key, req.subject);
    const target = ["-n", "--target-image-opts", backupImageOpts(req.target, true)];
    await run("qemu-img", [...common, req.source, ...keyArgs(req.key), ...target], {
      subject: req.subject,
      key: req.key,
      signal: req.signal,
      onStdoutLine,
    });
  } else {
    const options = compress ? ["-o", `compression_type=${req.format.compression}`] : [];
    await run("qemu-img", [...common, "-O", "qcow2", ...options, req.source, req.target], { subject: req.subject, signal: req.signal, onStdoutLine });
  }
}

/** `qemu-img check` of a backup: metadata only (it passes flipped bytes in data clusters). */
export async function checkImage(file: string, encrypted: boolean, key: SecretFd | undefined, subject: string) {
  const used = encrypted ? key : undefined;
  const image = ["--image-opts", backupImageOpts(file, encrypted)];
  await run("qemu-img", ["check", "-q", ...keyArgs(used), ...image], { subject, key: used });
}

/**
 * SHA-256 of the data the guest would see in the image: decrypted and decompressed, streamed
 * through qemu-nbd and nbdcopy (qemu-img can't write to a pipe), never written to disk.
 * qemu-nbd is started here, not by nbdcopy: nbdcopy stopped early leaves its own qemu-nbd
 * running, holding the image's lock and the stdout pipe.
 */
export async function streamSha256(
  imageOpts: string,
  key: SecretFd | undefined,
  subject: string,
  signal?: AbortSignal,
): Promise<string> {
  const secrets = key ? [key.value] : [];
  // Named by host and pid: if this process is killed, the next start stops the server and removes the folder.
  return withPrivateDir("nbd", async (dir) => {
    const socket = path.join(dir, NBD_SOCKET);
    const pidFile = path.join(dir, NBD_PID_FILE);
    const serve = ["-r", "-k", socket, `--pid-file=${pidFile}`, ...keyArgs(key), "--image-opts", imageOpts];
    const server = await start("qemu-nbd", serve, {
      subject,
      key,
      signal,
      discardStdout: true,
    });
    try {
      await untilServing(server, pidFile, subject);
      const hash = createHash("sha256");
      await run("nbdcopy", [`nbd+unix:///?socket=${encodeURIComponent(socket)}`, "-"], { subject, signal, onStdoutChunk: (chunk) => hash.update(chunk) }).catch(
        async (error) => {
          if ((error as CofferError).code === "ABORTED") throw error;
          // nbdcopy only sees the connection drop; qemu-nbd says why (e.g. an unreadable cluster).
          server.stop();
          const reason = await server.stderr;
          throw reason ? toolFailure("qemu-nbd", reason, { subject, secrets }, error) : error;
        },
      );
      return hash.digest("hex");
    } finally {
      server.stop();
      await server.finished.catch(() => undefined);
    }
  });
}

/** qemu-nbd writes its pid file once its socket listens; its failure (or abort) ends the wait. */
async function untilServing(server: RunningTool, pidFile: string, subject: string): Promise<void> {
  const exited = server.finished.then(() => {
    throw new CofferError("QEMU_FAILED", `${subject}: qemu-nbd exited before it served the image`);
  });
  exited.catch(() => undefined); // settles after the wait when the server is stopped
  let waiting = true;
  const listening = (async () => {
    while (waiting) {
      if (await fs.access(pidFile).then(() => true, () => false)) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  try {
    await Promise.race([listening, exited]);
  } finally {
    waiting = false;
  }
}

/** The --image-opts of a source disk file, for hashing what the guest sees in it. */
export function sourceImageOpts(file: string, format: "raw" | "qcow2"): string {
  return `driver=${format},file.driver=file,file.filename=${optionValue(file)}`;
}

/** SHA-256 of a file's own bytes: catches bit rot without the key. */
export async function fileSha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Writes the guest data of a backup to `to` as raw or qcow2. */
export async function restoreImage(
  file: string,
  encrypted: boolean,
  key: SecretFd | undefined,
  to: string,
  format: "raw" | "qcow2",
  subject: string,
) {
  const used = encrypted ? key : undefined;
  const image = ["--image-opts", backupImageOpts(file, encrypted)];
  await run("qemu-img", ["convert", ...keyArgs(used), ...image, "-O", format, to], { subject, key: used });
}
