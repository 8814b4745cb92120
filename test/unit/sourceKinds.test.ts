import { promises as fs } from "node:fs";
import * as path from "node:path";
import { readManifest } from "../../provider/agent/manifest";
import { SOURCE_KINDS, kindsChosenBy, sourceItemSchema, sourceKindNamed } from "../../provider/sources/registry";
import { fullEveryField, incrementalField } from "../../provider/sources/kind";

describe("the source kind registry", () => {
  test("each kind is registered once, under the manifest's existing discriminators", () => {
    expect(SOURCE_KINDS.map((k) => k.kind)).toEqual(["disk", "qmp", "cinderVolume", "glanceImage", "novaServer"]);
    for (const kind of SOURCE_KINDS) expect(sourceKindNamed(kind.kind)).toBe(kind);
    expect(SOURCE_KINDS.map((k) => k.runsOn)).toEqual(["agent", "agent", "provider", "provider", "provider"]);
    // A kind that runs in Pulumi's process takes its backups through `cloud`.
    for (const kind of SOURCE_KINDS) expect(kind.cloud !== undefined).toBe(kind.runsOn === "provider");
  });

  test("kinds share a field only as one shared schema, and each kind's selectors are its own fields", () => {
    const sharedSchemas: unknown[] = [incrementalField, fullEveryField];
    const own = SOURCE_KINDS.flatMap((k) => Object.entries(k.fields)).filter(([, s]) => !sharedSchemas.includes(s));
    const fields = own.map(([field]) => field);
    expect(new Set(fields).size).toBe(fields.length);
    const sharing = (schema: unknown) =>
      SOURCE_KINDS.filter((k) => Object.values(k.fields).includes(schema as never)).map((k) => k.kind);
    expect(sharing(incrementalField)).toEqual(["disk", "qmp", "cinderVolume"]);
    expect(sharing(fullEveryField)).toEqual(["disk", "qmp"]);
    for (const kind of SOURCE_KINDS) {
      for (const selector of kind.selectors) expect(Object.keys(kind.fields)).toContain(selector);
    }
  });

  test("a user's source object chooses its kind by its fields, no kind field needed", () => {
    expect(kindsChosenBy({ name: "a", disk: "/d" }).map((k) => k.kind)).toEqual(["disk"]);
    expect(kindsChosenBy({ name: "a", qmpSocket: "/s", device: "vda" }).map((k) => k.kind)).toEqual(["qmp"]);
    expect(kindsChosenBy({ name: "a", device: "vda" }).map((k) => k.kind)).toEqual(["qmp"]);
    expect(kindsChosenBy({ name: "a", disk: "/d", device: "vda" }).map((k) => k.kind)).toEqual(["disk", "qmp"]);
    expect(kindsChosenBy({ name: "a" })).toEqual([]);
    expect(kindsChosenBy({ name: "a", cinderVolume: "5c0e", incremental: true }).map((k) => k.kind)).toEqual([
      "cinderVolume",
    ]);
  });

  test("a kind's input refuses another kind's fields", () => {
    const [disk, qmp] = SOURCE_KINDS;
    expect(disk.input.safeParse({ disk: "/d", format: "qcow2", backingFiles: ["/b"] }).success).toBe(true);
    expect(disk.input.safeParse({ disk: "/d", device: "vda" }).success).toBe(false);
    expect(qmp.input.safeParse({ qmpSocket: "/s", device: "vda" }).success).toBe(true);
    expect(qmp.input.safeParse({ qmpSocket: "/s" }).error?.issues[0]).toMatchObject({
      path: ["device"],
      message: "a running VM's source needs both qmpSocket and device",
    });
  });

  test("the manifest's item.source is told apart by kind; manifests written before the registry still read", async () => {
    expect(sourceItemSchema.parse({ kind: "qmp", socket: "/s", device: "vda" })).toEqual({
      kind: "qmp",
      socket: "/s",
      device: "vda",
    });
    expect(sourceItemSchema.safeParse({ kind: "cinder", volume: "v" }).success).toBe(false);
    expect(sourceItemSchema.safeParse({ kind: "disk", socket: "/s", device: "vda" }).success).toBe(false);
    const fixtures = path.join(__dirname, "../fixtures");
    for (const file of ["manifest-v1-manifest-key.json", "manifest-v1-passphrase.json"]) {
      const read = readManifest(await fs.readFile(path.join(fixtures, file), "utf8"));
      expect(read).toMatchObject({ ok: true });
      if (read.ok) expect(read.manifest.items.map((i) => i.source.kind).length).toBeGreaterThan(0);
    }
  });
});
