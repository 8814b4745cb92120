import { z } from "zod";
import { CloudError } from "./cloudError";
import type { CloudConfig, DomainRef, Scope, UserRef } from "./config";
import { request, type HttpContext } from "./http";

const endpointSchema = z.object({
  interface: z.string(),
  region: z.string().nullish(),
  region_id: z.string().nullish(),
  url: z.string(),
});
const catalogEntrySchema = z.object({
  type: z.string(),
  name: z.string().nullish(),
  endpoints: z.array(endpointSchema),
});
export type CatalogEntry = z.infer<typeof catalogEntrySchema>;

const tokenBodySchema = z.object({
  token: z.object({
    expires_at: z.string(),
    user: z.object({ id: z.string(), name: z.string().nullish() }),
    project: z.object({ id: z.string(), name: z.string().nullish() }).nullish(),
    domain: z.object({ id: z.string(), name: z.string().nullish() }).nullish(),
    catalog: z.array(catalogEntrySchema).nullish(),
  }),
});

export interface Token {
  /** The X-Subject-Token header: a secret. */
  readonly value: string;
  readonly expiresAtMs: number;
  readonly userId: string;
  readonly projectId?: string;
  readonly catalog: readonly CatalogEntry[];
}

/** Issues a token with POST /v3/auth/tokens (password or application credential). */
export async function issueToken(http: HttpContext, config: CloudConfig): Promise<Token> {
  const req = {
    service: "keystone",
    resource: `token for ${describeIdentity(config)}`,
    method: "POST" as const,
    url: `${config.authUrl.replace(/\/$/, "")}/auth/tokens`,
    json: authBody(config),
    idempotent: true, // issuing a second token is harmless
    authenticates: true,
  };
  const { body, headers, status } = await request(http, req, tokenBodySchema);
  const value = headers.get("x-subject-token");
  const expiresAtMs = Date.parse(body.token.expires_at);
  if (!value || Number.isNaN(expiresAtMs)) {
    throw new CloudError(
      "CLOUD_BAD_RESPONSE",
      `keystone ${req.resource}: HTTP ${status} without ` +
        `${value ? "a readable expires_at" : "an X-Subject-Token header"}; ` +
        `is ${config.authUrl} Keystone's v3 API?`,
      { service: "keystone", resource: req.resource, status },
      { secrets: [...http.secrets(), ...(value ? [value] : [])] },
    );
  }
  return {
    value,
    expiresAtMs,
    userId: body.token.user.id,
    projectId: body.token.project?.id,
    catalog: body.token.catalog ?? [],
  };
}

/** The body of POST /v3/auth/tokens for `config`. */
export function authBody(config: CloudConfig): unknown {
  const identity = config.identity;
  if (identity.kind === "applicationCredential") {
    const credential =
      "id" in identity.credential
        ? { id: identity.credential.id, secret: identity.secret }
        : { name: identity.credential.name, user: userBody(identity.credential.user), secret: identity.secret };
    return { auth: { identity: { methods: ["application_credential"], application_credential: credential } } };
  }
  const password = { user: { ...userBody(identity.user), password: identity.password } };
  return {
    auth: {
      identity: { methods: ["password"], password },
      ...(config.scope ? { scope: scopeBody(config.scope) } : {}),
    },
  };
}

function userBody(user: UserRef): object {
  return "id" in user ? { id: user.id } : { name: user.name, domain: domainBody(user.domain) };
}

function domainBody(domain: DomainRef): object {
  return "id" in domain ? { id: domain.id } : { name: domain.name };
}

function scopeBody(scope: Scope): object {
  if ("domain" in scope) return { domain: domainBody(scope.domain) };
  const project = scope.project;
  return { project: "id" in project ? { id: project.id } : { name: project.name, domain: domainBody(project.domain) } };
}

/** "user demo in project demo", for messages; never a secret. */
export function describeIdentity(config: CloudConfig): string {
  const identity = config.identity;
  if (identity.kind === "applicationCredential") {
    const credential = identity.credential;
    return "id" in credential
      ? `application credential ${credential.id}`
      : `application credential ${credential.name} of user ${describeUser(credential.user)}`;
  }
  const scope = config.scope;
  const where = !scope
    ? ""
    : "domain" in scope
      ? ` in domain ${describeDomain(scope.domain)}`
      : ` in project ${"id" in scope.project ? scope.project.id : scope.project.name}`;
  return `user ${describeUser(identity.user)}${where}`;
}

function describeUser(user: UserRef): string {
  return "id" in user ? user.id : user.name;
}

function describeDomain(domain: DomainRef): string {
  return "id" in domain ? domain.id : domain.name;
}
