/**
 * `coffer restore --to-nova`: a Nova server source's point recreated as a new server, its volumes
 * first; the manifest checked, and the restore's preflight passed, before anything is made.
 */
import type { ManifestItem } from "../agent/manifest";
import { CofferError } from "../common/errors";
import { cloudDeps, openCloudFrom } from "../openstack";
import type { NovaServerItem } from "../sources/novaServer";
import { NovaDisk, novaPreflight, restoreToNova } from "../sources/novaRestore";
import { CloudRestoreOptions, authenticity, viaLocalFile } from "./cloudRestore";
import { UsageError, openSet, readPublicKey } from "./common";

export interface NovaRestoreCliOptions extends CloudRestoreOptions {
  flavor?: string;
  network?: string[];
}

type ServerItem = ManifestItem & { source: NovaServerItem };
const isServerItem = (item: ManifestItem): item is ServerItem => item.source.kind === "novaServer";

export async function restoreServerToNova(values: NovaRestoreCliOptions): Promise<number> {
  const publicKey = values.publicKey === undefined ? undefined : await readPublicKey(values.publicKey);
  const set = await openSet(values, true);
  if (!values.item) throw new UsageError("restore --to-nova needs --item: the server source's name");
  const { items } = set.manifest;
  const found = items.find((i) => i.name === values.item);
  if (!found)
    throw new UsageError(`no item "${values.item}" in this set (it has: ${items.map((i) => i.name).join(", ")})`);
  if (!isServerItem(found))
    throw new UsageError(`item ${found.name} is a ${found.source.kind} source: --to-nova restores Nova servers`);
  const root = found.source.server
    ? found
    : items.filter(isServerItem).find((i) => i.source.serverId === found.source.serverId && i.source.server);
  if (!root?.source.server) throw new UsageError(`item ${found.name} is a volume of a server this set has no root of`);
  if (root !== found)
    throw new UsageError(`item ${found.name} is a volume of server ${root.name}: give --item ${root.name}`);

  const problem = await authenticity(set, publicKey);
  if (problem && !values.withoutMetadata) {
    if (problem === "unchecked")
      throw new UsageError(
        "the manifest must be checked before a server is made from it: give the set's key (--passphrase-file or " +
          "--manifest-key-file) or the policy's --public-key; or --without-metadata with --flavor and --network",
      );
    const fix = "--without-metadata with --flavor and --network restores the disks alone, without its description";
    throw new CofferError("MANIFEST_TAMPERED", `the manifest failed its check (${problem}): ${fix}`);
  }
  if (problem && (!values.flavor || !values.network?.length))
    throw new UsageError(
      "--without-metadata takes nothing from the manifest's description: give --flavor and --network",
    );
  const say = (line: string) => values.quiet || process.stderr.write(`coffer: ${line}\n`);
  if (problem && problem !== "unchecked") say(`the manifest failed its check (${problem}): restoring the disks alone`);

  const server = root.source.server;
  const volumeItems = server.blockDeviceMapping.filter((b) => !b.boot).map((b) => b.item);
  const missing = volumeItems.filter((name) => !items.some((i) => i.name === name));
  const diskOf = (item: ServerItem): NovaDisk => ({
    name: item.name,
    source: item.source,
    withFile: (format, work) => viaLocalFile(set, item, values.quiet, work, format),
  });
  const volumeStored = items.filter(isServerItem).filter((i) => volumeItems.includes(i.name));
  const volumes = volumeStored.map(diskOf);
  if ([root, ...volumeStored].some((i) => i.encrypted) && !set.passphrase)
    throw new UsageError(
      set.manifest.keySource === "recipients"
        ? "this point is sealed for recipients: give a recipient's private key with --key <private.pem>"
        : "this set is encrypted: give its passphrase with --passphrase-file, --passphrase-stdin or COFFER_PASSPHRASE",
    );
  const deps = cloudDeps();
  const cloud = await openCloudFrom({ env: process.env }, deps);
  const options = { flavor: values.flavor, networks: values.network };
  const checked = await novaPreflight(diskOf(root), volumes, cloud, options, missing);
  if (values.preflight) {
    process.stdout.write(JSON.stringify({ item: root.name, ok: checked.ok, checks: checked.checks }, null, 2) + "\n");
    return checked.ok ? 0 : 1;
  }
  if (!checked.ok) {
    const blocked = checked.checks.filter((c) => !c.ok).map((c) => `${c.check}: ${c.detail}`);
    throw new CofferError("INVALID_INPUT", `restore --to-nova can't succeed, nothing was made: ${blocked.join("; ")}`);
  }
  const restored = await restoreToNova(diskOf(root), volumes, cloud, checked, {
    name: values.name,
    applyMetadata: problem === undefined,
    waits: deps,
    progress: say,
  });
  process.stdout.write(JSON.stringify({ restored: root.name, ...restored }) + "\n");
  return 0;
}
