import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable, Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { z } from "zod";
import { CofferError } from "../common/errors";
import { CloudError, requestIdOf } from "./cloudError";
import { paginate, withQuery } from "./paginate";
import type { CloudSession, ServiceCall } from "./session";

/** The image fields Glance itself defines; every other top-level key is a user property. */
const coreFields = [
  "id", "name", "status", "visibility", "protected", "checksum", "os_hash_algo", "os_hash_value", "owner", "size",
  "virtual_size", "min_ram", "min_disk", "container_format", "disk_format", "created_at", "updated_at", "tags", "self",
  "file", "schema", "direct_url", "locations", "os_hidden",
]; // prettier-ignore

const imageCore = {
  id: z.string(),
  name: z.string().nullish(),
  status: z.string(),
  visibility: z.string().nullish(),
  protected: z.boolean().nullish(),
  disk_format: z.string().nullish(),
  container_format: z.string().nullish(),
  size: z.number().nullish(),
  checksum: z.string().nullish(),
  os_hash_algo: z.string().nullish(),
  os_hash_value: z.string().nullish(),
  owner: z.string().nullish(),
  tags: z.array(z.string()).nullish(),
  created_at: z.string(),
  updated_at: z.string().nullish(),
};
type ImageCore = z.infer<z.ZodObject<typeof imageCore>>;

/** An image: Glance's own fields, and its user properties apart in `properties`. */
const imageSchema = z.looseObject(imageCore).transform((image) => {
  const core: Record<string, unknown> = {};
  const properties: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(image)) (coreFields.includes(key) ? core : properties)[key] = value;
  return { ...(core as ImageCore), properties };
});
export type Image = z.infer<typeof imageSchema>;
const imagePage = z.object({ images: z.array(imageSchema), next: z.string().nullish() });

export interface CreateImageOptions {
  readonly name: string;
  readonly diskFormat?: string;
  readonly containerFormat?: string;
  readonly visibility?: "private" | "shared" | "community" | "public";
  readonly tags?: readonly string[];
  /** User properties (strings), stored as top-level image keys. */
  readonly properties?: Readonly<Record<string, string>>;
  /** The disk (GiB) and memory (MiB) the image needs to boot. */
  readonly minDisk?: number;
  readonly minRam?: number;
}

export type ImagePatchOp =
  | { readonly op: "add" | "replace"; readonly path: string; readonly value: unknown }
  | { readonly op: "remove"; readonly path: string };

export interface DownloadResult {
  readonly sizeBytes: number;
  /** The hash named by the image's os_hash_algo (sha512 by default), of the bytes received. */
  readonly hashAlgo: string;
  readonly hashValue: string;
  /** MD5 of the bytes received (Glance's `checksum`). */
  readonly md5: string;
}

/** Glance's image API v2. */
export class GlanceClient {
  constructor(private readonly session: CloudSession) {}

  async getImage(id: string, signal?: AbortSignal): Promise<Image> {
    return this.call({ method: "GET", path: `/images/${enc(id)}`, resource: `image ${id}`, signal }, imageSchema);
  }

  /** Every image visible to the project, filtered by Glance's query parameters (e.g. { name, status }). */
  listImages(filters: Readonly<Record<string, string>> = {}, options: { limit?: number; signal?: AbortSignal } = {}) {
    return paginate(async (query) => {
      const path = withQuery("/images", query ?? { ...filters, limit: options.limit });
      const page = await this.call({ method: "GET", path, resource: "images", signal: options.signal }, imagePage);
      return { items: page.images, next: page.next ?? undefined };
    }, "glance images");
  }

  /** Creates the image record (status "queued"); upload its data with `uploadImageData`. */
  async createImage(options: CreateImageOptions, signal?: AbortSignal): Promise<Image> {
    const json = {
      ...options.properties,
      name: options.name,
      disk_format: options.diskFormat ?? "raw",
      container_format: options.containerFormat ?? "bare",
      visibility: options.visibility ?? "private",
      tags: options.tags ?? [],
      ...(options.minDisk !== undefined ? { min_disk: options.minDisk } : {}),
      ...(options.minRam !== undefined ? { min_ram: options.minRam } : {}),
    };
    return this.call({ method: "POST", path: "/images", resource: `image ${options.name}`, json, signal }, imageSchema);
  }

  /** PUT /v2/images/{id}/file from a file (streamed, never retried). */
  async uploadImageData(id: string, file: string, signal?: AbortSignal): Promise<void> {
    const { size } = await stat(file);
    const body = Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>;
    const headers = { "Content-Type": "application/octet-stream", "Content-Length": String(size) };
    const path = `/images/${enc(id)}/file`;
    const resource = `image ${id}`;
    const call: ServiceCall = { service: "glance", method: "PUT", path, resource, body, headers, signal };
    await this.session.send({ ...call, timeoutMs: 24 * 3600_000 });
  }

  /** Streams the image's data into `to`, hashing it on the way; checks it against the image's hashes. */
  async downloadImageData(id: string, to: Writable, signal?: AbortSignal): Promise<DownloadResult> {
    const image = await this.getImage(id, signal);
    const path = `/images/${enc(id)}/file`;
    const response = await this.session.send({
      service: "glance",
      method: "GET",
      path,
      resource: `image ${id}`,
      headers: { Accept: "application/octet-stream" },
      signal,
    });
    if (response.status === 204 || !response.body) {
      throw new CloudError(
        "CLOUD_NOT_FOUND",
        `glance image ${id}: has no data (status ${image.status}); upload it first or wait until it is active.`,
        {
          service: "glance",
          resource: `image ${id}`,
          status: response.status,
          requestId: requestIdOf(response.headers),
        },
      );
    }
    const hashAlgo = image.os_hash_algo ?? "sha512";
    const result = await hashWhileCopying(response.body, to, hashAlgo, signal);
    checkHashes(id, image, result);
    return result;
  }

  /** PATCH with a JSON patch (application/openstack-images-v2.1-json-patch). */
  async updateImage(id: string, ops: readonly ImagePatchOp[], signal?: AbortSignal): Promise<Image> {
    const headers = { "Content-Type": "application/openstack-images-v2.1-json-patch" };
    const call = { method: "PATCH" as const, path: `/images/${enc(id)}`, resource: `image ${id}`, headers };
    return this.call({ ...call, json: ops, signal }, imageSchema);
  }

  /** Sets (string) or removes (null) user properties, as add/replace/remove against `image`'s current ones. */
  async setImageProperties(image: Image, changes: Readonly<Record<string, string | null>>, signal?: AbortSignal) {
    const ops: ImagePatchOp[] = Object.entries(changes).flatMap(([key, value]): ImagePatchOp[] => {
      const path = `/${key.replace(/~/g, "~0").replace(/\//g, "~1")}`;
      const present = key in image.properties;
      if (value === null) return present ? [{ op: "remove", path }] : [];
      return [{ op: present ? "replace" : "add", path, value }];
    });
    return ops.length ? this.updateImage(image.id, ops, signal) : image;
  }

  async deleteImage(id: string, signal?: AbortSignal): Promise<void> {
    await this.session.send({
      service: "glance",
      method: "DELETE",
      path: `/images/${enc(id)}`,
      resource: `image ${id}`,
      signal,
    });
  }

  private async call<T>(call: Omit<ServiceCall, "service">, schema: z.ZodType<T>): Promise<T> {
    return (await this.session.request({ ...call, service: "glance" }, schema)).body;
  }
}

async function hashWhileCopying(
  body: ReadableStream<Uint8Array>,
  to: Writable,
  hashAlgo: string,
  signal?: AbortSignal,
): Promise<DownloadResult> {
  let hash;
  try {
    hash = createHash(hashAlgo);
  } catch {
    throw new CofferError("CLOUD_BAD_RESPONSE", `glance names os_hash_algo "${hashAlgo}", which Node cannot compute.`);
  }
  const md5 = createHash("md5");
  let sizeBytes = 0;
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      md5.update(chunk);
      sizeBytes += chunk.length;
      done(null, chunk);
    },
  });
  await pipeline(Readable.fromWeb(body as import("node:stream/web").ReadableStream), hashing, to, { signal });
  return { sizeBytes, hashAlgo, hashValue: hash.digest("hex"), md5: md5.digest("hex") };
}

function checkHashes(id: string, image: Image, got: DownloadResult): void {
  const mismatch =
    (image.os_hash_value && image.os_hash_value !== got.hashValue && `${got.hashAlgo} ${got.hashValue}`) ||
    (image.checksum && image.checksum !== got.md5 && `md5 ${got.md5}`) ||
    (typeof image.size === "number" && image.size !== got.sizeBytes && `${got.sizeBytes} bytes`);
  if (mismatch) {
    throw new CofferError(
      "VERIFY_FAILED",
      `glance image ${id}: the downloaded data (${mismatch}) does not match the image's record ` +
        `(size ${image.size}, ${image.os_hash_algo} ${image.os_hash_value}, md5 ${image.checksum}). ` +
        "Download it again; if it persists, the image's stored data is damaged.",
    );
  }
}

function enc(id: string): string {
  return encodeURIComponent(id);
}
