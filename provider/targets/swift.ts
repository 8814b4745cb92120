import { createHash, randomBytes, type Hash } from "node:crypto";
import { createWriteStream, promises as fs } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { syncAndRename } from "../common/atomicFile";
import { CofferError } from "../common/errors";
import { CloudError } from "../openstack/cloudError";
import { cloudDeps, type CloudDeps } from "../openstack/deps";
import { send, type HttpContext, type HttpMethod } from "../openstack/http";
import { StoredFile, StoredObject, TargetStore, folderPrefix, keyNames } from "./store";

/** Where a Swift account is, and a token for it. tempAuth now; a Keystone v3 one later has the same shape. */
export interface SwiftAuth {
  /** The account for messages, e.g. "coffer:backup at http://127.0.0.1:6280"; never a secret. */
  readonly describe: string;
  /** The account's storage URL and a token, reused while valid; `refused` is a token a 401 refused. */
  session(refused?: string): Promise<SwiftSession>;
  /** What errors and logs must never show: the key, the tokens issued. */
  secrets(): readonly string[];
}

export interface SwiftSession {
  readonly storageUrl: string;
  readonly token: string;
}

export interface TempAuthOptions {
  /** e.g. http://127.0.0.1:6280/auth/v1.0 */
  authUrl: string;
  /** "account:user" */
  user: string;
  key: string;
  deps?: CloudDeps;
  timeoutMs?: number;
}

/** Renew a token this long before tempauth's X-Auth-Token-Expires. */
const expiryMarginMs = 60_000;

/** Swift's tempauth (and swauth): GET the auth URL with X-Auth-User/X-Auth-Key, get X-Storage-Url + X-Auth-Token. */
export function tempAuth(options: TempAuthOptions): SwiftAuth {
  const deps = options.deps ?? cloudDeps();
  const issued: string[] = [];
  const secrets = () => [options.key, ...issued];
  const http: HttpContext = { deps, secrets, maxRetries: 3, timeoutMs: options.timeoutMs ?? 30_000 };
  let current: { session: SwiftSession; expiresAtMs: number } | undefined;
  let pending: Promise<SwiftSession> | undefined;

  async function authenticate(): Promise<SwiftSession> {
    const response = await send(http, {
      service: "swift",
      resource: `token for ${options.user}`,
      method: "GET",
      url: options.authUrl,
      headers: { "X-Auth-User": options.user, "X-Auth-Key": options.key },
      authenticates: true,
    });
    await response.body?.cancel();
    const token = response.headers.get("x-auth-token");
    const storageUrl = response.headers.get("x-storage-url");
    if (!token || !storageUrl) {
      throw new CloudError(
        "CLOUD_BAD_RESPONSE",
        `swift token for ${options.user}: HTTP ${response.status} without X-Auth-Token and X-Storage-Url; ` +
          `is ${options.authUrl} a tempauth URL (…/auth/v1.0)?`,
        { service: "swift", resource: `token for ${options.user}`, status: response.status },
        { secrets: [...secrets(), ...(token ? [token] : [])] },
      );
    }
    issued.push(token);
    if (issued.length > 8) issued.shift();
    const expiresInS = Number(response.headers.get("x-auth-token-expires") ?? "3600");
    const session = { storageUrl: storageUrl.replace(/\/+$/, ""), token };
    current = { session, expiresAtMs: deps.now() + (Number.isFinite(expiresInS) ? expiresInS : 3600) * 1000 };
    return session;
  }

  return {
    describe: `${options.user} at ${new URL(options.authUrl).origin}`,
    secrets,
    async session(refused) {
      if (current && current.session.token !== refused && deps.now() < current.expiresAtMs - expiryMarginMs) {
        return current.session;
      }
      pending ??= authenticate().finally(() => (pending = undefined));
      return pending;
    },
  };
}

export interface SwiftStoreOptions {
  auth: SwiftAuth;
  /** The container of the objects; created when missing. */
  container: string;
  /**
   * The container of large objects' segments (default `<container>_segments`, as the swift CLI and rclone
   * name it); created when missing. Listing the objects never shows a segment.
   */
  segmentsContainer?: string;
  /** The folder of keys in the container ("" for all of it, or e.g. "coffer/target-a"). */
  prefix?: string;
  /** Files larger than this are stored as Static Large Objects of segments this big (default 64 MiB). */
  segmentBytes?: number;
  /** Segments uploaded at once (default 4). */
  segmentConcurrency?: number;
  /** Retries after a first attempt of a request that is safe to repeat (5xx, 429, timeouts, lost connections). */
  maxRetries?: number;
  /** How long a request may wait for its response headers (default 120 s). */
  timeoutMs?: number;
  /** How long writeTextExclusive waits for a racing write to land before it checks who won (default 1 s). */
  claimSettleMs?: number;
  /** Objects listed per request (default 1000, Swift's own maximum in most clusters is 10000). */
  listLimit?: number;
  deps?: CloudDeps;
}

const MiB = 1024 * 1024;
const maxSegments = 1000;
/** The id of the writeTextExclusive that stored an object (metadata: a few bytes of the object's xattrs). */
const claimHeader = "X-Object-Meta-Coffer-Claim";
const readChunkBytes = MiB;
const retryStatuses = new Set([429, 500, 502, 503, 504]);
const firstBackoffMs = 500;
const maxBackoffMs = 8_000;

/** A request below the storage URL. `body` is made anew for each attempt, so a body can be retried too. */
interface SwiftCall {
  /** What the request is about, e.g. `object sets/z/s/vm.qcow2`: named in every error. */
  resource: string;
  method: HttpMethod;
  /** Below the storage URL, already encoded: "/container/name?query". */
  path: string;
  headers?: Record<string, string>;
  body?: () => Uint8Array | ReadableStream<Uint8Array>;
  /** Whether sending it twice is harmless (default true); false: it is never repeated. */
  idempotent?: boolean;
  /** The answer's body is read (always for a GET); other bodies are dropped, freeing the connection. */
  keepBody?: boolean;
  signal?: AbortSignal;
}

/**
 * A TargetStore in an OpenStack Swift container: a key is the object `<prefix>/<key>`. A PUT replaces an
 * object whole, so every write is atomic. Files above `segmentBytes` become Static Large Objects whose
 * manifest is written last; a failed or aborted put removes the segments it wrote.
 */
export class SwiftStore implements TargetStore {
  readonly kind = "swift";
  readonly location: string;
  readonly container: string;
  readonly segmentsContainer: string;
  /** The folder of its keys in the container: "" or names ending in '/'. */
  readonly folder: string;
  private readonly auth: SwiftAuth;
  private readonly deps: CloudDeps;
  private readonly segmentBytes: number;
  private readonly segmentConcurrency: number;
  private readonly maxRetries: number;
  private readonly timeoutMs: number;
  private readonly listLimit: number;
  private readonly claimSettleMs: number;
  private containersMade?: Promise<void>;

  constructor(options: SwiftStoreOptions) {
    this.auth = options.auth;
    this.container = containerName(options.container);
    this.segmentsContainer = containerName(options.segmentsContainer ?? `${options.container}_segments`);
    this.folder = folderPrefix(options.prefix ?? "");
    this.deps = options.deps ?? cloudDeps();
    this.segmentBytes = options.segmentBytes ?? 64 * MiB;
    this.segmentConcurrency = options.segmentConcurrency ?? 4;
    this.maxRetries = options.maxRetries ?? 4;
    this.timeoutMs = options.timeoutMs ?? 120_000;
    this.listLimit = options.listLimit ?? 1000;
    this.claimSettleMs = options.claimSettleMs ?? 1000;
    if (!(this.segmentBytes >= 1 && this.segmentConcurrency >= 1 && this.listLimit >= 1)) {
      throw new Error("segmentBytes, segmentConcurrency and listLimit of a Swift store are 1 or more");
    }
    this.location = `swift:${this.container}/${this.folder} (${this.auth.describe})`;
  }

  locate(key: string): string {
    return `swift:${this.container}/${this.objectName(key)}`;
  }

  async assertReachable(): Promise<void> {
    await this.ensureContainers();
  }

  async readText(key: string): Promise<string | undefined> {
    const response = await this.objectIfThere({ resource: `object ${key}`, method: "GET", path: this.objectPath(key) });
    return response === undefined ? undefined : readBody(response, key);
  }

  async writeTextAtomic(key: string, text: string): Promise<void> {
    const bytes = Buffer.from(text, "utf8");
    await this.inContainer(() =>
      this.call({
        resource: `object ${key}`,
        method: "PUT",
        path: this.objectPath(key),
        headers: textHeaders(bytes),
        body: () => bytes,
      }),
    );
  }

  /**
   * Swift checks If-None-Match: * on each object server before the body arrives, so two PUTs in flight at
   * once can both succeed, the newer one stored (the conformance race shows it). So each claim carries an id,
   * and after a success we wait `claimSettleMs` for a racing PUT to land, then ask every replica (X-Newest)
   * whose claim is stored: only its writer has won. A racing PUT still under way after the wait (a client
   * stalled in mid-body) could yet replace the claim: the wait bounds the risk, it can't end it.
   */
  async writeTextExclusive(key: string, text: string): Promise<boolean> {
    const bytes = Buffer.from(text, "utf8");
    const claim = randomBytes(12).toString("hex");
    try {
      // Not repeated: after a lost response a second try would find our own object and say false.
      await this.inContainer(() =>
        this.call({
          resource: `object ${key}`,
          method: "PUT",
          path: this.objectPath(key),
          headers: { ...textHeaders(bytes), "If-None-Match": "*", [claimHeader]: claim },
          body: () => bytes,
          idempotent: false,
        }),
      );
    } catch (error) {
      if (error instanceof CloudError && error.status === 412) return false;
      throw error;
    }
    await this.deps.sleep(this.claimSettleMs);
    const stored = await this.objectIfThere({
      resource: `object ${key}`,
      method: "HEAD",
      path: this.objectPath(key),
      headers: { "X-Newest": "true" },
    });
    return stored?.headers.get(claimHeader) === claim;
  }

  async put(key: string, file: string, opts: { signal?: AbortSignal } = {}): Promise<StoredFile> {
    const name = this.objectName(key);
    opts.signal?.throwIfAborted();
    // One handle for every read of the put (positional reads), closed when all of them are done.
    const source: LocalFile = { path: file, handle: await fs.open(file, "r") };
    let stored: StoredFile;
    let replaced: string[];
    try {
      const sizeBytes = (await source.handle.stat()).size;
      replaced = await this.segmentsOf(key);
      // Swift takes at most 1000 segments a manifest (max_manifest_segments): a larger file gets larger segments.
      const segmentBytes = Math.max(this.segmentBytes, Math.ceil(sizeBytes / maxSegments));
      stored =
        sizeBytes <= segmentBytes
          ? await this.putWhole(key, source, sizeBytes, opts.signal)
          : await this.putLarge(key, name, source, { sizeBytes, segmentBytes }, opts.signal);
    } finally {
      await source.handle.close();
    }
    // The object it replaced was a large one: its segments are now nobody's.
    if (replaced.length > 0) await this.removeSegments(replaced);
    return stored;
  }

  async get(key: string, file: string): Promise<void> {
    const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
    for (let attempt = 1; ; attempt++) {
      const response = await this.call({ resource: `object ${key}`, method: "GET", path: this.objectPath(key) });
      // A plain object's ETag is its MD5; a large object's is the MD5 of its segments' ETags.
      const etag = response.headers.get("x-static-large-object") ? undefined : unquote(response.headers.get("etag"));
      const md5 = createHash("md5");
      try {
        await pipeline(
          response.body ? Readable.fromWeb(response.body as WebReadableStream<Uint8Array>) : Readable.from([]),
          hashing([md5]),
          createWriteStream(temp, { mode: 0o600 }),
        );
        const got = md5.digest("hex");
        if (etag !== undefined && got !== etag) {
          throw new CofferError("IO_FAILED", `swift object ${key}: read ${got}, but its ETag is ${etag}`);
        }
        await syncAndRename(temp, file);
        return;
      } catch (error) {
        await fs.rm(temp, { force: true });
        if (attempt > this.maxRetries || error instanceof CofferError) throw this.named(error, key, "GET");
        await this.deps.sleep(backoffMs(attempt));
      }
    }
  }

  async stat(key: string): Promise<{ sizeBytes: number } | undefined> {
    const response = await this.objectIfThere({
      resource: `object ${key}`,
      method: "HEAD",
      path: this.objectPath(key),
    });
    return response === undefined ? undefined : { sizeBytes: Number(response.headers.get("content-length")) };
  }

  async *list(prefix: string): AsyncGenerator<StoredObject> {
    const folder = this.folder + folderPrefix(prefix);
    let marker = "";
    for (;;) {
      const query =
        `format=json&limit=${this.listLimit}&prefix=${encodeURIComponent(folder)}` +
        (marker ? `&marker=${encodeURIComponent(marker)}` : "");
      const response = await this.objectIfThere({
        resource: `listing of ${folder || "the container"}`,
        method: "GET",
        path: `/${encodeURIComponent(this.container)}?${query}`,
      });
      if (response === undefined) return; // no container yet: nothing in it
      const page = JSON.parse(await readBody(response, folder)) as { name: string; bytes: number }[];
      for (const entry of page) yield { key: entry.name.slice(this.folder.length), sizeBytes: entry.bytes };
      if (page.length < this.listLimit) return;
      marker = page[page.length - 1].name;
    }
  }

  async remove(key: string): Promise<void> {
    if (!(await this.isLargeObject(key))) {
      await this.objectIfThere({ resource: `object ${key}`, method: "DELETE", path: this.objectPath(key) });
      return;
    }
    // Deletes the manifest and its segments; the answer is 200 with a list of what failed.
    const response = await this.call({
      resource: `object ${key}`,
      method: "DELETE",
      path: `${this.objectPath(key)}?multipart-manifest=delete`,
      headers: { Accept: "application/json" },
      keepBody: true,
    });
    checkBulkDelete(await readBody(response, key), `object ${key}`);
  }

  // --- puts -------------------------------------------------------------------------------------

  /** One PUT of the whole file, hashed as it is sent; the ETag Swift answers must be the MD5 of what we sent. */
  private async putWhole(key: string, file: LocalFile, sizeBytes: number, signal?: AbortSignal): Promise<StoredFile> {
    let hashes: { sha256: Hash; md5: Hash } | undefined;
    const response = await this.inContainer(() =>
      this.call({
        resource: `object ${key}`,
        method: "PUT",
        path: this.objectPath(key),
        headers: { "Content-Length": String(sizeBytes), "Content-Type": "application/octet-stream" },
        body: () => {
          const made = { sha256: createHash("sha256"), md5: createHash("md5") };
          hashes = made;
          return fileRange(file, 0, sizeBytes, (chunk) => {
            made.sha256.update(chunk);
            made.md5.update(chunk);
          });
        },
        signal,
      }),
    );
    const md5 = hashes!.md5.digest("hex");
    const etag = unquote(response.headers.get("etag"));
    if (etag !== md5) {
      throw new CofferError("IO_FAILED", `swift object ${key}: sent bytes with MD5 ${md5}, Swift stored ${etag}`);
    }
    return { sizeBytes, sha256: hashes!.sha256.digest("hex") };
  }

  /**
   * A Static Large Object: segments uploaded `segmentConcurrency` at a time, while one sequential read of the
   * file hashes it (SHA-256 of the whole, MD5 of each segment). Each segment's ETag must be the MD5 of the bytes
   * that were hashed: so the SHA-256 is that of the bytes stored, even if the file changed meanwhile (then the
   * put fails). The manifest, written last, names each segment's ETag and size, which Swift checks again.
   */
  private async putLarge(
    key: string,
    name: string,
    file: LocalFile,
    { sizeBytes, segmentBytes }: { sizeBytes: number; segmentBytes: number },
    signal?: AbortSignal,
  ): Promise<StoredFile> {
    const count = Math.ceil(sizeBytes / segmentBytes);
    const upload = `${name}/${Date.now().toString(36)}-${randomBytes(6).toString("hex")}`;
    const segmentName = (i: number) => `${upload}/${String(i).padStart(8, "0")}`;
    const range = (i: number) => {
      const start = i * segmentBytes;
      return { start, length: Math.min(segmentBytes, sizeBytes - start) };
    };
    const stopped = new AbortController();
    const onAbort = () => stopped.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    const started: number[] = [];
    const etags: string[] = [];
    let manifestSent = false;
    try {
      const hashing = hashFile(file, sizeBytes, segmentBytes, stopped.signal).catch((error) => {
        stopped.abort(error);
        throw error;
      });
      const uploading = inParallel(count, this.segmentConcurrency, stopped, async (i) => {
        const { start, length } = range(i);
        started.push(i);
        const response = await this.inContainer(() =>
          this.call({
            resource: `segment ${i + 1} of ${count} of object ${key}`,
            method: "PUT",
            path: `/${encodeURIComponent(this.segmentsContainer)}/${encodePath(segmentName(i))}`,
            headers: { "Content-Length": String(length), "Content-Type": "application/octet-stream" },
            body: () => fileRange(file, start, length),
            signal: stopped.signal,
          }),
        );
        etags[i] = unquote(response.headers.get("etag")) ?? "";
      });
      // Both settle before anything is swept: no segment upload is still under way then.
      const [hashed, uploaded] = await Promise.allSettled([hashing, uploading]);
      if (uploaded.status === "rejected") throw uploaded.reason;
      if (hashed.status === "rejected") throw hashed.reason;
      const hashes = hashed.value;
      for (let i = 0; i < count; i++) {
        if (etags[i] !== hashes.segmentMd5[i]) {
          throw new CofferError(
            "IO_FAILED",
            `swift object ${key}: segment ${i + 1} was stored with ETag ${etags[i]}, but its bytes hashed to ` +
              `${hashes.segmentMd5[i]}: ${file.path} changed while it was being stored`,
          );
        }
      }
      const manifest = Array.from({ length: count }, (_, i) => ({
        path: `/${this.segmentsContainer}/${segmentName(i)}`,
        etag: etags[i],
        size_bytes: range(i).length,
      }));
      const body = Buffer.from(JSON.stringify(manifest), "utf8");
      manifestSent = true;
      await this.call({
        resource: `object ${key} (its large-object manifest)`,
        method: "PUT",
        path: `${this.objectPath(key)}?multipart-manifest=put`,
        headers: { "Content-Type": "application/octet-stream", "Content-Length": String(body.length) },
        body: () => body,
        signal: stopped.signal,
      });
      return { sizeBytes, sha256: hashes.sha256 };
    } catch (error) {
      stopped.abort(error);
      // The manifest may have been stored though its answer was lost: then the put happened.
      if (manifestSent) {
        const stored = await this.segmentsOf(key).catch(() => []);
        if (stored[0] === `/${this.segmentsContainer}/${segmentName(0)}`) {
          return { sizeBytes, sha256: (await hashFile(file, sizeBytes, segmentBytes)).sha256 };
        }
      }
      const written = started.map((i) => `/${this.segmentsContainer}/${segmentName(i)}`);
      await this.removeSegments(written).catch((sweep) =>
        this.deps.log(`swift object ${key}: the failed put left segments under ${upload}: ${sweep.message}`),
      );
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Whether the object at `key` is a large object's manifest (false when there is none). */
  private async isLargeObject(key: string): Promise<boolean> {
    const head = await this.objectIfThere({ resource: `object ${key}`, method: "HEAD", path: this.objectPath(key) });
    return head?.headers.get("x-static-large-object")?.toLowerCase() === "true";
  }

  /** The segments ("/<container>/<name>") of the large object at `key`; none for a plain object or no object. */
  private async segmentsOf(key: string): Promise<string[]> {
    if (!(await this.isLargeObject(key))) return [];
    const response = await this.objectIfThere({
      resource: `object ${key} (its large-object manifest)`,
      method: "GET",
      path: `${this.objectPath(key)}?multipart-manifest=get`,
    });
    if (response === undefined) return [];
    return (JSON.parse(await readBody(response, key)) as { name: string }[]).map((segment) => segment.name);
  }

  /** Deletes segments ("/<container>/<name>"), only ever from the segments container; missing ones are fine. */
  private async removeSegments(segments: string[]): Promise<void> {
    const ours = `/${this.segmentsContainer}/`;
    const names = segments.filter((s) => s.startsWith(ours)).map((s) => s.slice(ours.length));
    await inParallel(names.length, this.segmentConcurrency, new AbortController(), async (i) => {
      await this.objectIfThere({
        resource: `segment ${names[i]}`,
        method: "DELETE",
        path: `/${encodeURIComponent(this.segmentsContainer)}/${encodePath(names[i])}`,
      });
    });
  }

  // --- requests ---------------------------------------------------------------------------------

  private objectName(key: string): string {
    return this.folder + keyNames(key).join("/");
  }

  private objectPath(key: string): string {
    return `/${encodeURIComponent(this.container)}/${encodePath(this.objectName(key))}`;
  }

  /** The response, or undefined on 404. */
  private async objectIfThere(call: SwiftCall): Promise<Response | undefined> {
    try {
      return await this.call(call);
    } catch (error) {
      if (error instanceof CloudError && error.status === 404) return undefined;
      throw error;
    }
  }

  /** `write`, and once more after making the containers when it found none (404). */
  private async inContainer<T>(write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (!(error instanceof CloudError) || error.status !== 404) throw error;
      this.containersMade = undefined;
      await this.ensureContainers();
      return write();
    }
  }

  /** Makes both containers (a PUT of one that exists is a no-op, 202). */
  private ensureContainers(): Promise<void> {
    this.containersMade ??= (async () => {
      for (const container of [this.container, this.segmentsContainer]) {
        await this.call({
          resource: `container ${container}`,
          method: "PUT",
          path: `/${encodeURIComponent(container)}`,
        });
      }
    })().catch((error) => {
      this.containersMade = undefined;
      throw error;
    });
    return this.containersMade;
  }

  /**
   * Sends `call` with a token (authenticating again once on a 401), retrying what is safe to repeat with
   * backoff. Errors name the resource and the HTTP status, and never a token or the key.
   */
  private async call(call: SwiftCall): Promise<Response> {
    const http: HttpContext = {
      deps: this.deps,
      secrets: () => this.auth.secrets(),
      maxRetries: 0, // retried here, where a body can be made again
      timeoutMs: this.timeoutMs,
    };
    let refused: string | undefined;
    let reauthenticated = false;
    for (let attempt = 1; ; attempt++) {
      const session = await this.auth.session(refused);
      try {
        const response = await send(http, {
          service: "swift",
          resource: call.resource,
          method: call.method,
          url: session.storageUrl + call.path,
          headers: { ...call.headers, "X-Auth-Token": session.token },
          body: call.body?.(),
          idempotent: call.idempotent ?? true,
          signal: call.signal,
        });
        if (call.method !== "GET" && !call.keepBody) await response.body?.cancel();
        return response;
      } catch (error) {
        if (error instanceof CloudError && error.status === 401 && !reauthenticated) {
          reauthenticated = true;
          refused = session.token;
          this.deps.log(`swift ${call.resource}: HTTP 401 with a token; authenticating again`);
          continue;
        }
        if (!(call.idempotent ?? true) || attempt > this.maxRetries || !retriable(error)) throw error;
        const waitMs = backoffMs(attempt);
        this.deps.log(
          `swift ${call.resource}: ${(error as Error).message.split(". ")[0]}; retry ${attempt} in ${waitMs} ms`,
        );
        try {
          await this.deps.sleep(waitMs, call.signal);
        } catch (abort) {
          throw new CofferError("ABORTED", `swift ${call.resource}: cancelled`, { cause: abort });
        }
      }
    }
  }

  /** `error` as a CofferError that names the key (a failed body read of a GET, a local write). */
  private named(error: unknown, key: string, method: string): Error {
    if (error instanceof CofferError) return error;
    return new CofferError("IO_FAILED", `swift object ${key}: ${method} failed: ${(error as Error).message}`, {
      cause: error,
      secrets: this.auth.secrets(),
    });
  }
}

/** Connection errors, timeouts, 5xx and 429: worth another try if the request is safe to repeat. */
function retriable(error: unknown): boolean {
  if (!(error instanceof CloudError)) return false;
  if (error.status !== undefined) return retryStatuses.has(error.status);
  return error.code === "CLOUD_UNAVAILABLE" || error.code === "CLOUD_TIMEOUT";
}

function backoffMs(attempt: number): number {
  return Math.min(maxBackoffMs, firstBackoffMs * 2 ** (attempt - 1));
}

function containerName(name: string): string {
  if (name === "" || name.includes("/") || name.length > 256) {
    throw new Error(`"${name}" can't name a Swift container: 1-256 characters, no '/'`);
  }
  return name;
}

/** Each '/'-separated name percent-encoded. */
function encodePath(name: string): string {
  return name.split("/").map(encodeURIComponent).join("/");
}

function unquote(etag: string | null): string | undefined {
  return etag === null ? undefined : etag.replace(/^"|"$/g, "");
}

/** A text object's headers; Swift refuses (422) a body whose MD5 is not the ETag we send. */
function textHeaders(bytes: Buffer): Record<string, string> {
  return {
    "Content-Type": "application/octet-stream",
    "Content-Length": String(bytes.length),
    ETag: createHash("md5").update(bytes).digest("hex"),
  };
}

async function readBody(response: Response, what: string): Promise<string> {
  try {
    return await response.text();
  } catch (error) {
    throw new CofferError("IO_FAILED", `swift ${what}: the response broke off (${(error as Error).message})`);
  }
}

/** A bulk delete answers 200 and lists its failures in the body. */
function checkBulkDelete(text: string, resource: string): void {
  const result = JSON.parse(text) as { "Response Status"?: string; Errors?: [string, string][] };
  const status = result["Response Status"] ?? "";
  if (/^(2\d\d|404)/.test(status) && (result.Errors ?? []).length === 0) return;
  const errors = (result.Errors ?? []).map(([name, why]) => `${name}: ${why}`).join("; ");
  throw new CloudError(
    "CLOUD_UNAVAILABLE",
    `swift ${resource}: the delete of its segments failed: ${status} ${errors}`,
    {
      service: "swift",
      resource,
      status: Number(status.slice(0, 3)) || undefined,
    },
  );
}

/** A local file being stored, open for positional reads. */
interface LocalFile {
  path: string;
  handle: FileHandle;
}

/** `length` bytes of `file` from `start`, read as the request sends them; `onChunk` sees each chunk in order. */
function fileRange(
  file: LocalFile,
  start: number,
  length: number,
  onChunk?: (chunk: Buffer) => void,
): ReadableStream<Uint8Array> {
  let offset = start;
  const end = start + length;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const size = Math.min(readChunkBytes, end - offset);
        if (size === 0) return controller.close();
        const buffer = Buffer.allocUnsafe(size);
        const { bytesRead } = await file.handle.read(buffer, 0, size, offset);
        if (bytesRead === 0) throw new Error(`${file.path} ended at byte ${offset}: it shrank while being stored`);
        offset += bytesRead;
        const chunk = buffer.subarray(0, bytesRead);
        onChunk?.(chunk);
        controller.enqueue(chunk);
      },
    },
    { highWaterMark: 0 },
  );
}

/** One sequential read of `sizeBytes` of `file`: the SHA-256 of it all and the MD5 of each segment. */
async function hashFile(
  file: LocalFile,
  sizeBytes: number,
  segmentBytes: number,
  signal?: AbortSignal,
): Promise<{ sha256: string; segmentMd5: string[] }> {
  const sha256 = createHash("sha256");
  const segmentMd5: string[] = [];
  const buffer = Buffer.allocUnsafe(readChunkBytes);
  for (let start = 0; start < sizeBytes; start += segmentBytes) {
    const md5 = createHash("md5");
    const end = Math.min(sizeBytes, start + segmentBytes);
    for (let offset = start; offset < end;) {
      signal?.throwIfAborted();
      const { bytesRead } = await file.handle.read(buffer, 0, Math.min(buffer.length, end - offset), offset);
      if (bytesRead === 0) throw new Error(`${file.path} ended at byte ${offset}: it shrank while being stored`);
      const chunk = buffer.subarray(0, bytesRead);
      sha256.update(chunk);
      md5.update(chunk);
      offset += bytesRead;
    }
    segmentMd5.push(md5.digest("hex"));
  }
  return { sha256: sha256.digest("hex"), segmentMd5 };
}

/** A stream that passes bytes through and feeds them to `hashes`. */
function hashing(hashes: Hash[]): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      for (const hash of hashes) hash.update(chunk);
      done(null, chunk);
    },
  });
}

/**
 * Runs work(0..count-1), at most `limit` at a time. The first failure aborts `stop` (so work under way can
 * end early), waits for the rest to settle, and is thrown.
 */
async function inParallel(
  count: number,
  limit: number,
  stop: AbortController,
  work: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (next < count && !failure && !stop.signal.aborted) {
      const index = next++;
      try {
        await work(index);
      } catch (error) {
        failure ??= { error };
        stop.abort(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  if (failure) throw failure.error;
  stop.signal.throwIfAborted();
}
