/**
 * coffer: what a person needs without Pulumi, with the backup files and the key.
 *   coffer restore --manifest <path> --item <name> --to <file> [--format raw|qcow2]
 *   coffer verify  --manifest <path> [--full]
 *   coffer escrow recover --store <dir> --id <record> --key <private.pem> [--key ...] [--version N] [--out <file>]
 * The passphrase (encrypted sets) or manifest key (unencrypted sets) comes from
 * --passphrase-file / --manifest-key-file, from stdin with --passphrase-stdin, or from
 * COFFER_PASSPHRASE / COFFER_MANIFEST_KEY; never from the command line.
 * Exit codes: 0 done, 1 failed (verification, restore), 2 usage.
 */
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { CofferError, isCofferError } from "../common/errors";
import { verifySet } from "../agent/backupSet";
import { fileSha256, restoreImage, sourceImageOpts, streamSha256 } from "../agent/image";
import { openManifest } from "../agent/manifest";
import { sweepTempLeftovers, withSecretFd } from "../agent/tempFiles";
import { writeFileAtomic } from "../common/atomicFile";
import { recoverSecret } from "../escrow/record";

async function escrow(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "recover") throw new UsageError(`unknown escrow command "${sub ?? ""}"`);
  const { values } = parseArgs({
    args: rest,
    options: { store: { type: "string" }, id: { type: "string" }, key: { type: "string", multiple: true }, version: { type: "string" }, out: { type: "string" } },
  });
  if (!values.store || !values.id || !values.key?.length) throw new UsageError("escrow recover needs --store, --id and at least one --key");
  const version = values.version === undefined ? undefined : Number(values.version);
  if (version !== undefined && !(Number.isInteger(version) && version >= 1)) throw new UsageError("--version is a whole number from 1");
  const keys = await Promise.all(values.key.map((file) => fs.readFile(file, "utf8").catch(() => {
    throw new UsageError(`--key ${file} can't be read`);
  })));
  const secret = await recoverSecret(path.resolve(values.store), values.id, keys, version);
  if (values.out) {
    await writeFileAtomic(path.resolve(values.out), secret);
    process.stderr.write(`coffer: wrote the secret of ${values.id} to ${values.out} (mode 0600)\n`);
  } else {
    process.stdout.write(secret + "\n");
  }
  return 0;
}

const USAGE = `usage:
  coffer restore --manifest <manifest.json> --item <name> --to <file> [--format raw|qcow2] [key options]
  coffer verify  --manifest <manifest.json> [--full] [key options]
  coffer escrow recover --store <dir> --id <record> --key <private.pem> [--key ...] [--version N] [--out <file>]
      prints the escrowed secret, or writes it to <file> (mode 0600); a threshold record needs that many --key
key options (never the key itself on the command line):
  --passphrase-file <file> | --passphrase-stdin | COFFER_PASSPHRASE      encrypted sets
  --manifest-key-file <file> | COFFER_MANIFEST_KEY                        unencrypted sets`;

class UsageError extends Error {}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
}

async function secretFrom(file: string | undefined, stdin: boolean, envName: string): Promise<string | undefined> {
  if (file) return (await fs.readFile(file, "utf8")).replace(/\r?\n$/, "");
  if (stdin) return readStdin();
  return process.env[envName] || undefined;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    // A killed restore or verify may have left a read-back server or a key folder.
    await sweepTempLeftovers();
    if (command === "escrow") return await escrow(rest);
    const { values } = parseArgs({
      args: rest,
      options: {
        manifest: { type: "string" },
        item: { type: "string" },
        to: { type: "string" },
        format: { type: "string", default: "raw" },
        full: { type: "boolean", default: false },
        "passphrase-file": { type: "string" },
        "passphrase-stdin": { type: "boolean", default: false },
        "manifest-key-file": { type: "string" },
      },
    });
    if (!values.manifest) throw new UsageError("--manifest is required");
    const manifestPath = path.resolve(values.manifest);
    const text = await fs.readFile(manifestPath, "utf8").catch(() => {
      throw new CofferError("SOURCE_MISSING", `${manifestPath} can't be read: check the path`);
    });
    const unsigned = openManifest(text, undefined);
    if (!unsigned.ok) throw new CofferError("VERIFY_FAILED", unsigned.problem);
    const passphrase = await secretFrom(values["passphrase-file"], values["passphrase-stdin"], "COFFER_PASSPHRASE");
    const manifestKey = await secretFrom(values["manifest-key-file"], false, "COFFER_MANIFEST_KEY");
    const manifestSecret = unsigned.manifest.keySource === "passphrase" ? passphrase : manifestKey;
    if (!manifestSecret) {
      const escrow = unsigned.manifest.escrow;
      throw new UsageError(
        unsigned.manifest.keySource === "passphrase"
          ? "this set is encrypted: give its passphrase with --passphrase-file, --passphrase-stdin or COFFER_PASSPHRASE" +
              (escrow
                ? `\nits passphrase is escrowed: coffer escrow recover --store ${escrow.store} --id ${escrow.recordId} --version ${escrow.version} --key <private.pem> --out <file>, then --passphrase-file <file>`
                : "")
          : "give the policy's manifest key with --manifest-key-file or COFFER_MANIFEST_KEY, so the manifest can be checked",
      );
    }
    const setDir = path.dirname(manifestPath);

    if (command === "verify") {
      const result = await verifySet(setDir, values.full ? "full" : "metadata", { manifestSecret, passphrase });
      const { manifest: _m, ...report } = result;
      process.stdout.write(JSON.stringify(report, null, 2) + "\n");
      return result.status === "ok" ? 0 : 1;
    }

    if (command === "restore") {
      if (!values.item || !values.to) throw new UsageError("restore needs --item and --to");
      if (values.format !== "raw" && values.format !== "qcow2") throw new UsageError('--format is "raw" or "qcow2"');
      const opened = openManifest(text, manifestSecret);
      if (!opened.ok || !opened.authentic) throw new CofferError("MANIFEST_TAMPERED", "the manifest's HMAC does not match: it was changed, or this is not the set's key");
      const item = opened.manifest.items.find((i) => i.name === values.item);
      if (!item) throw new UsageError(`no item "${values.item}" in this set (it has: ${opened.manifest.items.map((i) => i.name).join(", ")})`);
      const file = path.join(setDir, item.file);
      if ((await fileSha256(file)) !== item.fileSha256) throw new CofferError("VERIFY_FAILED", `${item.file} has changed since the backup: restore from another set`);
      const to = path.resolve(values.to);
      const partial = path.join(path.dirname(to), `.${path.basename(to)}.partial-${process.pid}`);
      try {
        await withSecretFd(passphrase ?? "", async (key) => {
          await restoreImage(file, item.encrypted, key, partial, values.format as "raw" | "qcow2", `item ${item.name}`);
        });
        // What was written must be what was backed up, before it gets the name asked for.
        const restored = await streamSha256(sourceImageOpts(partial, values.format as "raw" | "qcow2"), undefined, `restored ${item.name}`);
        if (restored !== item.streamSha256) throw new CofferError("VERIFY_FAILED", `the restored data of ${item.name} differs from what was backed up`);
        await fs.rename(partial, to);
      } finally {
        await fs.rm(partial, { force: true });
      }
      process.stdout.write(JSON.stringify({ restored: item.name, to, format: values.format, sha256: item.streamSha256 }) + "\n");
      return 0;
    }
    throw new UsageError(`unknown command "${command ?? ""}"`);
  } catch (error) {
    if (error instanceof UsageError || (error as NodeJS.ErrnoException).code?.startsWith?.("ERR_PARSE_ARGS")) {
      process.stderr.write(`coffer: ${(error as Error).message}\n${USAGE}\n`);
      return 2;
    }
    process.stderr.write(`coffer: ${isCofferError(error) ? error.message : (error as Error).message}\n`);
    return 1;
  }
}
