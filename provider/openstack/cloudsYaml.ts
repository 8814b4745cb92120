import { readFile } from "node:fs/promises";
import * as path from "node:path";
import { parse } from "yaml";
import { CofferError } from "../common/errors";

/** Where clouds.yaml and secure.yaml are looked for (openstacksdk's search path on Linux). */
export interface CloudFilePlaces {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  readonly home: string;
  /** /etc/openstack unless a test says otherwise. */
  readonly systemDir: string;
}

export interface CloudEntry {
  readonly name: string;
  /** The cloud's entry with secure.yaml's values merged over it. */
  readonly entry: Readonly<Record<string, unknown>>;
  readonly file: string;
  readonly secureFile?: string;
}

const suffixes = [".yaml", ".yml", ".json"];

/** The candidate files for `base` ("clouds" or "secure"), first found wins. */
export function searchPath(base: "clouds" | "secure", places: CloudFilePlaces): string[] {
  const override = places.env[base === "clouds" ? "OS_CLIENT_CONFIG_FILE" : "OS_CLIENT_SECURE_FILE"];
  const userDir = places.env.XDG_CONFIG_HOME || path.join(places.home, ".config");
  const dirs = [places.cwd, path.join(userDir, "openstack"), places.systemDir];
  const files = dirs.flatMap((dir) => suffixes.map((suffix) => path.join(dir, base + suffix)));
  return override ? [override, ...files] : files;
}

/** The entry of cloud `name`, with secure.yaml merged over clouds.yaml as openstacksdk does. */
export async function loadCloudEntry(name: string, places: CloudFilePlaces, nameSource: string): Promise<CloudEntry> {
  const cloudsFiles = searchPath("clouds", places);
  const clouds = await firstDocument(cloudsFiles);
  if (!clouds) {
    throw new CofferError(
      "CLOUD_CONFIG_INVALID",
      `${nameSource} names cloud "${name}", but no clouds.yaml was found (looked for ${cloudsFiles.join(", ")}). ` +
        "Create one, or set OS_CLIENT_CONFIG_FILE to its path.",
    );
  }
  const secure = await firstDocument(searchPath("secure", places));
  const entry = deepMerge(cloudsOf(clouds.doc)[name], secure ? cloudsOf(secure.doc)[name] : undefined);
  if (!isRecord(entry)) {
    const known = Object.keys(cloudsOf(clouds.doc));
    throw new CofferError(
      "CLOUD_CONFIG_INVALID",
      `${nameSource} names cloud "${name}", which ${clouds.file} does not list ` +
        `(it lists: ${known.length ? known.join(", ") : "none"}). Correct the name or add the cloud.`,
    );
  }
  return { name, entry, file: clouds.file, secureFile: secure?.file };
}

/** The value at a dotted path ("auth.auth_url") as a string, if it is a scalar. */
export function entryValue(entry: Readonly<Record<string, unknown>>, dotted: string): string | undefined {
  let value: unknown = entry;
  for (const part of dotted.split(".")) value = isRecord(value) ? value[part] : undefined;
  return typeof value === "string" || typeof value === "number" || typeof value === "boolean"
    ? String(value)
    : undefined;
}

async function firstDocument(files: readonly string[]): Promise<{ file: string; doc: unknown } | undefined> {
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new CofferError("CLOUD_CONFIG_INVALID", `cannot read ${file}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    try {
      return { file, doc: parse(text) };
    } catch (error) {
      // The parser's message quotes the offending line, which may hold a password.
      throw new CofferError("CLOUD_CONFIG_INVALID", `${file} is not valid YAML; check its indentation and quoting.`);
    }
  }
  return undefined;
}

function cloudsOf(doc: unknown): Record<string, unknown> {
  return isRecord(doc) && isRecord(doc.clouds) ? doc.clouds : {};
}

function deepMerge(base: unknown, over: unknown): unknown {
  if (over === undefined) return base;
  if (!isRecord(base) || !isRecord(over)) return over;
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) merged[key] = deepMerge(base[key], value);
  return merged;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
