import { CofferError, type CofferErrorCode } from "../common/errors";

/**
 * A CofferError from an OpenStack call, with the facts as fields (data first): the service, the
 * resource, the HTTP status and the request id that the cloud's operators can grep their logs for.
 */
export class CloudError extends CofferError {
  readonly service: string;
  readonly resource: string;
  readonly status?: number;
  readonly requestId?: string;

  constructor(
    code: CofferErrorCode,
    shortMessage: string,
    facts: { service: string; resource: string; status?: number; requestId?: string },
    options: { cause?: unknown; secrets?: readonly string[] } = {},
  ) {
    super(code, shortMessage, options);
    this.service = facts.service;
    this.resource = facts.resource;
    this.status = facts.status;
    this.requestId = facts.requestId;
  }
}

const requestIdHeaders = ["x-openstack-request-id", "x-compute-request-id", "openstack-request-id"];

export function requestIdOf(headers: Headers): string | undefined {
  for (const name of requestIdHeaders) {
    const value = headers.get(name);
    if (value) return value;
  }
  return undefined;
}

const maxMessageLength = 400;

/**
 * The server's own explanation from an OpenStack error body: Nova/Cinder `{"itemNotFound": {"message"}}`,
 * Keystone `{"error": {"message"}}`, Barbican `{"title", "description"}`, Glance's webob text or HTML.
 */
export function serverMessageOf(bodyText: string): string | undefined {
  const text = bodyText.trim();
  if (!text) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return clip(stripHtml(text));
  }
  return clip(messageIn(parsed) ?? text);
}

function messageIn(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  for (const key of ["message", "description", "faultstring", "detail", "title"]) {
    const found = record[key];
    if (typeof found === "string" && found.trim()) return stripHtml(found);
  }
  const keys = Object.keys(record);
  if (keys.length === 1) return messageIn(record[keys[0]]);
  for (const key of ["error", "errors", "NeutronError", "conflictingRequest", "badRequest"]) {
    if (key in record) return messageIn(Array.isArray(record[key]) ? (record[key] as unknown[])[0] : record[key]);
  }
  return undefined;
}

function stripHtml(text: string): string {
  return text
    .replace(/<title>.*?<\/title>/is, "")
    .replace(/<[^>]+>/g, " ")
    .replace(/\s+/g, " ")
    .trim();
}

function clip(text: string): string {
  return text.length > maxMessageLength ? `${text.slice(0, maxMessageLength)}…` : text;
}

/** The error code and the advice for an HTTP status. */
export function classifyStatus(status: number): { code: CofferErrorCode; advice: string } {
  if (status === 401) {
    return {
      code: "CLOUD_AUTH_FAILED",
      advice:
        "Check the credentials (openstack:userName/password or the application credential) and that the user " +
        "has a role on the project.",
    };
  }
  if (status === 403) {
    return {
      code: "CLOUD_FORBIDDEN",
      advice: "The user's roles or the cloud's policy do not allow this; ask the cloud's operators for the role.",
    };
  }
  if (status === 404) {
    return {
      code: "CLOUD_NOT_FOUND",
      advice: "It was deleted, or it belongs to another project or region than the one configured.",
    };
  }
  if (status === 409) {
    return {
      code: "CLOUD_CONFLICT",
      advice: "The resource is busy or in a status that refuses this; wait for its current operation and retry.",
    };
  }
  if (status === 413 || status === 429) {
    return {
      code: "CLOUD_QUOTA",
      advice: "A quota or rate limit was hit; free resources, raise the project's quota, or retry later.",
    };
  }
  if (status === 406) {
    return {
      code: "CLOUD_BAD_REQUEST",
      advice: "The cloud does not support the API microversion Coffer needs; the service is too old.",
    };
  }
  if (status >= 500) {
    return {
      code: "CLOUD_UNAVAILABLE",
      advice: "The service failed; retry later, and give its operators the request id to find it in their logs.",
    };
  }
  return {
    code: "CLOUD_BAD_REQUEST",
    advice: "The cloud rejected the request; the server's message says which part.",
  };
}
