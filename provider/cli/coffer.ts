/**
 * coffer: what a person needs without Pulumi, with the backup files and the key: restore and
 * verify a set, recover an escrowed secret, list a target's sets (`coffer --help` for usage).
 * The passphrase (encrypted sets) or manifest key (unencrypted sets) comes from
 * --passphrase-file / --manifest-key-file, from stdin with --passphrase-stdin, or from
 * COFFER_PASSPHRASE / COFFER_MANIFEST_KEY; never from the command line. A point sealed for
 * recipients opens with recipients' private keys instead (--key files). `verify --public-key`
 * checks a signed set's manifest with the policy's Ed25519 public key, no secret needed.
 * Results go to stdout (scripts parse them), progress and messages to stderr.
 * Exit codes: 0 done, 1 failed (verification, restore), 2 usage.
 * What it writes is the owner's alone (umask 077): a restored disk holds a VM's data.
 */
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Command, CommanderError, Option } from "commander";
import { CofferError, isCofferError } from "../common/errors";
import { verifySet } from "../agent/backupSet";
import { listSets, setIdsInStackExport, trackedBy } from "../agent/inventory";
import { misplacement, openManifest } from "../agent/manifest";
import { openLuks } from "../agent/image";
import { sweepTempLeftovers, withSecretFd } from "../agent/tempFiles";
import { writeFileAtomic } from "../common/atomicFile";
import { SecretFormat, recoverSecret } from "../escrow/record";
import { luksOf, restoreToCloud } from "./cloudRestore";
import { NovaRestoreCliOptions, restoreServerToNova } from "./novaRestore";
import { KeyOptions, UsageError, openSet, readPublicKey, readStdin, secretFrom } from "./common";
import { restorerOf } from "../sources/registry";
import { cloudFromEnvironment, listPoints, prunePoints, renderPoints, renderPrune } from "./points";
import { Progress, progressOn, withProgress } from "./progress";
import { SwiftPointOptions, withSwiftPoint } from "./swiftPoint";

interface VerifyOptions extends KeyOptions, SwiftPointOptions {
  manifest?: string;
  publicKey?: string;
  full?: boolean;
  quiet?: boolean;
}

/** The cloud restore's options, and a restore to a file's. */
interface RestoreOptions extends NovaRestoreCliOptions, SwiftPointOptions {
  toNova?: boolean;
  to?: string;
  format: "raw" | "qcow2";
  force?: boolean;
  keepLuks?: boolean;
}

interface PointKeyOptions extends KeyOptions {
  manifest?: string;
  out?: string;
}

interface EscrowRecoverOptions {
  store?: string;
  id?: string;
  key?: string[];
  version?: string;
  out?: string;
  format?: SecretFormat;
}

interface SetsOptions {
  target?: string;
  zone?: string;
  state?: string[];
}

async function escrowRecover(values: EscrowRecoverOptions): Promise<number> {
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
  const secret = await recoverSecret(path.resolve(values.store), values.id, keys, version, values.format);
  if (values.out) {
    await writeFileAtomic(path.resolve(values.out), secret);
    process.stderr.write(`coffer: wrote the secret of ${values.id} to ${values.out} (mode 0600)\n`);
  } else {
    process.stdout.write(secret + "\n");
  }
  return 0;
}

/**
 * Writes an encrypted point's own key (unwrapped with the passphrase, or opened with recipients' keys)
 * to a 0600 file, once the manifest's HMAC passed: what opens its LUKS containers with qemu-img alone.
 */
async function pointKey(values: PointKeyOptions): Promise<number> {
  if (!values.out) throw new UsageError("point-key needs --out <file>: the key never goes to stdout");
  const set = await openSet(values);
  if (!set.manifest.policy.encrypted) throw new UsageError("this point is not encrypted: it has no key to write");
  if (!set.manifest.wrappedKey && set.manifest.keySource === "passphrase") {
    const why = "this point's backups are keyed by the passphrase itself (manifest schema 4 or older)";
    throw new UsageError(`${why}: give qemu-img the passphrase file`);
  }
  await authenticManifest(set);
  await writeFileAtomic(path.resolve(values.out), set.passphrase!);
  process.stderr.write(
    `coffer: wrote the key of point ${set.manifest.pointId ?? set.manifest.setId} to ${values.out} (mode 0600)\n`,
  );
  return 0;
}

/** Lists set folders; given stack exports, names the complete sets none of them tracks. */
async function sets(values: SetsOptions): Promise<number> {
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
    ...(tracked ? { tracked: trackedBy(tracked, set) } : {}),
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

async function verify(values: VerifyOptions): Promise<number> {
  const publicKey = values.publicKey === undefined ? undefined : await readPublicKey(values.publicKey);
  const set = await openSet(values, publicKey !== undefined);
  const progressOf = progressOn(values.quiet);
  // verifySet reports items one after the other.
  let current: { item: string; progress: Progress } | undefined;
  const onItemProgress = (item: string, percent: number) => {
    if (current?.item !== item) {
      current?.progress.end();
      const totalBytes = set.manifest.items.find((i) => i.name === item)?.virtualSize ?? 0;
      current = { item, progress: progressOf(`verify ${item}`, totalBytes) };
    }
    current.progress.update(percent);
  };
  const secrets = { manifestSecret: set.manifestSecret, passphrase: set.passphrase, publicKey };
  let result: Awaited<ReturnType<typeof verifySet>>;
  try {
    result = await verifySet(set.setDir, values.full ? "full" : "metadata", secrets, { progress: onItemProgress });
  } finally {
    current?.progress.end();
  }
  const { manifest: _m, ...report } = result;
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  return result.status === "ok" ? 0 : 1;
}

/** The set's manifest once its HMAC passed with the set's key; refused as tampered otherwise. */
async function authenticManifest(set: { text: string; manifestSecret?: string }) {
  const opened = await openManifest(set.text, set.manifestSecret!);
  if (!opened.ok || !opened.authentic)
    throw new CofferError(
      "MANIFEST_TAMPERED",
      "the manifest's HMAC does not match: it was changed, or this is not the set's key",
    );
  return opened.manifest;
}

async function restore(values: RestoreOptions): Promise<number> {
  if ([values.toCinder, values.toGlance, values.toNova].filter(Boolean).length > 1)
    throw new UsageError("give one of --to-cinder, --to-glance and --to-nova");
  if (values.toNova) return restoreServerToNova(values);
  if (values.flavor || values.network) throw new UsageError("--flavor and --network go with --to-nova");
  if (values.toCinder || values.toGlance) return restoreToCloud(values);
  if (values.publicKey || values.recreateType || values.preflight || values.withoutMetadata || values.name)
    throw new UsageError(
      "--public-key, --name, --recreate-type, --preflight and --without-metadata go with --to-cinder",
    );
  const set = await openSet(values);
  const { setDir, passphrase } = set;
  if (!values.item || !values.to) throw new UsageError("restore needs --item and --to");
  const format = values.format;
  const manifest = await authenticManifest(set);
  const misplaced = misplacement(manifest, setDir);
  if (misplaced) throw new CofferError("MANIFEST_TAMPERED", `${misplaced}: restore from the set's own folder`);
  const item = manifest.items.find((i) => i.name === values.item);
  if (!item)
    throw new UsageError(
      `no item "${values.item}" in this set (it has: ${manifest.items.map((i) => i.name).join(", ")})`,
    );
  const restoreItem = restorerOf(item);
  if (!restoreItem) {
    const why = `its source kind, ${item.source.kind}, has no restore in this coffer`;
    throw new CofferError("INVALID_INPUT", `item ${item.name}: ${why}`);
  }
  const luks = luksOf(item, values);
  const to = path.resolve(values.to);
  if (!values.force && (await exists(to))) {
    const fix = "restore to another path, or add --force to replace it";
    throw new CofferError("IO_FAILED", `${to} already exists: ${fix}`);
  }
  const progressOf = progressOn(values.quiet);
  const unique = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const partial = path.join(path.dirname(to), `.${path.basename(to)}.partial-${unique}`);
  const container = `${partial}.luks`;
  try {
    // What was written must be what was backed up (the kind checks), before it gets the name asked for.
    const step = <T>(label: string, totalBytes: number, work: (onProgress?: (p: number) => void) => Promise<T>) =>
      withProgress(progressOf(label, totalBytes), work);
    await withSecretFd(passphrase ?? "", (key) =>
      restoreItem({ file: luks ? container : partial, format: luks ? "raw" : format }, { setDir, key, step }),
    );
    // An encrypted volume's copy: its LUKS container, opened with the volume's key.
    if (luks) {
      const volumeKey = await secretFrom(luks.keyFile, false, "COFFER_VOLUME_KEY");
      await withSecretFd(volumeKey ?? "", (key) =>
        step(`open ${item.name}'s LUKS container`, item.virtualSize, (onProgress) =>
          openLuks({ file: container, key, to: partial, format, subject: `item ${item.name}`, onProgress }),
        ),
      );
    }
    await fs.chmod(partial, 0o600);
    await place(partial, to, values.force ?? false);
  } finally {
    await fs.rm(partial, { force: true });
    await fs.rm(container, { force: true });
  }
  // The SHA-256 Coffer checked is the stored data's: for an opened LUKS container, the container's.
  const checked = luks ? { containerSha256: item.streamSha256 } : { sha256: item.streamSha256 };
  process.stdout.write(JSON.stringify({ restored: item.name, to, format, ...checked }) + "\n");
  return 0;
}

/** The options of restore and verify for a point in a Swift container. */
function withSwiftOptions(command: Command): Command {
  return command
    .optionsGroup("A point in a Swift container (fetched into scratch, checked, then removed):")
    .option("--swift <file.json>", 'the container: { "authUrl", "user", "container", "prefix"? }; --manifest is a key')
    .option("--swift-key-file <file>", "read the Swift user's key from <file> (or COFFER_SWIFT_KEY)")
    .option("--scratch <dir>", "where the point is fetched to (default: the temp folder); it needs the point's size");
}

/** Collects a repeatable option's values in order. */
const repeated = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

const example = (...lines: string[]) => `\nExample:\n${lines.map((line) => `  ${line}`).join("\n")}\n`;

/** The key options of restore and verify: files, stdin or the environment, never a value in argv. */
function withKeyOptions(command: Command): Command {
  return command
    .optionsGroup("Key options (the key itself never goes on the command line):")
    .option("--passphrase-file <file>", "read the passphrase of an encrypted set from <file> (or COFFER_PASSPHRASE)")
    .option("--passphrase-stdin", "read the passphrase of an encrypted set from stdin")
    .option(
      "--manifest-key-file <file>",
      "read the policy's manifest key (unencrypted sets) from <file> (or COFFER_MANIFEST_KEY)",
    )
    .option(
      "--key <private.pem>",
      "a recipient's private key: opens a point sealed for recipients; repeat for a threshold",
      repeated,
    );
}

/**
 * Commander's error message, without the value of an unknown `--name=value`: it may be a secret
 * typed where none belongs (`--passphrase=...`), and errors never show secrets.
 */
function withoutOptionValues(message: string): string {
  return message.replace(/^error: /, "").replace(/'(--[^'=\s]+)=[^']*'/g, "'$1=...'");
}

/** The commands; each action leaves its exit code in `exit`. */
function cofferProgram(exit: { code: number }): Command {
  const program = new Command("coffer")
    .description(
      "Restore and verify Coffer backup sets, recover escrowed secrets, list a target's sets; no Pulumi needed.",
    )
    .exitOverride()
    .showHelpAfterError()
    .configureOutput({ outputError: (text, write) => write(`coffer: ${withoutOptionValues(text)}`) })
    .addHelpText(
      "after",
      "\nExit codes: 0 done, 1 failed (verification, restore), 2 usage. Progress goes to stderr, results to stdout.\n" +
        example(
          "coffer verify --manifest /srv/backups/sets/zone-a/<setId>/manifest.json --full --passphrase-file pass.txt",
          "coffer help restore",
        ),
    );

  const restoreCommand = program
    .command("restore")
    .summary("write an item of a set to a disk file, checked against the manifest")
    .description(
      "Writes an item of a set to a disk file. The manifest's HMAC and the backup's SHA-256 are checked first; " +
        "the disk is written under a partial name and gets the name --to only once its data matches " +
        "the manifest's SHA-256.",
    )
    .usage("--manifest <file> --item <name> (--to <file> | --to-cinder) [options]")
    .option("--manifest <file>", "the set's manifest.json (the set is the folder it is in)")
    .option("--item <name>", "the item (source) to restore")
    .option("--to <file>", "the disk file to write; an existing one only with --force")
    .addOption(new Option("--format <format>", "the restored disk's format").choices(["raw", "qcow2"]).default("raw"))
    .option("--force", "replace an existing --to file")
    .option("--quiet", "show no progress on stderr")
    .option("--volume-key-file <file>", "an encrypted Cinder volume's key in hex (escrow recover --format hex)")
    .option("--keep-luks", "write an encrypted Cinder volume's copy as its LUKS container, not opened")
    .optionsGroup("Cinder (credentials from OS_* variables or clouds.yaml with OS_CLOUD):")
    .option("--to-cinder", "restore a Cinder source's backup into a new volume of its recorded type")
    .option("--to-glance", "upload a Glance source's image as a new image with its recorded formats and properties")
    .option("--name <name>", "the new volume's, image's or server's name (default: the recorded name with -restored)")
    .option("--preflight", "only check whether the restore can succeed, and say what blocks it")
    .option("--from-copy", "restore the copy in the target (copyToTarget), not Cinder's backup (e.g. its key is gone)")
    .option("--recreate-type", "create the recorded volume type when it is gone (needs an admin)")
    .option("--to-nova", "recreate a Nova server source as a new server: its volumes, root disk and description")
    .option("--flavor <id or name>", "--to-nova: the new server's flavor (default: the recorded one)")
    .option("--network <id>", "--to-nova: a network for the new server (repeat; none: no network)", repeated)
    .option("--without-metadata", "restore the data even when the manifest can't be checked; apply no metadata")
    .option("--public-key <file.pem>", "the policy's signing public key: check the manifest with it");
  withKeyOptions(withSwiftOptions(restoreCommand))
    .addHelpText(
      "after",
      example(
        "coffer restore --manifest /srv/backups/sets/zone-a/<setId>/manifest.json --item web-1-root --to web-1.raw \\",
        "  --passphrase-file pass.txt",
        "OS_CLOUD=prod coffer restore --manifest <point>/manifest.json --item db --to-cinder --public-key signing.pub",
      ),
    )
    .action(async (options: RestoreOptions) => {
      exit.code = options.swift
        ? await withSwiftPoint(options, (manifest) => restore({ ...options, manifest }))
        : await restore(options);
    });

  const verifyCommand = program
    .command("verify")
    .summary("check a set against its manifest; prints the result as JSON, exit 1 unless ok")
    .description(
      "Checks a set: the manifest's HMAC, each backup's size and SHA-256 and its qcow2 metadata; with --full " +
        "also the guest data's SHA-256. With --public-key, also the manifest's Ed25519 signature; then no " +
        "passphrase is needed, and without one the HMAC and an encrypted set's qcow2 metadata and guest data are " +
        "not checked. Prints the result as JSON, with what was checked and what was not; exits 1 unless its " +
        "status is ok (an unsigned manifest, one signed with another key, or a bad signature fail).",
    )
    .usage("--manifest <file> [options]")
    .option("--manifest <file>", "the set's manifest.json (the set is the folder it is in)")
    .option("--public-key <file.pem>", "the policy's signing public key (PEM): check the manifest's signature")
    .option("--full", "also read all guest data and compare its SHA-256 with the manifest's (slow)")
    .option("--quiet", "show no progress on stderr");
  withKeyOptions(withSwiftOptions(verifyCommand))
    .addHelpText(
      "after",
      example(
        "COFFER_MANIFEST_KEY=... coffer verify --manifest <set>/manifest.json --full",
        "coffer verify --public-key signing.pub --manifest <set>/manifest.json",
      ),
    )
    .action(async (options: VerifyOptions) => {
      exit.code = options.swift
        ? await withSwiftPoint(options, (manifest) => verify({ ...options, manifest }))
        : await verify(options);
    });

  const pointKeyCommand = program
    .command("point-key")
    .summary("write an encrypted point's own key to a file, to open its backups with qemu-img alone")
    .description(
      "Writes the key of an encrypted point's LUKS containers to --out (mode 0600): since manifest schema 6 each " +
        "point has its own random key, which the passphrase unwraps (or recipients' private keys open). The " +
        "manifest's HMAC is checked with it first. qemu-img then opens a backup with that file as its secret.",
    )
    .usage("--manifest <file> --out <file> [options]")
    .option("--manifest <file>", "the point's manifest.json")
    .option("--out <file>", "the file to write the key to (mode 0600)");
  withKeyOptions(pointKeyCommand)
    .addHelpText(
      "after",
      example(
        "coffer point-key --manifest <point>/manifest.json --passphrase-file pass.txt --out point.key",
        "qemu-img convert -O raw --object secret,id=k,file=point.key --image-opts \\",
        "  driver=qcow2,file.driver=luks,file.key-secret=k,file.file.filename=<point>/web-1-root.qcow2.luks web-1.raw",
      ),
    )
    .action(async (options: PointKeyOptions) => {
      exit.code = await pointKey(options);
    });

  program
    .command("escrow")
    .summary("recover an escrowed secret (escrow recover)")
    .description("Key escrow without Pulumi.")
    .addHelpText("after", example("coffer escrow recover --help"))
    .command("recover")
    .summary("open an escrow record with recipients' private keys; print or write the secret")
    .description(
      "Opens an escrow record with recipients' private keys (a threshold record needs that many) and " +
        "prints the secret, or writes it to --out (mode 0600).",
    )
    .usage("--store <dir> --id <record> --key <private.pem> [--key ...] [options]")
    .option("--store <dir>", "the escrow store")
    .option("--id <record>", "the record's id")
    .option("--key <private.pem>", "a recipient's private key; repeat for a threshold record", repeated)
    .option("--version <N>", "the record version (a set's manifest names it); default: the current one")
    .option("--out <file>", "write the secret to <file> (mode 0600) instead of stdout")
    .addOption(
      new Option(
        "--format <format>",
        "text: the secret as escrowed; hex: a volume key's bytes in hex, the passphrase Cinder gives LUKS",
      )
        .choices(["text", "hex"])
        .default("text"),
    )
    .addHelpText(
      "after",
      example(
        "coffer escrow recover --store /srv/escrow --id gold-passphrase --version 3 --key dr-team.pem \\",
        "  --key security.pem --out pass.txt",
        "coffer escrow recover --store /srv/escrow --id volume-key-<barbican secret id> --key dr-team.pem --format hex",
      ),
    )
    .action(async (options: EscrowRecoverOptions) => {
      exit.code = await escrowRecover(options);
    });

  program
    .command("sets")
    .summary("list a target's set folders; with stack exports, name the sets no stack tracks")
    .description(
      "Lists a target's set folders as JSON. Given the `pulumi stack export` of every stack that uses the target, " +
        "marks each set tracked or not and names the complete sets no stack tracks.",
    )
    .usage("--target <dir> [options]")
    .option("--target <dir>", "the backup target's folder")
    .option("--zone <zone>", "only this zone's sets")
    .option("--state <file>", "a `pulumi stack export` (- reads one from stdin); repeat for every stack", repeated)
    .addHelpText(
      "after",
      example("pulumi stack export --stack prod > prod.json", "coffer sets --target /srv/backups --state prod.json"),
    )
    .action(async (options: SetsOptions) => {
      exit.code = await sets(options);
    });

  program
    .command("list")
    .summary("list the recovery points on a target, without Pulumi and without keys")
    .description(
      "Lists every set's points from the sets' indexes (rebuilt from the manifests when missing): time, size, " +
        "status as last checked, hold and escrow version. Points are not verified here: use coffer verify.",
    )
    .usage("--target <dir> [--zone <zone>] [--set <id>] [--final] [--json]")
    .option("--target <dir>", "the backup target's folder")
    .option("--zone <zone>", "only this zone's sets")
    .option("--set <id>", "only this set's points")
    .option("--final", "only final-state points (a FinalStateBackup's): why, for what, and their hold")
    .option("--json", "print JSON instead of a table")
    .addHelpText("after", example("coffer list --target /srv/backups --set nightly-1a2b3c4d"))
    .action(async (options: ListOptions) => {
      exit.code = await list(options);
    });

  program
    .command("prune")
    .summary("apply a set's retention from the target alone, as pulumi up does")
    .description(
      "Deletes the points of a set that its retention rules no longer keep, with the rules and holds the set last " +
        "declared (its index) or the --keep-* options given. Never a held point, a failed or unchecked one, " +
        "the newest good one, or one a kept point's incrementals build on; but with the set's key (--passphrase-file " +
        "or --manifest-key-file, and --signing-key for a signed set) a link of a qcow2 chain that one kept point " +
        "builds on is merged into it (its backups take in the link's data, verified before anything changes), " +
        "unless a held, failed or unchecked point depends on it. A point's Cinder backups are deleted " +
        "first, incrementals before their bases, with the cloud credentials of OS_* variables or clouds.yaml " +
        "(OS_CLOUD); when they can't all be, the point's folder stays. Each deletion is recorded in the index; " +
        "the set's next pulumi refresh drops it from state. --dry-run only shows what would go.",
    )
    .usage("--target <dir> --zone <zone> --set <id> [--dry-run] [--keep-* N]")
    .option("--target <dir>", "the backup target's folder")
    .option("--zone <zone>", "the set's zone")
    .option("--set <id>", "the set")
    .option("--dry-run", "show what would be pruned, delete nothing")
    .option(
      "--point <id>",
      "delete this one point, whatever its status (not a held one; one another builds on only by merging, with keys)",
    )
    .option("--keep-last <N>", "keep the N newest points (instead of the set's rules)")
    .option("--keep-daily <N>", "keep the newest point of each of the last N days (instead of the set's rules)")
    .option("--json", "print JSON instead of lines")
    .option(
      "--passphrase-file <file>",
      "merge links of an encrypted set's chains: its passphrase (or COFFER_PASSPHRASE)",
    )
    .option("--manifest-key-file <file>", "merge links of an unencrypted set's chains: the policy's manifest key")
    .option(
      "--signing-key <private.pem>",
      "signs the manifests a merge rewrites (a set with signed manifests needs it)",
    )
    .addHelpText("after", example("coffer prune --target /srv/backups --zone zone-a --set nightly-1a2b3c4d --dry-run"))
    .action(async (options: PruneOptions) => {
      exit.code = await prune(options);
    });
  return program;
}

interface ListOptions {
  target?: string;
  zone?: string;
  set?: string;
  final?: boolean;
  json?: boolean;
}

async function list(values: ListOptions): Promise<number> {
  if (!values.target) throw new UsageError("list needs --target");
  const now = new Date();
  const all = await listPoints({ target: path.resolve(values.target), zone: values.zone, set: values.set, now });
  const points = values.final ? all.filter((p) => p.final) : all;
  process.stdout.write(values.json ? JSON.stringify({ points }, null, 2) + "\n" : renderPoints(points, now) + "\n");
  return 0;
}

interface PruneOptions {
  target?: string;
  zone?: string;
  set?: string;
  dryRun?: boolean;
  point?: string;
  keepLast?: string;
  keepDaily?: string;
  json?: boolean;
  passphraseFile?: string;
  manifestKeyFile?: string;
  signingKey?: string;
}

async function prune(values: PruneOptions): Promise<number> {
  if (!values.target || !values.zone || !values.set) throw new UsageError("prune needs --target, --zone and --set");
  const given = { keepLast: values.keepLast, keepDaily: values.keepDaily };
  const rules = Object.fromEntries(
    Object.entries(given)
      .filter(([, value]) => value !== undefined)
      .map(([rule, value]) => [rule, Number(value)]),
  );
  const passphrase = await secretFrom(values.passphraseFile, false, "COFFER_PASSPHRASE");
  const manifestKey = await secretFrom(values.manifestKeyFile, false, "COFFER_MANIFEST_KEY");
  const signingKey = values.signingKey ? await fs.readFile(values.signingKey, "utf8") : undefined;
  const keyed = passphrase !== undefined || manifestKey !== undefined;
  const result = await prunePoints({
    target: path.resolve(values.target),
    ...(keyed ? { keys: { passphrase, manifestKey, ...(signingKey ? { signingKey } : {}) } } : {}),
    zone: values.zone,
    set: values.set,
    rules: Object.keys(rules).length > 0 ? rules : undefined,
    point: values.point,
    dryRun: values.dryRun ?? false,
    now: new Date(),
    by: `coffer prune (${os.userInfo().username}@${os.hostname()})`,
    cloud: cloudFromEnvironment,
    progress: (line) => values.json || process.stderr.write(`coffer: ${line}\n`),
  });
  // A point whose Cinder backups could not all be deleted, or that could not be merged, stays: not all was done.
  const code = result.cloudBackups.kept.length > 0 || result.merge.some((m) => m.problem) ? 1 : 0;
  if (values.json) {
    process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    return code;
  }
  process.stdout.write(renderPrune(result, values.dryRun ?? false) + "\n");
  return code;
}

export async function main(argv: string[]): Promise<number> {
  process.umask(0o077);
  const exit = { code: 0 };
  const program = cofferProgram(exit);
  let running = program;
  program.hook("preAction", async (_program, actionCommand) => {
    running = actionCommand;
    // A killed restore or verify may have left a read-back server or a key folder.
    await sweepTempLeftovers();
  });
  try {
    await program.parseAsync(argv, { from: "user" });
    return exit.code;
  } catch (error) {
    // Commander has written its message and the usage; exit code 0 is help that was asked for.
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    if (error instanceof UsageError) {
      process.stderr.write(`coffer: ${error.message}\n\n${running.helpInformation()}`);
      return 2;
    }
    process.stderr.write(`coffer: ${isCofferError(error) ? error.message : (error as Error).message}\n`);
    return 1;
  }
}
