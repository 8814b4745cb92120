/** Resolves cloud settings from the stack, OS_* variables and clouds.yaml, field by field. */
import * as os from "node:os";
import { entryValue, loadCloudEntry, type CloudEntry } from "./cloudsYaml";
import { checkCloudSettings, isAppCredential } from "./configCheck";
import type { CloudConfig } from "./configTypes";
import { spellings, type CloudSettings, type SettingName } from "./settings";

export type { CloudSettings } from "./settings";
export type * from "./configTypes";

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

function entries(): [SettingName, (typeof spellings)[SettingName]][] {
  return Object.entries(spellings) as [SettingName, (typeof spellings)[SettingName]][];
}
