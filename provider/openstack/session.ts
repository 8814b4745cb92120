import type { z } from "zod";
import { redact } from "../common/errors";
import { endpointFor } from "./catalog";
import { CloudError } from "./cloudError";
import type { CloudConfig } from "./config";
import type { CloudDeps } from "./deps";
import { describeIdentity, issueToken, type Token } from "./keystone";
import { request, send, type HttpContext, type HttpRequest } from "./http";

/** The services Coffer talks to, their catalog types, and the API root below the catalog URL. */
const services = {
  cinder: { types: ["volumev3", "block-storage"], root: cinderRoot },
  glance: { types: ["image"], root: (url: string) => versionRoot(url, "v2") },
  barbican: { types: ["key-manager"], root: (url: string) => versionRoot(url, "v1") },
  nova: { types: ["compute"], root: novaRoot },
} as const;
export type ServiceName = keyof typeof services;

/** A request to a service: `path` is below the service's API root ("/backups/detail?limit=10"). */
export type ServiceCall = Omit<HttpRequest, "service" | "url"> & {
  readonly service: ServiceName;
  readonly path: string;
};

/** Re-authenticate this long before the token's expires_at. */
const expiryMarginMs = 60_000;
const defaultTimeoutMs = 60_000;

/**
 * An authenticated connection to one cloud: keeps a token until shortly before it expires,
 * re-authenticates once when a service answers 401, and finds service endpoints in the catalog.
 */
export class CloudSession {
  readonly http: HttpContext;
  private current?: Token;
  private pending?: Promise<Token>;
  private readonly issued: string[] = [];

  constructor(
    readonly config: CloudConfig,
    readonly deps: CloudDeps,
    options: { timeoutMs?: number } = {},
  ) {
    this.http = {
      deps,
      secrets: () => [...config.secrets, ...this.issued],
      maxRetries: config.maxRetries,
      timeoutMs: options.timeoutMs ?? defaultTimeoutMs,
    };
  }

  /** A valid token, issuing a new one when there is none or it is about to expire. */
  async token(): Promise<Token> {
    const token = this.current;
    if (token && this.deps.now() < token.expiresAtMs - expiryMarginMs) return token;
    this.pending ??= this.authenticate().finally(() => (this.pending = undefined));
    return this.pending;
  }

  /** The project the token is scoped to. */
  async projectId(): Promise<string> {
    const token = await this.token();
    if (token.projectId) return token.projectId;
    throw new CloudError(
      "CLOUD_CONFIG_INVALID",
      `the token of ${describeIdentity(this.config)} is not scoped to a project; set openstack:tenantName.`,
      { service: "keystone", resource: "token" },
    );
  }

  /** The API root of a service, e.g. http://127.0.0.1:8776/v3/<project id>. */
  async endpoint(service: ServiceName): Promise<string> {
    const token = await this.token();
    const url = endpointFor(token.catalog, {
      types: services[service].types,
      interface: this.config.interface,
      region: this.config.region,
      projectId: token.projectId,
    });
    return services[service].root(url.replace(/\/+$/, ""), token.projectId);
  }

  /** Sends an authenticated request and returns its 2xx response (body unread). */
  async send(call: ServiceCall): Promise<Response> {
    return this.withToken(call, (req) => send(this.http, req));
  }

  /** Sends an authenticated request and returns its JSON body checked against `schema`. */
  async request<T>(call: ServiceCall, schema: z.ZodType<T>) {
    return this.withToken(call, (req) => request(this.http, req, schema));
  }

  /** Secrets known so far (password, application-credential secret, tokens), for redaction. */
  secrets(): readonly string[] {
    return this.http.secrets();
  }

  private async authenticate(): Promise<Token> {
    const token = await issueToken(this.http, this.config);
    this.issued.push(token.value);
    if (this.issued.length > 8) this.issued.shift();
    this.current = token;
    return token;
  }

  private async withToken<R>(call: ServiceCall, perform: (req: HttpRequest) => Promise<R>): Promise<R> {
    for (let attempt = 1; ; attempt++) {
      const token = await this.token();
      const base = await this.endpoint(call.service);
      const req: HttpRequest = {
        ...call,
        url: call.path.startsWith("http") ? call.path : base + call.path,
        headers: { ...call.headers, "X-Auth-Token": token.value },
      };
      try {
        return await perform(req);
      } catch (error) {
        const canRepeat = call.body === undefined && attempt === 1;
        if (!(error instanceof CloudError) || error.status !== 401 || !canRepeat) throw error;
        this.deps.log(
          redact(`${call.service} ${call.resource}: HTTP 401 with a token; authenticating again`, this.secrets()),
        );
        if (this.current === token) this.current = undefined;
      }
    }
  }
}

/** Cinder's catalog URL normally ends in /v3/<project id>; a project-less /v3 gets the project added. */
function cinderRoot(url: string, projectId: string | undefined): string {
  return /\/v3$/.test(url) && projectId ? `${url}/${projectId}` : url;
}

/** Nova's catalog URL ends in /v2.1 (or /v2.1/<project id>, which older deployments list); a bare one gets /v2.1. */
function novaRoot(url: string): string {
  return /\/v2(\.1)?(\/[^/]+)?$/.test(url) ? url : `${url}/v2.1`;
}

function versionRoot(url: string, version: string): string {
  return new RegExp(`/${version}(\\.\\d+)?$`).test(url) ? url.replace(/(\.\d+)$/, "") : `${url}/${version}`;
}
