import { UNKNOWN } from "../../provider/common/check";
import {
  DrillResult,
  choosePoint,
  createRestoreDrillProvider,
  describeFailure,
  upgradeOutputs,
} from "../../provider/restoreDrill/provider";
import { DRILL_SCHEMA_VERSION } from "../../provider/restoreDrill/schema";

const SECRET = "drill-unit-passphrase-0042";
const point = (id: string, takenAt: string, status = "ok") => ({ id, takenAt, status, sizeBytes: 1, loc: 0, key: 1 });
const location = { targetPath: "/srv/backups", zone: "zone-a", manifestHost: "local", hosts: ["local"] };
const set = {
  name: "nightly",
  setId: "2026-11-27-1a2b3c4d",
  points: [
    point("20261125T030000Z-aaaa", "2026-11-25T03:00:00Z"),
    point("20261126T030000Z-bbbb", "2026-11-26T03:00:00Z"),
  ],
  locations: [location],
};
const valid = {
  __provider: "exports.handler = ...",
  sets: [set],
  keys: [{ setId: set.setId, keyVersion: 1, keys: { passphrase: SECRET }, keyring: [] }],
};

const agentCalls: string[] = [];
/** What the fake agent answers, by command; a command without an answer fails. */
const answers: Record<string, unknown> = {};
const provider = createRestoreDrillProvider({
  agent: (host) => ({
    where: host ?? "local",
    call: async (command: string) => {
      agentCalls.push(command);
      if (command in answers) return answers[command] as never;
      throw new Error(`no agent in unit tests (${command})`);
    },
  }),
  now: () => new Date("2026-11-27T04:00:00Z"),
  random: () => 0,
  progress: () => undefined,
});

async function failuresFor(news: Record<string, unknown>) {
  return (await provider.check({}, news)).failures ?? [];
}

describe("RestoreDrill check", () => {
  test("accepts what the SDK passes and fills the defaults", async () => {
    const result = await provider.check({}, valid);
    expect(result.failures).toBeUndefined();
    const { __provider: _p, ...expected } = valid;
    expect(result.inputs).toEqual({ ...expected, pick: "newest", cinderScratch: false, status: "ok" });
    const boot = await provider.check({}, { ...valid, boot: { marker: "login:" } });
    expect(boot.inputs?.boot).toEqual({ marker: "login:", timeoutSeconds: 120, memoryMiB: 256 });
  });

  test.each([
    ["no sets", { sets: [] }, "sets", /sets must name at least one coffer.EncryptedBackupSet/],
    ["a set given twice", { sets: [set, set] }, "sets.1", /sets\[1\] \(nightly\) is sets\[0\] again/],
    ["no keys for a set", { keys: [] }, "keys", /keys has none for set nightly/],
    ["another pick", { pick: "oldest" }, "pick", /pick must be "newest" .* or "sampled"/],
    ["a relative scratchDir", { scratchDir: "scratch" }, "scratchDir", /scratchDir must be an absolute path/],
    ["a scratchDir with ..", { scratchDir: "/var/../etc" }, "scratchDir", /must not contain ".."/],
    ["a boot without a marker", { boot: {} }, "boot.marker", /boot.marker is required/],
    ["an empty marker", { boot: { marker: "" } }, "boot.marker", /boot.marker must not be empty/],
    ["a zero timeout", { boot: { marker: "m", timeoutSeconds: 0 } }, "boot.timeoutSeconds", /more than 0/],
    ["too little memory", { boot: { marker: "m", memoryMiB: 8 } }, "boot.memoryMiB", /at least 16/],
    ["an unknown boot field", { boot: { marker: "m", cdrom: "x" } }, "boot.cdrom", /not a known field/],
    ["a cinderScratch that is no boolean", { cinderScratch: "yes" }, "cinderScratch", /must be true or false/],
    ["a status", { status: "failed" }, "status", /status is set by Coffer/],
    ["an unknown field", { colour: "red" }, "colour", /colour is not a known field/],
    ["something else as a set", { sets: ["nightly"] }, "sets.0", /each of sets must be a coffer.EncryptedBackupSet/],
  ])("%s fails, naming %s", async (_what, change, property, reason) => {
    const failures = await failuresFor({ ...valid, ...change });
    expect(failures).toEqual([{ property, reason: expect.stringMatching(reason) }]);
    expect(JSON.stringify(failures)).not.toContain(SECRET);
  });

  test("values unknown during preview (a set about to take a point) pass", async () => {
    const previewed = {
      ...valid,
      sets: [{ ...set, points: UNKNOWN, locations: UNKNOWN }],
      keys: UNKNOWN,
      boot: { marker: UNKNOWN },
    };
    const result = await provider.check({}, previewed);
    expect(result.failures).toBeUndefined();
    expect(await failuresFor({ ...valid, sets: UNKNOWN })).toEqual([]);
  });
});

describe("RestoreDrill diff, state and points", () => {
  test("diff always reports a change: every up drills again, nothing is ever replaced", async () => {
    expect(await provider.diff()).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
  });

  test("state of this schema is read; state of a newer Coffer is refused with the fix", () => {
    const state = { ...valid, pick: "newest", cinderScratch: false, status: "ok", results: [], failures: [] };
    expect(upgradeOutputs({ ...state, schemaVersion: DRILL_SCHEMA_VERSION } as never).schemaVersion).toBe(1);
    expect(() => upgradeOutputs({ ...state, schemaVersion: DRILL_SCHEMA_VERSION + 1 } as never)).toThrow(
      /written by a newer Coffer \(RestoreDrill schema 2, this one knows 1\): upgrade the coffer package/,
    );
  });

  test("newest: the newest good point; sampled: a random good one; none good: undefined", () => {
    const failed = point("20261127T030000Z-cccc", "2026-11-27T03:00:00Z", "failed");
    const points = [...set.points, failed];
    expect(choosePoint({ points } as never, "newest", () => 0.99)?.id).toBe("20261126T030000Z-bbbb");
    expect(choosePoint({ points } as never, "sampled", () => 0)?.id).toBe("20261126T030000Z-bbbb");
    expect(choosePoint({ points } as never, "sampled", () => 0.99)?.id).toBe("20261125T030000Z-aaaa");
    expect(choosePoint({ points: [failed] } as never, "newest", () => 0)).toBeUndefined();
  });

  test("a set without a good point fails its drill by name, without asking the agent", async () => {
    agentCalls.length = 0;
    const news = { ...valid, sets: [{ ...set, points: [point("p1", "2026-11-26T03:00:00Z", "failed")] }] };
    const error = await provider.create(news).catch((e) => e);
    expect(error).toMatchObject({ code: "VERIFY_FAILED" });
    expect(error.message).toBe(
      `restore drill failed: set nightly (${set.setId}): point: the set has no good point to drill ` +
        "(1 point(s), none verified ok)",
    );
    expect(agentCalls).toEqual([]);
  });

  test("an agent of an older Coffer (no drills in its version) is refused before any drill, named", async () => {
    agentCalls.length = 0;
    answers.version = { qemu: "7.2.0", node: "v20", manifestSchema: 5 };
    const error = await provider.create(valid).catch((e) => e);
    expect(error).toMatchObject({ code: "AGENT_PROTOCOL_MISMATCH" });
    expect(error.message).toMatch(
      /^coffer-agent on this machine has no restore drill: install the same coffer version/,
    );
    expect(agentCalls).toEqual(["version"]);
  });

  test("a point only Cinder holds fails without cinderScratch, saying what drills it", async () => {
    answers.version = { qemu: "7.2.0", node: "v20", manifestSchema: 5, drills: true };
    answers["drill-point"] = {
      ok: true,
      checks: { manifest: "ok", hash: "skipped", qemuImgCheck: "skipped" },
      items: [],
      notDrilled: [{ item: "db", reason: "only the cloud holds its backup (no copy in the target)" }],
      cinderSources: [{ item: "db", source: { kind: "cinderVolume" } }],
      durationMs: 3,
      targetId: "t",
    };
    const error = await provider.create(valid).catch((e) => e);
    expect(error.message).toBe(
      `restore drill failed: set nightly (${set.setId}) point 20261126T030000Z-bbbb: hash: nothing of the point ` +
        "is in the target (only Cinder holds db): cinderScratch drills it",
    );
    delete answers["drill-point"];
  });

  test("a failure names the set, the point and the check", () => {
    const result: DrillResult = {
      set: "nightly",
      setId: set.setId,
      pointId: "20261126T030000Z-bbbb",
      pick: "sampled",
      ok: false,
      checks: { manifest: "ok", hash: "failed", qemuImgCheck: "ok" },
      failure: "hash: item web-1-root: web-1-root.qcow2 has changed since the backup",
      items: ["web-1-root"],
      durationMs: 1,
    };
    expect(describeFailure(result)).toBe(
      `set nightly (${set.setId}) point 20261126T030000Z-bbbb: ` +
        "hash: item web-1-root: web-1-root.qcow2 has changed since the backup",
    );
  });
});
