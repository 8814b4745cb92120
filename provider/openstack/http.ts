import type { z } from "zod";
import { redact } from "../common/errors";
import type { CloudDeps } from "./deps";
import { aborted, causeText, failure, statusError, timeout, unreachable } from "./httpErrors";

export type HttpMethod = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";

export interface HttpContext {
  readonly deps: CloudDeps;
  /** Everything to keep out of errors and logs: passwords, secrets, tokens issued so far. */
  readonly secrets: () => readonly string[];
  /** Retries after the first attempt, for connection errors, 502/503/504 and 429. */
  readonly maxRetries: number;
  readonly timeoutMs: number;
}

export interface HttpRequest {
  /** "cinder", "glance", "barbican", "keystone": the first word of every error message. */
  readonly service: string;
  /** What the request is about, e.g. "backup 1234" or "backups"; named in every error message. */
  readonly resource: string;
  readonly method: HttpMethod;
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Sent as JSON with Content-Type application/json unless `headers` says otherwise. */
  readonly json?: unknown;
  /** A raw body (a file stream for an upload); never retried, since a stream is read once. */
  readonly body?: Uint8Array | ReadableStream<Uint8Array>;
  /** Whether repeating it is harmless; default: true for GET, HEAD, PUT and DELETE. */
  readonly idempotent?: boolean;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Secrets in this request's body (e.g. a Barbican payload), redacted like the session's. */
  readonly secrets?: readonly string[];
  /**
   * Keystone's token request: a 404 there (an application credential that was deleted) is an
   * authentication failure, never a CLOUD_NOT_FOUND that a caller could take for "the resource is gone".
   */
  readonly authenticates?: boolean;
}

const retryStatuses = new Set([429, 502, 503, 504]);
const firstBackoffMs = 500;
const maxBackoffMs = 8_000;
/** A server asking for a longer pause than this gets an error instead of a stalled `pulumi up`. */
const maxRetryAfterMs = 60_000;

/** Sends `req`, retrying where safe; returns a 2xx response or throws a CloudError (or ABORTED). */
export async function send(ctx: HttpContext, req: HttpRequest): Promise<Response> {
  ctx = withRequestSecrets(ctx, req);
  return (await sendKeepingTimer(ctx, req, false)).response;
}

/** Sends `req` and returns its JSON body checked against `schema` (the timeout covers the body). */
export async function request<T>(
  ctx: HttpContext,
  req: HttpRequest,
  schema: z.ZodType<T>,
): Promise<{ body: T; headers: Headers; status: number }> {
  ctx = withRequestSecrets(ctx, req);
  const { response, release } = await sendKeepingTimer(ctx, req, true);
  try {
    const text = await readText(ctx, req, response);
    return { body: decode(ctx, req, response, text, schema), headers: response.headers, status: response.status };
  } finally {
    release();
  }
}

function withRequestSecrets(ctx: HttpContext, req: HttpRequest): HttpContext {
  const extra = req.secrets;
  return extra?.length ? { ...ctx, secrets: () => [...ctx.secrets(), ...extra] } : ctx;
}

async function readText(ctx: HttpContext, req: HttpRequest, response: Response): Promise<string> {
  try {
    return await response.text();
  } catch (error) {
    throw failure(ctx, req, "CLOUD_UNAVAILABLE", `the response body broke off (${causeText(error)})`, response, error);
  }
}

function decode<T>(ctx: HttpContext, req: HttpRequest, response: Response, text: string, schema: z.ZodType<T>): T {
  let json: unknown;
  try {
    json = text.trim() === "" ? {} : JSON.parse(text);
  } catch (error) {
    throw failure(ctx, req, "CLOUD_BAD_RESPONSE", "the response is not JSON", response, error);
  }
  const parsed = schema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue.path.length ? issue.path.join(".") : "(the body)";
  throw failure(ctx, req, "CLOUD_BAD_RESPONSE", `the response's ${where} is unexpected: ${issue.message}`, response);
}

async function sendKeepingTimer(
  ctx: HttpContext,
  req: HttpRequest,
  timerCoversBody: boolean,
): Promise<{ response: Response; release: () => void }> {
  const idempotent = req.idempotent ?? ["GET", "HEAD", "PUT", "DELETE"].includes(req.method);
  const retriable = idempotent && req.body === undefined;
  for (let attempt = 1; ; attempt++) {
    const started = ctx.deps.now();
    const timer = armTimeout(req.timeoutMs ?? ctx.timeoutMs, req.signal);
    let response: Response;
    try {
      response = await ctx.deps.fetch(req.url, init(req, timer.signal));
    } catch (error) {
      timer.release();
      observe(ctx, req, attempt, started);
      if (req.signal?.aborted) throw aborted(ctx, req, error);
      if (timer.timedOut()) throw timeout(ctx, req, req.timeoutMs ?? ctx.timeoutMs, error);
      if (retriable && attempt <= ctx.maxRetries) {
        const waitMs = backoffMs(attempt);
        log(ctx, `${req.service} ${req.resource}: ${causeText(error)}; retry ${attempt} in ${waitMs} ms`);
        await pause(ctx, req, waitMs);
        continue;
      }
      throw unreachable(ctx, req, error);
    }
    observe(ctx, req, attempt, started, response.status);
    if (response.ok) {
      if (!timerCoversBody) timer.release();
      return { response, release: timer.release };
    }
    const waitMs = retryWaitMs(ctx, response, attempt);
    // 429 means "not done, come back": safe to repeat even a POST, but not a stream already read.
    const repeatable = retriable || (response.status === 429 && req.body === undefined);
    if (retryStatuses.has(response.status) && repeatable && waitMs !== undefined) {
      timer.release();
      await response.body?.cancel().catch(() => undefined);
      log(ctx, `${req.service} ${req.resource}: HTTP ${response.status}; retry ${attempt} in ${waitMs} ms`);
      await pause(ctx, req, waitMs);
      continue;
    }
    try {
      throw await statusError(ctx, req, response);
    } finally {
      timer.release();
    }
  }
}

function init(req: HttpRequest, signal: AbortSignal): RequestInit {
  const headers: Record<string, string> = { Accept: "application/json", ...req.headers };
  let body: RequestInit["body"];
  if (req.json !== undefined) {
    body = JSON.stringify(req.json);
    headers["Content-Type"] ??= "application/json";
  } else if (req.body !== undefined) {
    body = req.body;
  }
  const result: RequestInit & { duplex?: "half" } = { method: req.method, headers, body, signal };
  if (req.body instanceof ReadableStream) result.duplex = "half";
  return result;
}

/** Undefined when no retry is left or the server asks for a longer pause than we allow. */
function retryWaitMs(ctx: HttpContext, response: Response, attempt: number): number | undefined {
  if (attempt > ctx.maxRetries) return undefined;
  const asked = retryAfterMs(response.headers.get("retry-after"), ctx.deps.now());
  if (asked === undefined) return backoffMs(attempt);
  return asked <= maxRetryAfterMs ? asked : undefined;
}

/** Retry-After in seconds or as an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(value: string | null, nowMs: number): number | undefined {
  if (value === null || value.trim() === "") return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

function backoffMs(attempt: number): number {
  return Math.min(maxBackoffMs, firstBackoffMs * 2 ** (attempt - 1));
}

async function pause(ctx: HttpContext, req: HttpRequest, ms: number): Promise<void> {
  try {
    await ctx.deps.sleep(ms, req.signal);
  } catch (error) {
    throw aborted(ctx, req, error);
  }
}

function armTimeout(ms: number, outer?: AbortSignal) {
  const controller = new AbortController();
  let fired = false;
  const timer = setTimeout(() => {
    fired = true;
    controller.abort(new Error(`timed out after ${ms} ms`));
  }, ms);
  const onOuter = () => controller.abort(outer?.reason);
  if (outer?.aborted) onOuter();
  else outer?.addEventListener("abort", onOuter, { once: true });
  return {
    signal: controller.signal,
    timedOut: () => fired,
    release: () => {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onOuter);
    },
  };
}

function observe(ctx: HttpContext, req: HttpRequest, attempt: number, started: number, status?: number): void {
  const url = req.url.split("?")[0];
  ctx.deps.onRequest({
    service: req.service,
    method: req.method,
    url,
    attempt,
    status,
    durationMs: ctx.deps.now() - started,
  });
}

function log(ctx: HttpContext, line: string): void {
  ctx.deps.log(redact(line, ctx.secrets()));
}
