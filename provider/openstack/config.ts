import * as os from "node:os";
import { CofferError } from "../common/errors";
import { entryValue, loadCloudEntry, type CloudEntry } from "./cloudsYaml";
import { howToSet, secretSettings, spellings, type CloudSettings, type SettingName } from "./settings";

export type { CloudSettings } from "./settings";

export type DomainRef = { readonly id: string } | { readonly name: string };
export type UserRef = { readonly id: string } | { readonly name: string; readonly domain: DomainRef };

export type Identity =
  | { readonly kind: "password"; readonly user: UserRef; readonly password: string }
  | {
      readonly kind: "applicationCredential";
      readonly credential: { readonly id: string } | { readonly name: string; readonly user: UserRef };
      readonly secret: string;
    };

/** Application credentials carry their own scope, so they have none here. */
export type Scope =
  | { readonly project: { readonly id: string } | { readonly name: string; readonly domain: DomainRef } }
  | { readonly domain: DomainRef };

export type EndpointInterface = "public" | "internal" | "admin";

/** A complete, checked description of how to reach and authenticate to one cloud. */
export interface CloudConfig {
  /** The Keystone v3 URL, ending in /v3. */
  readonly authUrl: string;
  readonly identity: Identity;
  readonly scope?: Scope;
  readonly region?: string;
  readonly interface: EndpointInterface;
  readonly cacertFile?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly insecure: boolean;
  readonly maxRetries: number;
  /** The password or application-credential secret: redacted from every error and log line. */
  readonly secrets: readonly string[];
}

export interface ConfigSources {
  /** The stack's config, e.g. `(key) => req.config.get(key)` in `configure`; called with "openstack:authUrl". */
  readonly stack?: (key: string) => string | undefined;
  /** Default: process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** For clouds.yaml's search path; defaults: process.cwd(), os.homedir(), /etc/openstack. */
  readonly cwd?: string;
  readonly home?: string;
  readonly systemDir?: string;
}

interface Layer {
  readonly label: (name: SettingName) => string;
  readonly values: CloudSettings;
}

/** Settings that name one thing two ways: the first source that sets either member wins both. */
const choices: readonly (readonly SettingName[])[] = [
  ["userName", "userId"],
  ["projectName", "projectId"],
  ["projectDomainName", "projectDomainId"],
  ["userDomainName", "userDomainId"],
  ["domainName", "domainId"],
  ["applicationCredentialId", "applicationCredentialName"],
];
const credentialSettings: readonly SettingName[] = [
  "userName",
  "userId",
  "password",
  "applicationCredentialId",
  "applicationCredentialName",
  "applicationCredentialSecret",
];

/**
 * Resolves the cloud settings field by field, the stack's `openstack:*` keys first, then `OS_*`
 * variables, then the clouds.yaml entry named by openstack:cloud or OS_CLOUD, and checks them.
 */
export async function resolveCloudConfig(sources: ConfigSources = {}): Promise<CloudConfig> {
  const env = sources.env ?? process.env;
  const stack = stackLayer(sources.stack);
  const fromEnv = envLayer(env);
  const stackCloud = sources.stack?.("openstack:cloud");
  const cloudName = stackCloud || env.OS_CLOUD;
  const layers = [stack, fromEnv];
  if (cloudName) {
    const places = {
      env,
      cwd: sources.cwd ?? process.cwd(),
      home: sources.home ?? os.homedir(),
      systemDir: sources.systemDir ?? "/etc/openstack",
    };
    const entry = await loadCloudEntry(cloudName, places, stackCloud ? "openstack:cloud" : "OS_CLOUD");
    layers.push(yamlLayer(entry));
  }
  return checkCloudSettings(mergeLayers(layers), (name) => labelOf(layers, name));
}

/** A CloudConfig from settings given directly, e.g. by a test: `{ authUrl, userName, password, projectName }`. */
export function cloudConfig(settings: CloudSettings): CloudConfig {
  return checkCloudSettings(settings, (name) => name);
}

function stackLayer(get: ConfigSources["stack"]): Layer {
  const values: CloudSettings = {};
  for (const [name, spelling] of entries()) {
    const value = spelling.stack && get ? get(`openstack:${spelling.stack}`) : undefined;
    if (value !== undefined && value !== "") values[name] = value;
  }
  return { label: (name) => `openstack:${spellings[name].stack}`, values };
}

function envLayer(env: Readonly<Record<string, string | undefined>>): Layer {
  const values: CloudSettings = {};
  const used: Partial<Record<SettingName, string>> = {};
  for (const [name, spelling] of entries()) {
    const variable = spelling.env.find((candidate) => env[candidate]);
    if (variable) {
      values[name] = env[variable];
      used[name] = variable;
    }
  }
  return { label: (name) => used[name] ?? spellings[name].env[0], values };
}

function yamlLayer(cloud: CloudEntry): Layer {
  const values: CloudSettings = {};
  const used: Partial<Record<SettingName, string>> = {};
  for (const [name, spelling] of entries()) {
    const key = spelling.yaml.find((candidate) => entryValue(cloud.entry, candidate) !== undefined);
    if (key) {
      values[name] = entryValue(cloud.entry, key);
      used[name] = key;
    }
  }
  if (values.insecure === undefined && entryValue(cloud.entry, "verify") === "false") values.insecure = "true";
  const regions = cloud.entry.regions;
  if (values.region === undefined && Array.isArray(regions) && regions.length) {
    const first: unknown = regions[0];
    const region = typeof first === "string" ? first : (first as { name?: unknown })?.name;
    if (typeof region === "string") values.region = region;
  }
  const file = cloud.secureFile ? `${cloud.file} (+ ${cloud.secureFile})` : cloud.file;
  return { label: (name) => `${used[name] ?? spellings[name].yaml[0]} of cloud "${cloud.name}" in ${file}`, values };
}

function mergeLayers(layers: readonly Layer[]): CloudSettings {
  const merged: CloudSettings = {};
  const grouped = new Set(choices.flat());
  for (const [name] of entries()) {
    if (grouped.has(name)) continue;
    merged[name] = layers.find((layer) => layer.values[name] !== undefined)?.values[name];
  }
  for (const group of choices) {
    const winner = layers.find((layer) => group.some((name) => layer.values[name] !== undefined));
    for (const name of group) merged[name] = winner?.values[name];
  }
  // The kind of credential comes from the first source that gives any credential.
  const credentials = layers.find((layer) => credentialSettings.some((name) => layer.values[name] !== undefined));
  if (credentials && isAppCredential(credentials.values)) {
    merged.applicationCredentialId = credentials.values.applicationCredentialId;
    merged.applicationCredentialName = credentials.values.applicationCredentialName;
  } else if (credentials) {
    merged.applicationCredentialId = merged.applicationCredentialName = undefined;
  }
  return merged;
}

function labelOf(layers: readonly Layer[], name: SettingName): string {
  const layer = layers.find((candidate) => candidate.values[name] !== undefined);
  return layer ? layer.label(name) : name;
}

function isAppCredential(values: CloudSettings): boolean {
  return Boolean(
    values.applicationCredentialId ||
    values.applicationCredentialName ||
    values.authType?.includes("applicationcredential"),
  );
}

function entries(): [SettingName, (typeof spellings)[SettingName]][] {
  return Object.entries(spellings) as [SettingName, (typeof spellings)[SettingName]][];
}

function invalid(message: string, secrets: readonly string[] = []): CofferError {
  return new CofferError("CLOUD_CONFIG_INVALID", message, { secrets });
}

/** Checks merged settings; `label` names where a value came from, for messages about it. */
function checkCloudSettings(s: CloudSettings, label: (name: SettingName) => string): CloudConfig {
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
