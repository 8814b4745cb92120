/**
 * The one error type Coffer throws. Shape (data first, message second):
 * - `code`: a stable machine-readable reason, e.g. "TARGET_UNREACHABLE";
 * - `field`: the input property it concerns, dotted ("target.path"), when there is one;
 * - `shortMessage`: what went wrong and how to fix it, already redacted;
 * - `message`: `shortMessage` prefixed with the field;
 * - `cause`: the underlying error, redacted the same way.
 * Detect it with `isCofferError`, which works across copies of this module.
 */
const brand = Symbol.for("coffer.error");

export type CofferErrorCode =
  | "INVALID_INPUT"
  | "TARGET_UNREACHABLE"
  | "ZONE_OWNED_ELSEWHERE"
  | "DOCUMENT_UNREADABLE"
  | "STATE_FROM_NEWER_VERSION"
  | "IO_FAILED"
  | "SOURCE_MISSING"
  | "SOURCE_LOCKED"
  | "WRONG_PASSPHRASE"
  | "WRONG_KEY"
  | "DISK_FULL"
  | "HOST_UNREACHABLE"
  /** The provider and a host's coffer-agent are of different Coffer versions. */
  | "AGENT_PROTOCOL_MISMATCH"
  /** A remote host can't run this provider's coffer-agent (no Node.js, too old a one, the agent not installable). */
  | "AGENT_UNAVAILABLE"
  | "QEMU_FAILED"
  | "VERIFY_FAILED"
  | "MANIFEST_TAMPERED"
  | "ESCROW_EXISTS"
  | "ESCROW_IN_USE"
  | "ABORTED"
  /** OpenStack: the cloud settings (stack config, OS_* variables, clouds.yaml) are incomplete or contradictory. */
  | "CLOUD_CONFIG_INVALID"
  /** OpenStack: HTTP 401, the credentials were refused. */
  | "CLOUD_AUTH_FAILED"
  /** OpenStack: HTTP 403, the user's roles or the cloud's policy do not allow the call. */
  | "CLOUD_FORBIDDEN"
  /** OpenStack: HTTP 404. */
  | "CLOUD_NOT_FOUND"
  /** OpenStack: HTTP 409, the resource is busy or in a state that refuses the call. */
  | "CLOUD_CONFLICT"
  /** OpenStack: HTTP 413, or 429 still after the retries: a quota or rate limit. */
  | "CLOUD_QUOTA"
  /** OpenStack: HTTP 400, 406 and other 4xx: the cloud rejected the request itself. */
  | "CLOUD_BAD_REQUEST"
  /** OpenStack: HTTP 5xx or no connection, after the retries. */
  | "CLOUD_UNAVAILABLE"
  /** OpenStack: a request or a wait for a status took too long. */
  | "CLOUD_TIMEOUT"
  /** OpenStack: a response that is not what the API reference describes. */
  | "CLOUD_BAD_RESPONSE"
  /** OpenStack: a resource went to an error status (e.g. a backup in "error"). */
  | "CLOUD_RESOURCE_FAILED";

export class CofferError extends Error {
  readonly code: CofferErrorCode;
  readonly field?: string;
  readonly shortMessage: string;

  constructor(
    code: CofferErrorCode,
    shortMessage: string,
    options: { field?: string; cause?: unknown; secrets?: readonly string[] } = {},
  ) {
    const secrets = options.secrets ?? [];
    const short = redact(shortMessage, secrets);
    super(
      options.field ? `${options.field}: ${short}` : short,
      options.cause === undefined ? undefined : { cause: redactError(options.cause, secrets) },
    );
    this.code = code;
    this.field = options.field;
    this.shortMessage = short;
    Object.defineProperty(this, brand, { value: true });
  }
}
Object.defineProperty(CofferError.prototype, "name", { value: "CofferError", enumerable: false });

export function isCofferError(value: unknown): value is CofferError {
  return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[brand] === true;
}

/** Replaces every occurrence of each secret with "[secret]". Empty strings are ignored. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret) out = out.split(secret).join("[secret]");
  }
  return out;
}

/** A copy of `error` whose message and stack carry no secret; non-errors become strings. */
export function redactError(error: unknown, secrets: readonly string[]): Error {
  if (!(error instanceof Error)) return new Error(redact(String(error), secrets));
  const copy = new Error(redact(error.message, secrets));
  copy.name = error.name;
  copy.stack = error.stack === undefined ? undefined : redact(error.stack, secrets);
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined) (copy as NodeJS.ErrnoException).code = code;
  return copy;
}
