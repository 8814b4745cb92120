/** The errors an HTTP exchange ends in, each naming the service, resource, method, path and what to do. */
import { isNativeError } from "node:util/types";
import { CofferError } from "../common/errors";
import { CloudError, classifyStatus, requestIdOf, serverMessageOf } from "./cloudError";
import type { HttpContext, HttpRequest } from "./http";

/** A 2xx response whose body is unusable. */
export function failure(
  ctx: HttpContext,
  req: HttpRequest,
  code: "CLOUD_UNAVAILABLE" | "CLOUD_BAD_RESPONSE",
  what: string,
  response: Response,
  cause?: unknown,
): CloudError {
  const requestId = requestIdOf(response.headers);
  const message =
    `${req.service} ${req.resource}: ${what} (${req.method} ${pathOf(req.url)}, HTTP ${response.status}` +
    `${requestId ? `, request id ${requestId}` : ""}). ` +
    (code === "CLOUD_BAD_RESPONSE"
      ? "The endpoint in the catalog may not be this service, or its API version differs from what Coffer speaks."
      : "Retry later.");
  return new CloudError(
    code,
    message,
    { service: req.service, resource: req.resource, status: response.status, requestId },
    { cause, secrets: ctx.secrets() },
  );
}

export async function statusError(ctx: HttpContext, req: HttpRequest, response: Response): Promise<CloudError> {
  const text = await response.text().catch(() => "");
  const serverMessage = serverMessageOf(text);
  const requestId = requestIdOf(response.headers);
  const { code, advice } = classifyStatus(req.authenticates && response.status === 404 ? 401 : response.status);
  const statusText = response.statusText ? ` ${response.statusText}` : "";
  const message =
    `${req.service} ${req.resource}: HTTP ${response.status}${statusText} on ${req.method} ${pathOf(req.url)}` +
    `${serverMessage ? `: ${serverMessage}` : ""}${requestId ? ` (request id ${requestId})` : ""}. ${advice}`;
  return new CloudError(
    code,
    message,
    { service: req.service, resource: req.resource, status: response.status, requestId },
    { secrets: ctx.secrets() },
  );
}

export function unreachable(ctx: HttpContext, req: HttpRequest, error: unknown): CloudError {
  return new CloudError(
    "CLOUD_UNAVAILABLE",
    `${req.service} ${req.resource}: no connection to ${originOf(req.url)} (${causeText(error)}) on ` +
      `${req.method} ${pathOf(req.url)}. Check that the service runs and that the catalog's endpoint is reachable ` +
      "from this machine.",
    { service: req.service, resource: req.resource },
    { cause: error, secrets: ctx.secrets() },
  );
}

export function timeout(ctx: HttpContext, req: HttpRequest, ms: number, error: unknown): CloudError {
  return new CloudError(
    "CLOUD_TIMEOUT",
    `${req.service} ${req.resource}: no response within ${ms / 1000} s on ${req.method} ${pathOf(req.url)} ` +
      `from ${originOf(req.url)}. The service may be overloaded; retry later.`,
    { service: req.service, resource: req.resource },
    { cause: error, secrets: ctx.secrets() },
  );
}

export function aborted(ctx: HttpContext, req: HttpRequest, error: unknown): CofferError {
  return new CofferError("ABORTED", `${req.service} ${req.resource}: cancelled`, {
    cause: error,
    secrets: ctx.secrets(),
  });
}

/**
 * "ECONNREFUSED 127.0.0.1:8776" from fetch's TypeError("fetch failed", { cause }). isNativeError, not
 * instanceof: fetch's errors come from Node's own realm, not the one of a vm context (Jest, Pulumi closures).
 */
export function causeText(error: unknown): string {
  const cause = isNativeError(error) && isNativeError(error.cause) ? error.cause : error;
  if (!isNativeError(cause)) return String(cause);
  const code = (cause as NodeJS.ErrnoException).code;
  return code && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message;
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url;
  }
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}
