import { localHost, provider } from "../../provider/backupPolicy";
import { createBackupPolicyProvider, planPolicyChange, upgradeOutputs } from "../../provider/backupPolicy/provider";
import { POLICY_SCHEMA_VERSION } from "../../provider/backupPolicy/schema";
import { provider as setProvider } from "../../provider/backupSet";
import { SET_SCHEMA_VERSION, targetRefOf, upgradeOutputs as upgradeSet } from "../../provider/backupSet/state";
import { planPoint, planTarget } from "../../provider/backupSet/plan";
import { backupSetInputs } from "../../provider/backupSet/schema";
import { checkAgentRequest } from "../../provider/agent/protocol";
import { memoryStore } from "../support/memoryStore";

// A BackupPolicy's Swift target: what check says of it, where its key goes, and state from before it.

const KEY = "swift-user-key-2f9c1e";
const swift = {
  kind: "swift",
  authUrl: "http://127.0.0.1:6280/auth/v1.0",
  user: "backup:coffer",
  container: "coffer-backups",
};

async function failuresFor(news: Record<string, unknown>) {
  return (await provider.check({}, { zone: "zone-a", ...news })).failures ?? [];
}

describe("BackupPolicy check of a Swift target", () => {
  test("fills its defaults: 64 MiB segments, a 64 GiB spool in /var/tmp/coffer-scratch; the key apart", async () => {
    const result = await provider.check({}, { zone: "zone-a", target: swift, targetKey: KEY });
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toMatchObject({
      target: { ...swift, segmentMiB: 64, scratch: { path: "/var/tmp/coffer-scratch", maxGiB: 64 } },
      targetKey: KEY,
    });
    expect(JSON.stringify(result.inputs!.target)).not.toContain(KEY);
  });

  test("immutable: true is refused at preview: Swift has no object lock, and the message says what to do", async () => {
    const [failure, ...rest] = await failuresFor({ target: { ...swift, immutable: true }, targetKey: KEY });
    expect(rest).toEqual([]);
    expect(failure.property).toBe("target.immutable");
    expect(failure.reason).toMatch(/Swift has no object lock/);
    expect(failure.reason).toMatch(/Remove immutable .*directory target on storage with a retention lock/);
    expect(await failuresFor({ target: { ...swift, immutable: false }, targetKey: KEY })).toEqual([]);
  });

  test.each([
    ["no key", { target: swift }, "target.key", /target.key is required for a Swift target/],
    [
      "no container",
      { target: { ...swift, container: undefined }, targetKey: KEY },
      "target.container",
      /target.container is required: the Swift container of the backups/,
    ],
    [
      "no auth URL",
      { target: { ...swift, authUrl: undefined }, targetKey: KEY },
      "target.authUrl",
      /target.authUrl is required: the tempauth URL/,
    ],
    [
      "a Keystone URL",
      { target: { ...swift, authUrl: "https://keystone.example:5000/v3" }, targetKey: KEY },
      "target.authUrl",
      /Keystone URL: Coffer's Swift target speaks tempauth/,
    ],
    [
      "a user without its account",
      { target: { ...swift, user: "coffer" }, targetKey: KEY },
      "target.user",
      /target.user must be "account:user"/,
    ],
    [
      "a relative scratch folder",
      { target: { ...swift, scratch: { path: "spool" } }, targetKey: KEY },
      "target.scratch.path",
      /target.scratch.path must be an absolute folder/,
    ],
    [
      "a key on a directory target",
      { target: { kind: "directory", path: "/srv/backups" }, targetKey: KEY },
      "target.key",
      /applies to a Swift target only/,
    ],
    ["another kind", { target: { kind: "s3", bucket: "b" } }, "target.kind", /must be "directory" .* or "swift"/],
  ])("%s fails naming the field and the fix", async (_what, news, property, reason) => {
    const failures = await failuresFor(news);
    expect(failures).toContainEqual({ property, reason: expect.stringMatching(reason) });
    expect(JSON.stringify(failures)).not.toContain(KEY);
  });
});

describe("BackupPolicy provider with a Swift target (its store injected)", () => {
  test("the document goes into the target's store; the key is in targetKey only; a new key updates", async () => {
    const store = memoryStore("swift:coffer-backups");
    const keys: (string | undefined)[] = [];
    const onSwift = createBackupPolicyProvider({
      ...localHost,
      store: (target, key) => {
        expect(target.kind).toBe("swift");
        keys.push(key);
        return store;
      },
    });
    const declared = (await provider.check({}, { zone: "zone-a", target: swift, targetKey: KEY })).inputs!;
    const { outs } = await onSwift.create(declared);
    expect(keys.every((k) => k === KEY)).toBe(true);
    expect(outs).toMatchObject({ schemaVersion: POLICY_SCHEMA_VERSION, targetKey: KEY, documentStatus: "ok" });
    expect(outs.documentPath).toBe("swift:coffer-backups/.coffer/zones/zone-a/policy.json");
    for (const text of store.objects.values()) expect(text.toString()).not.toContain(KEY);
    expect(JSON.stringify({ ...outs, targetKey: undefined })).not.toContain(KEY);

    expect(planPolicyChange(upgradeOutputs(outs), declared)).toMatchObject({ changes: false, replaces: [] });
    const rotated = { ...declared, targetKey: "a-new-swift-key-77" };
    expect(planPolicyChange(upgradeOutputs(outs), rotated)).toMatchObject({ changes: true, replaces: [] });
    const otherContainer = { ...declared, target: { ...declared.target, container: "elsewhere" } };
    expect(planPolicyChange(upgradeOutputs(outs), otherContainer)).toMatchObject({ replaces: ["target"] });
  });

  test("refresh and delete make no containers: a container that is gone is a target without its identity", async () => {
    const store = memoryStore("swift:coffer-backups");
    let made = 0;
    const counting = { ...store, assertReachable: async () => void made++ };
    const onSwift = createBackupPolicyProvider({ ...localHost, store: () => counting });
    const declared = (await provider.check({}, { zone: "zone-a", target: swift, targetKey: KEY })).inputs!;
    const { id, outs } = await onSwift.create(declared);
    expect(made).toBe(1);
    await onSwift.read(id, outs);
    expect(made).toBe(1);
    store.objects.clear(); // the container was deleted
    await expect(onSwift.read(id, outs)).rejects.toMatchObject({
      code: "TARGET_UNREACHABLE",
      message: expect.stringContaining("has no Coffer target identity"),
    });
    await expect(onSwift.delete(id, outs)).rejects.toMatchObject({ code: "TARGET_UNREACHABLE" });
    expect(made).toBe(1);
    expect(store.objects.size).toBe(0);
  });

  test("state of schema 2 (a directory target) reads as it was, and diffs as unchanged", () => {
    const old = {
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/backups" },
      compression: "none",
      bandwidthLimitMiBps: 0,
      integrityCheck: "none",
      retention: null,
      rpoHours: null,
      reverifyAfterDays: null,
      host: null,
      escrow: null,
      requireEscrow: false,
      schemaVersion: 2,
      encryption: null,
      manifestKey: "bWFuaWZlc3Qta2V5LW9mLXRoZS1wb2xpY3ktMDAwMDA=",
      documentPath: "/srv/backups/.coffer/zones/zone-a/policy.json",
      revision: 3,
      settings: {
        compression: "none",
        encryption: { enabled: false },
        bandwidthLimitMiBps: 0,
        integrityCheck: "none",
        retention: {},
        escrow: null,
      },
      documentStatus: "ok" as const,
      targetId: "0123456789abcdef0123456789abcdef",
    };
    const state = upgradeOutputs(old as never);
    expect(state).toEqual({ ...old, schemaVersion: POLICY_SCHEMA_VERSION });
    expect(POLICY_SCHEMA_VERSION).toBe(3);
    const { schemaVersion: _v, encryption: _e, manifestKey: _m, documentPath: _d, revision: _r, ...rest } = old;
    const { settings: _s, documentStatus: _ds, targetId: _t, ...declared } = rest;
    expect(planPolicyChange(state, declared)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
  });
});

const setOn = (target: object, overrides: Record<string, unknown> = {}) => ({
  policy: {
    id: "zone-a-1",
    zone: "zone-a",
    target,
    compression: "zstd",
    integrityCheck: "full",
    bandwidthLimitMiBps: 0,
    encrypted: false,
  },
  keys: { manifestKey: "bWFuaWZlc3Qta2V5LW9mLXRoZS1wb2xpY3ktMDAwMDA=", targetKey: KEY },
  sources: [{ name: "web-1", disk: "/var/lib/libvirt/images/web-1.qcow2", format: "qcow2" }],
  trigger: "2026-11-27",
  ...overrides,
});
const swiftTarget = { ...swift, segmentMiB: 64, scratch: { path: "/var/tmp/coffer-scratch", maxGiB: 64 } };

describe("EncryptedBackupSet on a Swift target", () => {
  test("incremental sources are refused at preview (full points only, for now), naming the source", async () => {
    const sources = [{ name: "web-1", disk: "/d/web-1.qcow2", format: "qcow2", incremental: true }];
    const { failures } = await setProvider.check({}, setOn(swiftTarget, { sources }));
    expect(failures).toEqual([
      {
        property: "sources.0.incremental",
        reason: expect.stringMatching(/not supported on a Swift target yet.*remove incremental \(full points\)/),
      },
    ]);
  });

  test("a set without the policy's Swift key is refused at preview", async () => {
    const { failures } = await setProvider.check({}, setOn(swiftTarget, { keys: { manifestKey: "a-key" } }));
    expect(failures).toEqual([
      { property: "keys.targetKey", reason: expect.stringMatching(/Swift key did not reach/) },
    ]);
  });

  test("a point's plan works in the spool under scratch, names the container; the key is in the request only", () => {
    const inputs = backupSetInputs.parse(setOn(swiftTarget));
    const plan = planPoint(inputs, { setId: "nightly-1", pointId: "20261127T140000Z-ab12" });
    expect(plan.pointDir).toBe("/var/tmp/coffer-scratch/sets/zone-a/nightly-1/20261127T140000Z-ab12");
    expect(plan.secrets).toContain(KEY);
    const target = planTarget(plan, "0123456789abcdef0123456789abcdef");
    expect(target).toMatchObject({ path: "/var/tmp/coffer-scratch", swift: { container: "coffer-backups", key: KEY } });
    // The agent checks the request and never names the key in what it refuses.
    const bad = { target: { ...target, swift: { ...target.swift, segmentMiB: "big" } } };
    const error = (() => {
      try {
        checkAgentRequest("check-target", bad);
      } catch (e) {
        return e as Error;
      }
    })();
    expect(error?.message).toBeDefined();
    expect(error?.message).not.toContain(KEY);
    expect(targetRefOf({ targetPath: "/srv/b", zone: "zone-a" }, KEY)).toEqual({
      path: "/srv/b",
      id: undefined,
      zone: "zone-a",
    });
  });

  test("state of schema 4 reads as schema 5 unchanged (its locations are directories)", () => {
    const location = { targetPath: "/srv/backups", zone: "zone-a", manifestHost: "local", hosts: ["local"] };
    const old = { ...setOn({ kind: "directory", path: "/srv/backups" }), schemaVersion: 4, locations: [location] };
    const state = upgradeSet(old as never);
    expect(SET_SCHEMA_VERSION).toBe(5);
    expect(state).toEqual({ ...old, schemaVersion: 5 });
  });
});
