/**
 * FinalStateBackup of a Nova server on the loopback cloud: its delete (which Pulumi runs before the
 * server's) takes a final point of the server's root disk and attached volume into a directory target, sealed for a recipient,
 * signed and held, with nothing left in the owner's project; a failed one blocks the deletion.
 */
import { createHash, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readManifest } from "../../provider/agent/manifest";
import { createFinalStateProvider } from "../../provider/finalState/provider";
import type { FinalStateOutputs } from "../../provider/finalState/state";
import { collect } from "../../provider/openstack";
import { cloudAs, cloudSetHost, deleteTestResources } from "../support/cloudAccess";
import { runCoffer } from "../support/cofferCli";
import { x25519Pair } from "../support/escrowKeys";
import { cloudMissingNote, loopbackCloud, loopbackCloudWithNova, novaMissingNote } from "../support/loopbackCloud";
import { GiB, MARKER_IMAGE_BYTES, attachMarkerVolume, bootMarkerServer, sha256Of } from "../support/novaServers";
import { ed25519Pair } from "../support/signingKeys";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

jest.setTimeout(15 * 60_000);

const cloud = loopbackCloudWithNova();
const describeNova = cloud ? describe : describe.skip;
const unique = `coffer-final-${randomUUID().slice(0, 8)}`;
const URN = `urn:pulumi:dev::fleet::pulumi-nodejs:dynamic/coffer:FinalStateBackup::${unique}`;

describeNova(
  cloud
    ? "FinalStateBackup of a Nova server, on the loopback cloud"
    : loopbackCloud()
      ? novaMissingNote
      : cloudMissingNote,
  () => {
    const tempDir = useTempDir("coffer-final-nova-");
    const made = { servers: [] as string[], images: [] as string[] };
    const volumes: string[] = [];
    const signing = ed25519Pair();
    const forensics = x25519Pair();

    afterAll(async () => {
      await deleteTestResources(cloud!, unique, volumes, made);
    });

    const inputs = (target: string, novaServer: string) => ({
      vm: { novaServer },
      policy: {
        id: "forensics-1",
        zone: "forensics",
        target: { kind: "directory", path: target },
        compression: "zstd",
        integrityCheck: "metadata",
        bandwidthLimitMiBps: 0,
        encrypted: false,
      },
      keys: { signingKey: signing.privateKey },
      recipients: [{ name: "forensics", publicKey: forensics.publicKey }],
      holdDays: 30,
      reason: "security",
      scrub: true,
      takenFor: { stack: "dev", project: "fleet", urn: URN },
    });

    test("delete takes the server's final point: sealed, held, byte for byte, nothing left in the project", async () => {
      const client = cloudAs(cloud!);
      const boot = { name: `${unique}-web`, dir: tempDir() };
      const { serverId, rootDisk } = await bootMarkerServer(cloud!, client, boot, made);
      const data = { name: `${unique}-data`, serverId };
      const { sha256: volumeSha256 } = await attachMarkerVolume(cloud!, client, data, volumes);
      const target = path.join(tempDir(), "target");
      await makeTarget(target);
      const notes: string[] = [];
      const provider = createFinalStateProvider(cloudSetHost(cloud!, notes));
      const checked = await provider.check({}, inputs(target, serverId));
      expect(checked.failures).toBeUndefined();
      const { id, outs } = await provider.create(checked.inputs!);

      await provider.delete(id, outs as FinalStateOutputs);
      const setDir = path.join(target, "sets", "forensics", id);
      const [pointId] = (await fs.readdir(setDir)).filter((f) => f !== "index.json");
      const manifestPath = path.join(setDir, pointId, "manifest.json");
      const read = readManifest(await fs.readFile(manifestPath, "utf8"));
      if (!read.ok) throw new Error(read.problem);
      expect(read.manifest).toMatchObject({
        keySource: "recipients",
        signing: { keyFingerprint: expect.stringMatching(/^SHA256:/) },
        final: { reason: "security", operation: "delete", vm: { novaServer: serverId } },
      });
      expect(read.manifest.cloudItems).toBeUndefined();
      expect(read.manifest.items.map((i) => [i.name, i.virtualSize, i.encrypted])).toEqual([
        ["server", GiB, true],
        ["server.vdb", GiB, true],
      ]);
      expect(read.manifest.items[0].source).toMatchObject({ kind: "novaServer", serverId, disk: { role: "root" } });
      expect(notes.join("\n")).toMatch(new RegExp(`final-state backup of Nova server ${serverId}: point ${pointId}`));

      // Never left in the owner's project: no image of the server, no staged file.
      const images = await collect(client.glance.listImages());
      expect(images.filter((i) => i.properties.instance_uuid === serverId)).toEqual([]);
      expect(await fs.readdir(path.join(target, ".coffer", "staging")).catch(() => [])).toEqual([]);

      // The recipient's key opens it, byte for byte; prune is refused while it is held.
      const key = path.join(tempDir(), "forensics.pem");
      await fs.writeFile(key, forensics.privateKey, { mode: 0o600 });
      const restoreItem = async (item: string) => {
        const to = path.join(tempDir(), `${item}.raw`);
        const restored = await runCoffer([
          "restore",
          "--manifest",
          manifestPath,
          "--item",
          item,
          "--to",
          to,
          "--key",
          key,
        ]);
        expect([item, restored.code]).toEqual([item, 0]);
        return to;
      };
      const rootDiskSha256 = createHash("sha256").update(rootDisk).digest("hex");
      expect(await sha256Of(await restoreItem("server"), MARKER_IMAGE_BYTES)).toBe(rootDiskSha256);
      expect(await sha256Of(await restoreItem("server.vdb"))).toBe(volumeSha256);
      const prune = await runCoffer([
        "prune",
        "--target",
        target,
        "--zone",
        "forensics",
        "--set",
        id,
        "--point",
        pointId,
      ]);
      expect(prune.stderr).toMatch(/is held \(final state: security\)/);

      // A server that can't be backed up (here: gone already) blocks the deletion, named.
      const missing = randomUUID();
      const blocked = createFinalStateProvider(cloudSetHost(cloud!));
      const armed = await blocked.create((await blocked.check({}, inputs(target, missing))).inputs!);
      const error = await blocked.delete(armed.id, armed.outs as FinalStateOutputs).catch((e: Error) => e);
      expect((error as Error).message).toMatch(
        new RegExp(`^the final-state backup of Nova server ${missing} failed, so its deletion is blocked`),
      );
    });
  },
);
