/**
 * coffer: what a person needs without Pulumi, with the backup files and the key.
 *   coffer restore --manifest <path> --item <name> --to <file> [--format raw|qcow2] [--force]
 *   coffer verify  --manifest <path> [--full]
 *   coffer escrow recover --store <dir> --id <record> --key <private.pem> [--key ...] [--version N] [--out <file>]
 *   coffer sets --target <dir> [--zone <zone>] [--state <stack-export.json> ...]
 * The passphrase (encrypted sets) or manifest key (unencrypted sets) comes from
 * --passphrase-file / --manifest-key-file, from stdin with --passphrase-stdin, or from
 * COFFER_PASSPHRASE / COFFER_MANIFEST_KEY; never from the command line.
 * Exit codes: 0 done, 1 failed (verification, restore), 2 usage.
 * What it writes is the owner's alone (umask 077): a restored disk holds a VM's data.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { CofferError, isCofferError } from "../common/errors";
import { verifySet } from "../agent/backupSet";
import { listSets, setIdsInStackExport } from "../agent/inventory";
import { misplacement, openManifest, readManifest } from "../agent/manifest";
import { sweepTempLeftovers, withSecretFd } from "../agent/tempFiles";
import { writeFileAtomic } from "../common/atomicFile";
import { recoverSecret } from "../escrow/record";
import { restorerOf } from "../sources/registry";

async function escrow(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "recover") throw new UsageError(`unknown escrow command "${sub ?? ""}"`);
  const { values } = parseArgs({
    args: rest,
    options: {
      store: { type: "string" },
      id: { type: "string" },
      key: { type: "string", multiple: true },
      version: { type: "string" },
      out: { type: "string" },
    },
  });
  if (!values.store || !values.id || !values.key?.length)
    throw new UsageError("escrow recover needs --store, --id and at least one --key");
  const version = values.version === undefined ? undefined : Number(values.version);
  if (version !== undefined && !(Number.isInteger(version) && version >= 1))
    throw new UsageError("--version is a whole number from 1");
  const keys = await Promise.all(
    values.key.map((file) =>
      fs.readFile(file, "utf8").catch(() => {
        throw new UsageError(`--key ${file} can't be read`);
      }),
    ),
  );
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
  coffer restore --manifest <manifest.json> --item <name> --to <file> [--format raw|qcow2] [--force] [key options]
      --force replaces an existing <file>; without it restore refuses to write over one
  coffer verify  --manifest <manifest.json> [--full] [key options]
  coffer escrow recover --store <dir> --id <record> --key <private.pem> [--key ...] [--version N] [--out <file>]
      prints the escrowed secret, or writes it to <file> (mode 0600); a threshold record needs that many --key
  coffer sets --target <dir> [--zone <zone>] [--state <stack-export.json> ...]
      lists the target's set folders; with the \`pulumi stack export\` of every stack that uses the target
      (--state - reads one from stdin), marks and names the sets no stack tracks
key options (never the key itself on the command line):
  --passphrase-file <file> | --passphrase-stdin | COFFER_PASSPHRASE      encrypted sets
  --manifest-key-file <file> | COFFER_MANIFEST_KEY                        unencrypted sets`;

class UsageError extends Error {}

/** Lists set folders; given stack exports, names the complete sets none of them tracks. */
async function sets(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { target: { type: "string" }, zone: { type: "string" }, state: { type: "string", multiple: true } },
  });
  if (!values.target) throw new UsageError("sets needs --target");
  let tracked: Set<string> | undefined;
  for (const file of values.state ?? []) {
    const text =
      file === "-"
        ? await readStdin()
        : await fs.readFile(file, "utf8").catch(() => {
            throw new UsageError(`--state ${file} can't be read`);
          });
    let ids: Set<string>;
    try {
      ids = setIdsInStackExport(JSON.parse(text));
    } catch (error) {
      throw new UsageError(`--state ${file}: ${(error as Error).message}: give the output of \`pulumi stack export\``);
    }
    tracked = new Set([...(tracked ?? []), ...ids]);
  }
  const found = (await listSets(path.resolve(values.target), values.zone)).map((set) => ({
    ...set,
    ...(tracked ? { tracked: tracked.has(set.setId) } : {}),
  }));
  process.stdout.write(JSON.stringify({ sets: found }, null, 2) + "\n");
  const untracked = found.filter((set) => set.tracked === false && set.status === "complete");
  if (untracked.length > 0) {
    process.stderr.write(
      `coffer: ${untracked.length} complete set(s) that no given stack tracks: ` +
        `${untracked.map((s) => s.setDir).join(", ")}\n` +
        "coffer: verify them with `coffer verify`; delete a folder by hand once you are sure no stack or person " +
        "needs it\n",
    );
  }
  const crashed = found.filter((set) => set.status === "crashed");
  if (crashed.length > 0) {
    const next = "the next backup on their host removes them";
    process.stderr.write(`coffer: ${crashed.length} unfinished set folder(s) left by a crash; ${next}\n`);
  }
  return 0;
}

async function exists(file: string): Promise<boolean> {
  return fs.lstat(file).then(
    () => true,
    (e: NodeJS.ErrnoException) => e.code !== "ENOENT",
  );
}

/**
 * Gives the restored file its name: with `force` by rename (replacing what is there), else by a
 * hard link, which fails if the name exists, so a second restore to the same path can't win.
 */
async function place(partial: string, to: string, force: boolean): Promise<void> {
  if (force) return fs.rename(partial, to);
  const linked = await fs.link(partial, to).then(
    () => true,
    (error: NodeJS.ErrnoException) => {
      if (error.code === "EEXIST") {
        const fix = "nothing was replaced; restore to another path, or add --force";
        throw new CofferError("IO_FAILED", `${to} appeared while restoring (another restore?): ${fix}`);
      }
      // A filesystem without hard links (vfat, some FUSE mounts): check, then rename.
      if (error.code === "EPERM" || error.code === "ENOTSUP" || error.code === "EOPNOTSUPP") return false;
      throw error;
    },
  );
  if (linked) return;
  if (await exists(to)) {
    const fix = "restore to another path, or add --force";
    throw new CofferError("IO_FAILED", `${to} appeared while restoring (another restore?): ${fix}`);
  }
  await fs.rename(partial, to);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

async function secretFrom(file: string | undefined, stdin: boolean, envName: string): Promise<string | undefined> {
  if (file) return (await fs.readFile(file, "utf8")).replace(/\r?\n$/, "");
  if (stdin) return readStdin();
  return process.env[envName] || undefined;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  process.umask(0o077);
  try {
    // A killed restore or verify may have left a read-back server or a key folder.
    await sweepTempLeftovers();
    if (command === "escrow") return await escrow(rest);
    if (command === "sets") return await sets(rest);
    const { values } = parseArgs({
      args: rest,
      options: {
        manifest: { type: "string" },
        item: { type: "string" },
        to: { type: "string" },
        format: { type: "string", default: "raw" },
        full: { type: "boolean", default: false },
        force: { type: "boolean", default: false },
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
    const unsigned = readManifest(text);
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
      const format = values.format;
      const opened = await openManifest(text, manifestSecret);
      if (!opened.ok || !opened.authentic)
        throw new CofferError(
          "MANIFEST_TAMPERED",
          "the manifest's HMAC does not match: it was changed, or this is not the set's key",
        );
      const misplaced = misplacement(opened.manifest, setDir);
      if (misplaced) throw new CofferError("MANIFEST_TAMPERED", `${misplaced}: restore from the set's own folder`);
      const item = opened.manifest.items.find((i) => i.name === values.item);
      if (!item)
        throw new UsageError(
          `no item "${values.item}" in this set (it has: ${opened.manifest.items.map((i) => i.name).join(", ")})`,
        );
      const restore = restorerOf(item);
      if (!restore) {
        const why = `its source kind, ${item.source.kind}, has no restore in this coffer`;
        throw new CofferError("INVALID_INPUT", `item ${item.name}: ${why}`);
      }
      const to = path.resolve(values.to);
      if (!values.force && (await exists(to))) {
        const fix = "restore to another path, or add --force to replace it";
        throw new CofferError("IO_FAILED", `${to} already exists: ${fix}`);
      }
      const unique = `${process.pid}-${randomBytes(4).toString("hex")}`;
      const partial = path.join(path.dirname(to), `.${path.basename(to)}.partial-${unique}`);
      try {
        // What was written must be what was backed up (the kind checks), before it gets the name asked for.
        await withSecretFd(passphrase ?? "", (key) => restore({ file: partial, format }, { setDir, key }));
        await fs.chmod(partial, 0o600);
        await place(partial, to, values.force);
      } finally {
        await fs.rm(partial, { force: true });
      }
      process.stdout.write(JSON.stringify({ restored: item.name, to, format, sha256: item.streamSha256 }) + "\n");
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
