import type { CloudDeps, RequestEvent } from "../../provider/openstack/deps";

/** What a fake route answers: JSON (or raw bytes) with a status and headers. */
export interface FakeReply {
  readonly status?: number;
  readonly json?: unknown;
  readonly raw?: string | Uint8Array;
  readonly headers?: Record<string, string>;
}

export interface SeenRequest {
  readonly method: string;
  readonly url: URL;
  readonly headers: Headers;
  readonly body?: string | Uint8Array;
}

type Handler = (req: SeenRequest) => FakeReply | Error | Promise<FakeReply | Error>;

export const projectId = "5c4a2a7ab4f0423e9b6aae86ac7c1b07";
export const userId = "0f4cc3c7b2b34bfb9b6b3f1d47c3ad41";
export const keystoneUrl = "http://127.0.0.1:5000/v3";
export const cinderUrl = `http://127.0.0.1:8776/v3/${projectId}`;
export const novaUrl = "http://127.0.0.1:8774/v2.1";

/** A Keystone v3 token body as Zed returns it (trimmed to what clients read, plus realistic extras). */
export function tokenBody(expiresAt: Date, catalog: unknown[] = defaultCatalog()): unknown {
  return {
    token: {
      methods: ["password"],
      user: { domain: { id: "default", name: "Default" }, id: userId, name: "demo", password_expires_at: null },
      audit_ids: ["3T2dc1CGQxyJsHdDu1xkcw"],
      expires_at: expiresAt.toISOString().replace("Z", "000Z"),
      issued_at: new Date(expiresAt.getTime() - 3600_000).toISOString(),
      project: { domain: { id: "default", name: "Default" }, id: projectId, name: "demo" },
      is_domain: false,
      roles: [{ id: "51cc68287d524c759f47c811e6463340", name: "member" }],
      catalog,
    },
  };
}

export function defaultCatalog(): unknown[] {
  const endpoint = (id: string, iface: string, url: string, region = "RegionOne") => ({
    id,
    interface: iface,
    region_id: region,
    region,
    url,
  });
  return [
    {
      type: "identity",
      name: "keystone",
      id: "a1",
      endpoints: [endpoint("e1", "public", "http://127.0.0.1:5000/v3/")],
    },
    {
      type: "volumev3",
      name: "cinderv3",
      id: "a2",
      endpoints: [
        endpoint("e2", "public", cinderUrl),
        endpoint("e3", "internal", `http://cinder.internal:8776/v3/${projectId}`),
      ],
    },
    { type: "image", name: "glance", id: "a3", endpoints: [endpoint("e4", "public", "http://127.0.0.1:9292")] },
    {
      type: "key-manager",
      name: "barbican",
      id: "a4",
      endpoints: [endpoint("e5", "public", "http://127.0.0.1:9311")],
    },
    { type: "compute", name: "nova", id: "a5", endpoints: [endpoint("e6", "public", novaUrl)] },
  ];
}

/**
 * A scripted cloud behind an injected fetch, with a fake clock: `sleep` advances `now` at once
 * and records the pause. Keystone answers POST /v3/auth/tokens with a one-hour token by default.
 */
export class FakeCloud {
  nowMs = Date.parse("2026-11-26T12:00:00Z");
  readonly requests: SeenRequest[] = [];
  readonly sleeps: number[] = [];
  readonly logLines: string[] = [];
  readonly events: RequestEvent[] = [];
  tokensIssued = 0;
  tokenLifetimeMs = 3600_000;
  catalog: unknown[] = defaultCatalog();
  private readonly routes: { method: string; path: RegExp; handler: Handler; times: number }[] = [];

  constructor() {
    this.on("POST", /^\/v3\/auth\/tokens$/, () => {
      this.tokensIssued++;
      return {
        status: 201,
        json: tokenBody(new Date(this.nowMs + this.tokenLifetimeMs), this.catalog),
        headers: { "X-Subject-Token": `gAAAAABtoken${this.tokensIssued}secretpart`, "x-openstack-request-id": "req-k" },
      };
    });
  }

  /** Adds a route; the newest matching route wins; `times` limits how often it answers. */
  on(method: string, path: RegExp, handler: Handler, times = Infinity): this {
    this.routes.unshift({ method, path, handler, times });
    return this;
  }

  /** Every token value issued so far (all secrets). */
  tokens(): string[] {
    return Array.from({ length: this.tokensIssued }, (_, i) => `gAAAAABtoken${i + 1}secretpart`);
  }

  deps(): CloudDeps {
    return {
      fetch: (url, init) => this.fetch(url, init),
      now: () => this.nowMs,
      sleep: async (ms) => {
        this.sleeps.push(ms);
        this.nowMs += ms;
      },
      log: (line) => this.logLines.push(line),
      onRequest: (event) => this.events.push(event),
    };
  }

  /** Requests other than token issues. */
  serviceRequests(): SeenRequest[] {
    return this.requests.filter((req) => !req.url.pathname.endsWith("/auth/tokens"));
  }

  private async fetch(url: string, init: RequestInit): Promise<Response> {
    const parsed = new URL(url);
    const body = await bodyOf(init.body);
    const seen: SeenRequest = { method: init.method ?? "GET", url: parsed, headers: new Headers(init.headers), body };
    this.requests.push(seen);
    const route = this.routes.find((r) => r.method === seen.method && r.path.test(parsed.pathname) && r.times > 0);
    if (!route) return new Response(`no fake route for ${seen.method} ${parsed.pathname}`, { status: 599 });
    route.times--;
    const reply = await route.handler(seen);
    if (reply instanceof Error) throw reply;
    const headers = new Headers(reply.headers);
    let payload: string | Uint8Array | undefined = reply.raw;
    if (reply.json !== undefined) {
      payload = JSON.stringify(reply.json);
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
    }
    const status = reply.status ?? 200;
    const noBody = status === 204 || status === 304;
    return new Response(noBody ? null : (payload ?? ""), { status, headers });
  }
}

async function bodyOf(body: RequestInit["body"]): Promise<string | Uint8Array | undefined> {
  if (body === undefined || body === null) return undefined;
  if (typeof body === "string") return body;
  if (body instanceof ReadableStream) return new Uint8Array(await new Response(body).arrayBuffer());
  return new Uint8Array(await new Response(body as ConstructorParameters<typeof Response>[0]).arrayBuffer());
}

/** A Cinder/Nova-style error body. */
export function cinderError(kind: string, code: number, message: string): FakeReply {
  return { status: code, json: { [kind]: { message, code } }, headers: { "x-openstack-request-id": `req-${code}` } };
}

/** JSON.stringify of an error with its cause chain and own properties, to scan for secrets. */
export function serializeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    if (current instanceof Error) {
      parts.push(current.message, current.stack ?? "", JSON.stringify({ ...current }));
      current = current.cause;
    } else {
      parts.push(String(current));
      current = undefined;
    }
  }
  return parts.join("\n");
}
