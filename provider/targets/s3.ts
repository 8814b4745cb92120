import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { createHash, randomBytes, type Hash } from "node:crypto";
import { createWriteStream, promises as fs } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { syncAndRename } from "../common/atomicFile";
import { CofferError, isCofferError } from "../common/errors";
import { CloudError } from "../openstack/cloudError";
import { cloudDeps, type CloudDeps } from "../openstack/deps";
import { StoredFile, StoredObject, TargetStore, folderPrefix, keyNames } from "./store";

export interface S3Credentials {
  /** Not a secret, and named in messages: with Swift's tempauth it is "account:user". */
  accessKeyId: string;
  /** Never in an error, a log line or a message. With Swift's tempauth: the user's key. */
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3StoreOptions {
  /** e.g. http://127.0.0.1:6280 (Swift's s3api on its proxy); none for AWS S3 itself. */
  endpoint?: string;
  /** The signing region (default us-east-1, which Swift's s3api and most S3 services take). */
  region?: string;
  /** The bucket of the objects. It must exist: Coffer never creates one (its owner sets its policies). */
  bucket: string;
  /** The folder of keys in the bucket ("" for all of it, or e.g. "coffer/target-a"). */
  prefix?: string;
  credentials: S3Credentials;
  /** Bucket in the path (http://host/bucket/key), as Swift's s3api and MinIO need; default true with an endpoint. */
  forcePathStyle?: boolean;
  /** Files larger than this are multipart uploads of parts at least this big (default 16 MiB, S3's minimum 5). */
  partBytes?: number;
  /** Parts uploaded at once (default 4). */
  partConcurrency?: number;
  /** Retries after a first attempt of a request that is safe to repeat (5xx, 429, SlowDown, lost connections). */
  maxRetries?: number;
  /** How long a request may stay silent, in ms (default 120 s). */
  timeoutMs?: number;
  /** How long writeTextExclusive's claim (see there) waits for a racing write to land (default 1 s). */
  claimSettleMs?: number;
  /** Objects listed per request (default 1000, S3's maximum). */
  listLimit?: number;
  /** The clock and the log; other fields of CloudDeps are not used (the SDK has its own HTTP client). */
  deps?: Partial<Pick<CloudDeps, "sleep" | "log">>;
}

const MiB = 1024 * 1024;
const minPartBytes = 5 * MiB;
/** S3 takes 10000 parts, but Swift's s3api 1000 (max_upload_part_num): a larger file gets larger parts. */
const maxParts = 1000;
const readChunkBytes = MiB;
const firstBackoffMs = 500;
const maxBackoffMs = 8_000;
/** Metadata naming the writeTextExclusive that stored an object, where the claim protocol is used. */
const claimMetadata = "coffer-claim";
const retryStatuses = new Set([429, 500, 502, 503, 504]);
const retryNames = new Set(["SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "TimeoutError"]);
const networkCodes = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "ENOTFOUND"]);

/** What an S3 SDK error carries (S3ServiceException, or a Node error from the HTTP client). */
interface SdkError extends Error {
  code?: string;
  $metadata?: { httpStatusCode?: number; requestId?: string };
}

/** A request of the store, sent anew for each attempt, so a file body can be sent again. */
interface S3Call<T> {
  /** What the request is about, e.g. `object sets/z/s/vm.qcow2`: named in every error. */
  resource: string;
  /** The key, when the request is about one: errors name its s3:// address. */
  key?: string;
  /** Sends the request (anew for each attempt); `body` is its file stream, destroyed when the request ends. */
  send: (abortSignal?: AbortSignal) => { sent: Promise<T>; body?: Readable };
  /** Whether sending it twice is harmless (default true); false: it is never repeated. */
  idempotent?: boolean;
  signal?: AbortSignal;
}

/**
 * A TargetStore in an S3 bucket (AWS S3, or an S3 API such as Swift's s3api, MinIO, Ceph RGW), through
 * @aws-sdk/client-s3: a key is the object `<prefix>/<key>`. A PUT replaces an object whole, and a multipart
 * upload appears only when it is completed, so every write is atomic; a failed or aborted put aborts its
 * upload, leaving no parts. Coffer never sends an Object Lock call: Swift's s3api ignores some and answers
 * others by overwriting the object (/work/shared/research/swift-loopback.md §7).
 */
export class S3Store implements TargetStore {
  readonly kind = "s3";
  readonly location: string;
  readonly bucket: string;
  /** The folder of its keys in the bucket: "" or names ending in '/'. */
  readonly folder: string;
  /** The SDK's client (tests add middleware to watch its requests); its credentials are the store's. */
  readonly client: S3Client;
  /** The endpoint's origin, or "AWS S3 (<region>)": for messages. */
  private readonly endpoint: string;
  /** " --endpoint-url <endpoint>" for the aws CLI commands a message suggests, or "". */
  private readonly endpointFlag: string;
  /** What errors must never show (an ES private field: not even util.inspect shows it). */
  readonly #secrets: readonly string[];
  private readonly partBytes: number;
  private readonly partConcurrency: number;
  private readonly maxRetries: number;
  private readonly listLimit: number;
  private readonly claimSettleMs: number;
  private readonly deps: Pick<CloudDeps, "sleep" | "log">;
  /** Whether the service takes If-None-Match: * on a PUT; undefined until the first exclusive write says. */
  private conditionalPuts?: boolean;
  private bucketSeen?: Promise<void>;

  constructor(options: S3StoreOptions) {
    this.bucket = bucketName(options.bucket);
    this.folder = folderPrefix(options.prefix ?? "");
    this.partBytes = options.partBytes ?? 16 * MiB;
    this.partConcurrency = options.partConcurrency ?? 4;
    this.maxRetries = options.maxRetries ?? 4;
    this.listLimit = options.listLimit ?? 1000;
    this.claimSettleMs = options.claimSettleMs ?? 1000;
    this.deps = { ...cloudDeps(), ...options.deps };
    if (!(this.partBytes >= minPartBytes && this.partConcurrency >= 1 && this.listLimit >= 1)) {
      throw new Error("an S3 store's partBytes is 5 MiB or more, its partConcurrency and listLimit 1 or more");
    }
    const { accessKeyId, secretAccessKey, sessionToken } = options.credentials;
    if (!accessKeyId || !secretAccessKey) throw new Error("an S3 store needs an access key id and its secret");
    this.#secrets = [secretAccessKey, ...(sessionToken ? [sessionToken] : [])];
    const region = options.region ?? "us-east-1";
    this.endpoint = options.endpoint ? new URL(options.endpoint).origin : `AWS S3 (${region})`;
    this.endpointFlag = options.endpoint ? ` --endpoint-url ${this.endpoint}` : "";
    this.client = new S3Client({
      endpoint: options.endpoint,
      region,
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      credentials: { accessKeyId, secretAccessKey, sessionToken },
      // Swift's s3api (2.30) answers aws-chunked bodies and x-amz-checksum-* with NotImplemented; Content-MD5
      // is checked everywhere.
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      requestHandler: { connectionTimeout: 30_000, requestTimeout: options.timeoutMs ?? 120_000 },
    });
    // No SDK retries: `call` retries, making a file body anew. (The SDK's retry step also wraps an error from
    // another realm, such as a network error in Jest's VM, in one without its code.)
    this.client.middlewareStack.add((next) => next, {
      name: "retryMiddleware",
      step: "finalizeRequest",
      priority: "high",
      override: true,
    });
    this.location = `s3://${this.bucket}/${this.folder} (${accessKeyId} at ${this.endpoint})`;
  }

  locate(key: string): string {
    return `s3://${this.bucket}/${this.objectName(key)}`;
  }

  async assertReachable(): Promise<void> {
    this.bucketSeen = undefined;
    await this.ensureBucket();
  }

  async readText(key: string): Promise<string | undefined> {
    const name = this.objectName(key);
    const object = await this.ifThere(
      this.call({
        resource: `object ${key}`,
        key,
        send: (abortSignal) => ({
          sent: this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: name }), { abortSignal }),
        }),
      }),
    );
    if (object === undefined) return undefined;
    try {
      return await object.Body!.transformToString("utf8");
    } catch (error) {
      throw this.failure(error, { resource: `object ${key}`, key });
    }
  }

  async writeTextAtomic(key: string, text: string): Promise<void> {
    await this.putText(key, text);
  }

  /**
   * With If-None-Match: * (AWS S3 since 2024, MinIO, Ceph RGW) the service itself stores only the first writer's
   * object. Swift's s3api answers a conditional PUT NotImplemented; there the store claims as SwiftStore does
   * on Swift: no object is there (HEAD), our PUT carries a claim id, and after `claimSettleMs` every replica is
   * asked (X-Newest) whose claim is stored: only its writer has won. A racing PUT still under way after the
   * wait (a writer stalled between its HEAD and its PUT, or in mid-body) could yet replace the claim: the wait
   * bounds that risk, it can't end it.
   */
  async writeTextExclusive(key: string, text: string): Promise<boolean> {
    const name = this.objectName(key);
    for (let attempt = 1; this.conditionalPuts !== false; attempt++) {
      try {
        // Not repeated after a lost response: a second try would find our own object and say false.
        await this.putText(key, text, { IfNoneMatch: "*" }, false);
        this.conditionalPuts = true;
        return true;
      } catch (error) {
        const status = error instanceof CloudError ? error.status : undefined;
        if (status === 412) return false;
        // AWS: 409 ConditionalRequestConflict, another conditional write in flight; nothing of ours was stored.
        if (status === 409 && attempt <= this.maxRetries) {
          await this.deps.sleep(backoffMs(attempt));
          continue;
        }
        // (Racing first writes all learn it; a service that took them before and now refuses is an error.)
        if (!(status === 501 && this.conditionalPuts !== true)) throw error;
        if (this.conditionalPuts === undefined) {
          this.deps.log(`s3 ${this.endpoint} does not take conditional PUTs (If-None-Match): exclusive writes claim`);
        }
        this.conditionalPuts = false;
      }
    }
    if (await this.headNewest(key, name)) return false;
    const claim = randomBytes(12).toString("hex");
    await this.putText(key, text, { Metadata: { [claimMetadata]: claim } });
    await this.deps.sleep(this.claimSettleMs);
    return (await this.headNewest(key, name))?.Metadata?.[claimMetadata] === claim;
  }

  async put(key: string, file: string, opts: { signal?: AbortSignal } = {}): Promise<StoredFile> {
    const name = this.objectName(key);
    opts.signal?.throwIfAborted();
    // One handle for every read of the put (positional reads), closed when all of them are done.
    const source: LocalFile = { path: file, handle: await fs.open(file, "r") };
    try {
      const sizeBytes = (await source.handle.stat()).size;
      const partBytes = Math.max(this.partBytes, Math.ceil(sizeBytes / maxParts));
      return sizeBytes <= partBytes
        ? await this.putWhole(key, name, source, sizeBytes, opts.signal)
        : await this.putMultipart(key, name, source, { sizeBytes, partBytes }, opts.signal);
    } catch (error) {
      throw this.failure(error, { resource: `object ${key}`, key, signal: opts.signal });
    } finally {
      await source.handle.close();
    }
  }

  async get(key: string, file: string): Promise<void> {
    const name = this.objectName(key);
    const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString("hex")}.tmp`);
    for (let attempt = 1; ; attempt++) {
      const object = await this.call({
        resource: `object ${key}`,
        key,
        send: (abortSignal) => ({
          sent: this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: name }), { abortSignal }),
        }),
      });
      // A plain upload's ETag is its MD5, unless the service encrypts with KMS; a multipart one's is not.
      const etag = unquote(object.ETag);
      const checkMd5 = /^[0-9a-f]{32}$/.test(etag ?? "") && !String(object.ServerSideEncryption).includes("kms");
      const md5 = createHash("md5");
      try {
        await pipeline(object.Body as Readable, hashing([md5]), createWriteStream(temp, { mode: 0o600 }));
        const got = md5.digest("hex");
        if (checkMd5 && got !== etag) {
          throw new CofferError(
            "IO_FAILED",
            `s3 object ${key} (${this.locate(key)}): read ${got}, but its ETag is ${etag}`,
          );
        }
        await syncAndRename(temp, file);
        return;
      } catch (error) {
        await fs.rm(temp, { force: true });
        if (attempt > this.maxRetries || isCofferError(error)) {
          throw this.failure(error, { resource: `object ${key}`, key });
        }
        await this.deps.sleep(backoffMs(attempt));
      }
    }
  }

  async stat(key: string): Promise<{ sizeBytes: number } | undefined> {
    const head = await this.head(key, this.objectName(key));
    return head === undefined ? undefined : { sizeBytes: head.ContentLength ?? 0 };
  }

  async *list(prefix: string): AsyncGenerator<StoredObject> {
    const folder = this.folder + folderPrefix(prefix);
    let token: string | undefined;
    do {
      const continuation = token;
      const page = await this.call({
        resource: `listing of ${folder || "the bucket"}`,
        send: (abortSignal) => ({
          sent: this.client.send(
            new ListObjectsV2Command({
              Bucket: this.bucket,
              Prefix: folder || undefined,
              MaxKeys: this.listLimit,
              ContinuationToken: continuation,
            }),
            { abortSignal },
          ),
        }),
      });
      for (const entry of page.Contents ?? []) {
        const key = entry.Key?.slice(this.folder.length) ?? "";
        // An S3 console's "folder/" marker is no key of a store.
        if (isKey(key)) yield { key, sizeBytes: entry.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async remove(key: string): Promise<void> {
    const name = this.objectName(key);
    await this.ifThere(
      this.call({
        resource: `object ${key}`,
        key,
        send: (abortSignal) => ({
          sent: this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: name }), { abortSignal }),
        }),
      }),
    );
  }

  // --- puts -------------------------------------------------------------------------------------

  private async putText(
    key: string,
    text: string,
    extra: { IfNoneMatch?: string; Metadata?: Record<string, string> } = {},
    idempotent = true,
  ): Promise<void> {
    const name = this.objectName(key);
    const bytes = Buffer.from(text, "utf8");
    const md5 = createHash("md5").update(bytes).digest("base64");
    await this.call({
      resource: `object ${key}`,
      key,
      idempotent,
      send: (abortSignal) => ({
        sent: this.client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: name,
            Body: bytes,
            ContentLength: bytes.length,
            ContentMD5: md5,
            ContentType: "application/octet-stream",
            ...extra,
          }),
          { abortSignal },
        ),
      }),
    });
  }

  /** One PUT of the whole file, after a read that hashes it: the service checks the bytes against Content-MD5. */
  private async putWhole(
    key: string,
    name: string,
    file: LocalFile,
    sizeBytes: number,
    signal?: AbortSignal,
  ): Promise<StoredFile> {
    const sha256 = createHash("sha256");
    const md5 = await hashRange(file, 0, sizeBytes, sha256, signal);
    await this.call({
      resource: `object ${key}`,
      key,
      signal,
      send: (abortSignal) => {
        const body = fileRange(file, 0, sizeBytes);
        const command = new PutObjectCommand({
          Bucket: this.bucket,
          Key: name,
          Body: body,
          ContentLength: sizeBytes,
          ContentMD5: md5.toString("base64"),
          ContentType: "application/octet-stream",
        });
        return { body, sent: this.client.send(command, { abortSignal }) };
      },
    });
    return { sizeBytes, sha256: sha256.digest("hex") };
  }

  /**
   * A multipart upload: the file is read once in order (SHA-256 of it all, MD5 of each part), and each part is
   * sent from the file as soon as it is hashed, `partConcurrency` at a time, with its Content-MD5, so the bytes
   * stored are the bytes hashed (a file changed in between fails the put). Any failure or abort waits for the
   * parts under way, then aborts the upload: no parts are left.
   */
  private async putMultipart(
    key: string,
    name: string,
    file: LocalFile,
    { sizeBytes, partBytes }: { sizeBytes: number; partBytes: number },
    signal?: AbortSignal,
  ): Promise<StoredFile> {
    const count = Math.ceil(sizeBytes / partBytes);
    const created = await this.call({
      resource: `object ${key} (a new multipart upload)`,
      key,
      // Neither aborted nor repeated: an upload created though its answer was lost could never be aborted.
      idempotent: false,
      send: (abortSignal) => ({
        sent: this.client.send(
          new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: name, ContentType: "application/octet-stream" }),
          { abortSignal },
        ),
      }),
    });
    const uploadId = created.UploadId!;
    const stopped = new AbortController();
    const onAbort = () => stopped.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    const inFlight = new Set<Promise<void>>();
    const etags: string[] = [];
    const partMd5: Buffer[] = [];
    let failure: { error: unknown } | undefined;
    let completing = false;
    const sha256 = createHash("sha256");
    try {
      for (let i = 0; i < count && !failure; i++) {
        while (inFlight.size >= this.partConcurrency) await Promise.race(inFlight);
        if (failure) break;
        const start = i * partBytes;
        const length = Math.min(partBytes, sizeBytes - start);
        partMd5[i] = await hashRange(file, start, length, sha256, stopped.signal);
        const sent = this.call({
          resource: `part ${i + 1} of ${count} of object ${key}`,
          key,
          signal: stopped.signal,
          send: (abortSignal) => {
            const body = fileRange(file, start, length);
            const command = new UploadPartCommand({
              Bucket: this.bucket,
              Key: name,
              UploadId: uploadId,
              PartNumber: i + 1,
              Body: body,
              ContentLength: length,
              ContentMD5: partMd5[i].toString("base64"),
            });
            return { body, sent: this.client.send(command, { abortSignal }) };
          },
        }).then(
          (part) => void (etags[i] = part.ETag!),
          (error) => {
            failure ??= { error };
            stopped.abort(error);
          },
        );
        const tracked = sent.finally(() => inFlight.delete(tracked));
        inFlight.add(tracked);
      }
      await Promise.all(inFlight);
      if (failure) throw failure.error;
      stopped.signal.throwIfAborted();
      completing = true;
      await this.complete(key, name, uploadId, etags, partMd5, stopped.signal);
      return { sizeBytes, sha256: sha256.digest("hex") };
    } catch (error) {
      stopped.abort(error);
      await Promise.all(inFlight);
      // Completed though its answer was lost: then the put happened.
      if (completing && (await this.completedAnyway(key, name, partMd5))) {
        return { sizeBytes, sha256: sha256.digest("hex") };
      }
      await this.abortUpload(key, name, uploadId);
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private async complete(
    key: string,
    name: string,
    uploadId: string,
    etags: string[],
    partMd5: Buffer[],
    signal: AbortSignal,
  ): Promise<void> {
    try {
      await this.call({
        resource: `object ${key} (completing its multipart upload)`,
        key,
        signal,
        send: (abortSignal) => {
          const command = new CompleteMultipartUploadCommand({
            Bucket: this.bucket,
            Key: name,
            UploadId: uploadId,
            MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
          });
          return { sent: this.client.send(command, { abortSignal }) };
        },
      });
    } catch (error) {
      // A retry after a completion whose answer was lost finds no upload: the object tells.
      if ((error as CloudError).status === 404 && (await this.completedAnyway(key, name, partMd5))) return;
      throw error;
    }
  }

  /** Whether the object at `name` is the multipart upload of parts with these MD5s (its S3 ETag says). */
  private async completedAnyway(key: string, name: string, partMd5: Buffer[]): Promise<boolean> {
    const expected = `${createHash("md5").update(Buffer.concat(partMd5)).digest("hex")}-${partMd5.length}`;
    const head = await this.head(key, name).catch(() => undefined);
    return unquote(head?.ETag) === expected;
  }

  /** Aborts the upload (its parts go); a failure is logged, not thrown: the put's own error matters more. */
  private async abortUpload(key: string, name: string, uploadId: string): Promise<void> {
    try {
      await this.ifThere(
        this.call({
          resource: `object ${key} (aborting its multipart upload)`,
          key,
          send: (abortSignal) => ({
            sent: this.client.send(
              new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: name, UploadId: uploadId }),
              { abortSignal },
            ),
          }),
        }),
      );
    } catch (error) {
      this.deps.log(
        `s3 object ${key}: the failed put left its multipart upload ${uploadId} in ${this.locate(key)} ` +
          `(${(error as Error).message}); a lifecycle rule for incomplete uploads, or an abort, removes its parts`,
      );
    }
  }

  // --- requests ---------------------------------------------------------------------------------

  private objectName(key: string): string {
    return this.folder + keyNames(key).join("/");
  }

  /** HEAD of the object, or undefined when there is none (in a bucket that is there). */
  private async head(key: string, name: string, newest = false) {
    return this.ifThere(
      this.call({
        resource: `object ${key}`,
        key,
        send: (abortSignal) => {
          const command = new HeadObjectCommand({ Bucket: this.bucket, Key: name });
          if (newest) {
            // Swift reads every replica for the newest copy; other services ignore the header.
            command.middlewareStack.add(
              (next) => (args) => {
                (args.request as { headers: Record<string, string> }).headers["x-newest"] = "true";
                return next(args);
              },
              { step: "build", name: "cofferXNewest" },
            );
          }
          return { sent: this.client.send(command, { abortSignal }) };
        },
      }),
    );
  }

  private headNewest(key: string, name: string) {
    return this.head(key, name, true);
  }

  /**
   * `request`'s result, or undefined when the object is not there (404). A HEAD's 404 has no body to say
   * whether the bucket is missing too: the bucket is checked then, once.
   */
  private async ifThere<T>(request: Promise<T>): Promise<T | undefined> {
    try {
      return await request;
    } catch (error) {
      if (!(error instanceof CloudError) || error.status !== 404 || error.code === "TARGET_UNREACHABLE") throw error;
      await this.ensureBucket();
      return undefined;
    }
  }

  /**
   * Throws TARGET_UNREACHABLE unless the bucket is there (asked once, then remembered). A listing of one key,
   * not a HEAD: its errors have a body that tells refused credentials from a missing bucket or a denied folder.
   */
  private ensureBucket(): Promise<void> {
    this.bucketSeen ??= this.call({
      resource: `bucket ${this.bucket}`,
      send: (abortSignal) => ({
        sent: this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.folder || undefined, MaxKeys: 1 }),
          { abortSignal },
        ),
      }),
    })
      .then(() => undefined)
      .catch((error) => {
        this.bucketSeen = undefined;
        throw error;
      });
    return this.bucketSeen;
  }

  /** Sends the call's command, retrying what is safe to repeat with backoff; errors name the bucket and key. */
  private async call<T>(call: S3Call<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let body: Readable | undefined;
      try {
        const request = call.send(call.signal);
        body = request.body;
        return await request.sent;
      } catch (error) {
        const failure = this.failure(error, call);
        if (!(call.idempotent ?? true) || attempt > this.maxRetries || !retriable(error) || call.signal?.aborted) {
          throw failure;
        }
        const waitMs = backoffMs(attempt);
        this.deps.log(`${failure.message.split(". ")[0]}; retry ${attempt} in ${waitMs} ms`);
        try {
          await this.deps.sleep(waitMs, call.signal);
        } catch (abort) {
          throw this.failure(abort, call);
        }
      } finally {
        body?.destroy(); // stops reading the file when the request ended early
      }
    }
  }

  /**
   * `error` as a CofferError that names the request, the bucket and the key, says what to do, and carries
   * no secret: the SDK's error becomes a redacted cause.
   */
  private failure(error: unknown, call: { resource: string; key?: string; signal?: AbortSignal }): CofferError {
    if (isCofferError(error)) return error;
    const sdk = error as SdkError;
    const where = call.key === undefined ? `s3://${this.bucket}` : this.locate(call.key);
    const subject = `s3 ${call.resource} (${where} at ${this.endpoint})`;
    const options = { cause: error, secrets: this.#secrets };
    if (call.signal?.aborted || sdk?.name === "AbortError") {
      return new CofferError("ABORTED", `${subject}: cancelled`, options);
    }
    const status = sdk?.$metadata?.httpStatusCode;
    const facts = { service: "s3", resource: call.resource, status, requestId: sdk?.$metadata?.requestId };
    if (status === undefined && !(typeof sdk === "object" && sdk !== null && "$metadata" in sdk) && !retriable(sdk)) {
      return new CofferError("IO_FAILED", `${subject}: ${sdk?.message ?? String(error)}`, options);
    }
    if (status === undefined) {
      const reason = sdk?.code ? `${sdk.code}: ${sdk.message}` : String(sdk?.message ?? error);
      const timedOut = sdk?.name === "TimeoutError" || sdk?.code === "ETIMEDOUT";
      return new CloudError(
        timedOut ? "CLOUD_TIMEOUT" : "CLOUD_UNAVAILABLE",
        `${subject}: no answer (${reason}). Check that the endpoint is right and reachable from this machine.`,
        facts,
        options,
      );
    }
    // A HEAD's error has no body, so no S3 code: the SDK names it "Unknown", or by its status ("NotFound").
    const name = sdk.name && !["Error", "Unknown", "UnknownError"].includes(sdk.name) ? ` ${sdk.name}` : "";
    const said =
      sdk.message && sdk.message !== sdk.name && sdk.message !== "UnknownError"
        ? `: ${sdk.message.replace(/\.$/, "")}`
        : "";
    const id = facts.requestId ? `, request id ${facts.requestId}` : "";
    const { code, advice } = this.adviceFor(sdk.name, status, call.key === undefined);
    return new CloudError(code, `${subject}: HTTP ${status}${name}${said}${id}. ${advice}`, facts, options);
  }

  private adviceFor(name: string, status: number, aboutBucket: boolean): { code: CloudError["code"]; advice: string } {
    if (name === "NoSuchBucket" || (aboutBucket && status === 404)) {
      return {
        code: "TARGET_UNREACHABLE",
        advice:
          `There is no bucket ${this.bucket}: create it (e.g. aws s3 mb s3://${this.bucket}${this.endpointFlag}), ` +
          "or correct the store's bucket. Coffer never creates one.",
      };
    }
    if (["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"].includes(name)) {
      return {
        code: "CLOUD_AUTH_FAILED",
        advice:
          "The credentials were refused: check the access key id and its secret (with Swift's tempauth: " +
          '"account:user" and the user\'s key).',
      };
    }
    if (status === 403) {
      return {
        code: "CLOUD_FORBIDDEN",
        advice: "Access was denied: check the access key id and its secret, and that they may use the bucket.",
      };
    }
    if (["PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"].includes(name)) {
      return { code: "CLOUD_CONFIG_INVALID", advice: "The bucket is in another region: set the store's region." };
    }
    if (status === 404) return { code: "CLOUD_NOT_FOUND", advice: "There is no such object." };
    if (status === 412) return { code: "CLOUD_CONFLICT", advice: "An object is there already." };
    if (status === 501) {
      return { code: "CLOUD_BAD_REQUEST", advice: "This S3 service does not implement the request." };
    }
    if (status === 429 || status === 503 || status >= 500) {
      return { code: "CLOUD_UNAVAILABLE", advice: "The service failed or is overloaded; retry later." };
    }
    return { code: "CLOUD_BAD_REQUEST", advice: "The service refused the request." };
  }
}

/** Lost connections, timeouts, 5xx, 429 and SlowDown: worth another try if the request is safe to repeat. */
function retriable(error: unknown): boolean {
  const sdk = error as SdkError;
  if (sdk?.name === "AbortError") return false;
  const status = sdk?.$metadata?.httpStatusCode;
  if (status !== undefined) return retryStatuses.has(status) || retryNames.has(sdk.name);
  return retryNames.has(sdk?.name) || networkCodes.has(sdk?.code ?? "");
}

function backoffMs(attempt: number): number {
  return Math.min(maxBackoffMs, firstBackoffMs * 2 ** (attempt - 1));
}

function bucketName(name: string): string {
  if (!/^[a-z0-9][a-z0-9._-]{1,253}[a-z0-9]$/i.test(name)) {
    throw new Error(`"${name}" can't name an S3 bucket: 3-255 letters, digits, '.', '-', '_', and no '/'`);
  }
  return name;
}

function isKey(key: string): boolean {
  try {
    keyNames(key);
    return true;
  } catch {
    return false;
  }
}

function unquote(etag: string | undefined): string | undefined {
  return etag?.replace(/^"|"$/g, "");
}

/** A local file being stored, open for positional reads. */
interface LocalFile {
  path: string;
  handle: FileHandle;
}

/** `size` bytes of `file` at `offset` into `buffer` (at least one); a failure is an IO_FAILED naming the file. */
async function readAt(file: LocalFile, buffer: Buffer, size: number, offset: number): Promise<{ bytesRead: number }> {
  let bytesRead: number;
  try {
    ({ bytesRead } = await file.handle.read(buffer, 0, size, offset));
  } catch (error) {
    throw new CofferError("IO_FAILED", `reading ${file.path} at byte ${offset}: ${(error as Error).message}`);
  }
  if (bytesRead === 0)
    throw new CofferError("IO_FAILED", `${file.path} ended at byte ${offset}: it shrank while being stored`);
  return { bytesRead };
}

/** `length` bytes of `file` from `start`, read as the request sends them. */
function fileRange(file: LocalFile, start: number, length: number): Readable {
  let offset = start;
  const end = start + length;
  const stream = new Readable({
    highWaterMark: readChunkBytes,
    read() {
      const size = Math.min(readChunkBytes, end - offset);
      if (size === 0) return void this.push(null);
      const buffer = Buffer.allocUnsafe(size);
      readAt(file, buffer, size, offset).then(
        ({ bytesRead }) => {
          offset += bytesRead;
          this.push(buffer.subarray(0, bytesRead));
        },
        (error) => this.destroy(error),
      );
    },
  });
  // A read that fails after the request ended (the handle closed) must not be an uncaught 'error'.
  stream.on("error", () => undefined);
  return stream;
}

/** Reads `length` bytes of `file` from `start` in order, feeding `whole`; returns their MD5. */
async function hashRange(
  file: LocalFile,
  start: number,
  length: number,
  whole: Hash,
  signal?: AbortSignal,
): Promise<Buffer> {
  const md5 = createHash("md5");
  const buffer = Buffer.allocUnsafe(Math.min(readChunkBytes, Math.max(length, 1)));
  for (let offset = start; offset < start + length;) {
    signal?.throwIfAborted();
    const { bytesRead } = await readAt(file, buffer, Math.min(buffer.length, start + length - offset), offset);
    const chunk = buffer.subarray(0, bytesRead);
    whole.update(chunk);
    md5.update(chunk);
    offset += bytesRead;
  }
  return md5.digest();
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
