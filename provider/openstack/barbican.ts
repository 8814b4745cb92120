import { z } from "zod";
import { paginate, withQuery } from "./paginate";
import type { CloudSession, ServiceCall } from "./session";

const secretSchema = z.object({
  secret_ref: z.string(),
  name: z.string().nullish(),
  status: z.string(),
  secret_type: z.string().nullish(),
  algorithm: z.string().nullish(),
  bit_length: z.number().nullish(),
  mode: z.string().nullish(),
  expiration: z.string().nullish(),
  content_types: z.record(z.string(), z.string()).nullish(),
  created: z.string().nullish(),
  updated: z.string().nullish(),
});
/** A secret's metadata; `id` is the last segment of `secret_ref`. */
export type SecretMetadata = z.infer<typeof secretSchema> & { readonly id: string };
const secretPage = z.object({
  secrets: z.array(secretSchema),
  total: z.number().nullish(),
  next: z.string().nullish(),
});
const stored = z.object({ secret_ref: z.string() });

export interface StoreSecretOptions {
  readonly name?: string;
  readonly payload: Buffer;
  /** Barbican's secret_type: "opaque" (default), "symmetric", "passphrase", ... */
  readonly secretType?: string;
  readonly algorithm?: string;
  readonly bitLength?: number;
  readonly mode?: string;
  readonly expiration?: string;
}

/** Barbican's key-manager API v1. A secret is named by its id or its full secret_ref URL. */
export class BarbicanClient {
  constructor(private readonly session: CloudSession) {}

  async getSecret(ref: string, signal?: AbortSignal): Promise<SecretMetadata> {
    const id = secretId(ref);
    const body = await this.call(
      { method: "GET", path: `/secrets/${enc(id)}`, resource: `secret ${id}`, signal },
      secretSchema,
    );
    return { ...body, id: secretId(body.secret_ref) };
  }

  /** The secret's bytes (Accept: application/octet-stream). */
  async getSecretPayload(ref: string, signal?: AbortSignal): Promise<Buffer> {
    const id = secretId(ref);
    const response = await this.session.send({
      service: "barbican",
      method: "GET",
      path: `/secrets/${enc(id)}/payload`,
      resource: `secret ${id}`,
      headers: { Accept: "application/octet-stream" },
      signal,
    });
    return Buffer.from(await response.arrayBuffer());
  }

  /** Stores `payload` as base64 application/octet-stream; returns the new secret's ref and id. */
  async storeSecret(options: StoreSecretOptions, signal?: AbortSignal): Promise<{ ref: string; id: string }> {
    const payload = options.payload.toString("base64");
    const json = {
      name: options.name,
      payload,
      payload_content_type: "application/octet-stream",
      payload_content_encoding: "base64",
      secret_type: options.secretType ?? "opaque",
      algorithm: options.algorithm,
      bit_length: options.bitLength,
      mode: options.mode,
      expiration: options.expiration,
    };
    const resource = `secret ${options.name ?? "(unnamed)"}`;
    const body = await this.call(
      { method: "POST", path: "/secrets", resource, json, signal, secrets: [payload] },
      stored,
    );
    return { ref: body.secret_ref, id: secretId(body.secret_ref) };
  }

  async deleteSecret(ref: string, signal?: AbortSignal): Promise<void> {
    const id = secretId(ref);
    await this.session.send({
      service: "barbican",
      method: "DELETE",
      path: `/secrets/${enc(id)}`,
      resource: `secret ${id}`,
      signal,
    });
  }

  /** Every secret the user may see, filtered by Barbican's query parameters (e.g. { name }). */
  listSecrets(filters: Readonly<Record<string, string>> = {}, options: { limit?: number; signal?: AbortSignal } = {}) {
    return paginate(async (query): Promise<{ items: SecretMetadata[]; next?: string }> => {
      // Barbican's next link keeps offset and limit but drops the filters: they go on every page.
      const path = query
        ? withQuery(withQuery("/secrets", filters), query)
        : withQuery("/secrets", { ...filters, limit: options.limit });
      const page = await this.call({ method: "GET", path, resource: "secrets", signal: options.signal }, secretPage);
      return {
        items: page.secrets.map((secret) => ({ ...secret, id: secretId(secret.secret_ref) })),
        next: page.next ?? undefined,
      };
    }, "barbican secrets");
  }

  private async call<T>(call: Omit<ServiceCall, "service">, schema: z.ZodType<T>): Promise<T> {
    return (await this.session.request({ ...call, service: "barbican" }, schema)).body;
  }
}

/** The id from a secret_ref URL (http://host:9311/v1/secrets/<id>), or the id itself. */
export function secretId(ref: string): string {
  const match = /\/secrets\/([^/?#]+)\/?(?:[?#].*)?$/.exec(ref);
  return match ? decodeURIComponent(match[1]) : ref;
}

function enc(id: string): string {
  return encodeURIComponent(id);
}
