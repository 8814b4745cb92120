import { CofferError } from "../common/errors";
import type { CloudConfig, DomainRef, EndpointInterface, Identity, Scope, UserRef } from "./configTypes";
import { howToSet, secretSettings, type CloudSettings, type SettingName } from "./settings";

/** Application credentials are chosen by an id or a name (or clouds.yaml's auth_type). */
export function isAppCredential(values: CloudSettings): boolean {
  return Boolean(
    values.applicationCredentialId ||
    values.applicationCredentialName ||
    values.authType?.includes("applicationcredential"),
  );
}

function invalid(message: string, secrets: readonly string[] = []): CofferError {
  return new CofferError("CLOUD_CONFIG_INVALID", message, { secrets });
}

/** Checks merged settings; `label` names where a value came from, for messages about it. */
export function checkCloudSettings(s: CloudSettings, label: (name: SettingName) => string): CloudConfig {
  const secrets = secretSettings.map((name) => s[name]).filter((value): value is string => Boolean(value));
  if (!s.authUrl) throw invalid(`no auth URL: ${howToSet("authUrl")}`);
  if (s.authType && !/^(v3)?(password|applicationcredential)$/.test(s.authType)) {
    throw invalid(
      `${label("authType")} is "${s.authType}"; Coffer authenticates with "password" or "v3applicationcredential".`,
    );
  }
  const identity = isAppCredential(s) ? appCredentialIdentity(s) : passwordIdentity(s);
  return {
    authUrl: keystoneV3Url(s.authUrl, label("authUrl")),
    identity,
    scope: identity.kind === "password" ? scopeOf(s) : undefined,
    region: s.region || undefined,
    interface: interfaceOf(s.endpointType, label("endpointType")),
    cacertFile: s.cacertFile,
    cert: s.cert,
    key: s.key,
    insecure: booleanOf(s.insecure, label("insecure")),
    maxRetries: retriesOf(s.maxRetries, label("maxRetries")),
    secrets,
  };
}

function passwordIdentity(s: CloudSettings): Identity {
  if (!s.userId && !s.userName) throw invalid(`no user: ${howToSet("userName")} (or the user's id: userId)`);
  if (!s.password) throw invalid(`no password for user ${s.userName ?? s.userId}: ${howToSet("password")}`);
  return { kind: "password", user: userOf(s), password: s.password };
}

function appCredentialIdentity(s: CloudSettings): Identity {
  if (!s.applicationCredentialSecret) {
    throw invalid(`no application credential secret: ${howToSet("applicationCredentialSecret")}`);
  }
  if (s.applicationCredentialId) {
    return {
      kind: "applicationCredential",
      credential: { id: s.applicationCredentialId },
      secret: s.applicationCredentialSecret,
    };
  }
  if (!s.userId && !s.userName) {
    throw invalid(
      `application credential "${s.applicationCredentialName}" is named, not given by id, so its user is needed: ` +
        `${howToSet("userName")}, or give ${howToSet("applicationCredentialId")}`,
    );
  }
  const name = s.applicationCredentialName as string;
  return {
    kind: "applicationCredential",
    credential: { name, user: userOf(s) },
    secret: s.applicationCredentialSecret,
  };
}

function userOf(s: CloudSettings): UserRef {
  if (s.userId) return { id: s.userId };
  return { name: s.userName as string, domain: domainOf(s.userDomainId, s.userDomainName, s) };
}

/** The specific domain, else domainId/domainName, else defaultDomain, else Keystone's "default". */
function domainOf(id: string | undefined, name: string | undefined, s: CloudSettings): DomainRef {
  if (id) return { id };
  if (name) return { name };
  if (s.domainId) return { id: s.domainId };
  if (s.domainName) return { name: s.domainName };
  return { id: s.defaultDomain || "default" };
}

function scopeOf(s: CloudSettings): Scope {
  if (s.projectId) return { project: { id: s.projectId } };
  if (s.projectName) {
    return { project: { name: s.projectName, domain: domainOf(s.projectDomainId, s.projectDomainName, s) } };
  }
  if (s.domainId) return { domain: { id: s.domainId } };
  if (s.domainName) return { domain: { name: s.domainName } };
  throw invalid(
    `no project: ${howToSet("projectName")} (or the project's id: ${howToSet("projectId")}). ` +
      "Volumes, images and secrets live in a project.",
  );
}

function keystoneV3Url(raw: string, source: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(`${source} is "${raw}", which is not a URL; it looks like http://keystone.example:5000/v3.`);
  }
  const pathname = url.pathname.replace(/\/+$/, "");
  if (/\/v2(\.0)?$/.test(pathname)) {
    throw invalid(`${source} is "${raw}", Keystone's v2 API; Coffer needs v3: end the URL with /v3.`);
  }
  url.pathname = /\/v3$/.test(pathname) ? pathname : `${pathname}/v3`;
  return url.toString();
}

function interfaceOf(raw: string | undefined, source: string): EndpointInterface {
  if (!raw) return "public";
  const normalized = raw.toLowerCase().replace(/url$/, "");
  if (normalized === "public" || normalized === "internal" || normalized === "admin") return normalized;
  throw invalid(`${source} is "${raw}"; use public, internal or admin.`);
}

function booleanOf(raw: string | undefined, source: string): boolean {
  if (raw === undefined || raw === "") return false;
  if (/^(true|1|yes)$/i.test(raw)) return true;
  if (/^(false|0|no)$/i.test(raw)) return false;
  throw invalid(`${source} is "${raw}"; use true or false.`);
}

function retriesOf(raw: string | undefined, source: string): number {
  if (raw === undefined || raw === "") return 3;
  if (/^\d+$/.test(raw) && Number(raw) <= 20) return Number(raw);
  throw invalid(`${source} is "${raw}"; use a whole number from 0 to 20.`);
}
