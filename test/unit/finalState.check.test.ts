import { UNKNOWN } from "../../provider/common/check";
import { finalPointPlan, vmSources } from "../../provider/finalState/plan";
import { createFinalStateProvider } from "../../provider/finalState/provider";
import type { FinalStateOutputs } from "../../provider/finalState/state";
import { rsaPair, x25519Pair } from "../support/escrowKeys";
import { ed25519Pair } from "../support/signingKeys";

const signing = ed25519Pair();
const [forensics, audit] = [x25519Pair(), x25519Pair()];
const URN = "urn:pulumi:dev::fleet::pulumi-nodejs:dynamic/coffer:FinalStateBackup::web-1-final";

const inputs = (extra: Record<string, unknown> = {}) => ({
  vm: { qmpSocket: "/run/qemu/web-1.qmp", devices: ["vda"], host: "kvm-07" },
  policy: {
    id: "forensics-1",
    zone: "forensics",
    target: { kind: "directory", path: "/srv/forensics" },
    compression: "zstd",
    integrityCheck: "full",
    bandwidthLimitMiBps: 0,
    encrypted: true,
  },
  keys: { signingKey: signing.privateKey },
  recipients: [{ name: "forensics", publicKey: forensics.publicKey }],
  holdDays: 90,
  reason: "security",
  takenFor: { stack: "dev", project: "fleet", urn: URN },
  ...extra,
});

// check and diff never reach a host: a provider without one is enough.
const provider = createFinalStateProvider(undefined as never);
const failuresOf = async (news: Record<string, unknown>) => (await provider.check({}, news)).failures ?? [];

describe("FinalStateBackup check: bad input fails at preview, naming the field and the fix", () => {
  test("valid inputs pass, the threshold defaults to 1", async () => {
    const checked = await provider.check({}, inputs());
    expect(checked.failures).toBeUndefined();
    expect(checked.inputs).toMatchObject({ threshold: 1, holdDays: 90 });
  });

  test.each([
    [
      { keys: {} },
      "policy.signing",
      /the policy has no signing key: .* give the BackupPolicy signing: \{ privateKey \}/,
    ],
    [{ keys: { signingKey: "not a key" } }, "keys.signingKey", /signing\.privateKey/],
    [{ holdDays: 0 }, "holdDays", /holdDays must be a whole number of days from 1 to 36500/],
    [{ holdDays: 1.5 }, "holdDays", /holdDays must be a whole number/],
    [{ reason: " " }, "reason", /reason must not be empty/],
    [{ recipients: [] }, "recipients", /at least one holder of a private key/],
    [
      { threshold: 2 },
      "threshold",
      /threshold 2 is more than the 1 recipient\(s\): nobody could recover the final point/,
    ],
    [
      { recipients: [{ name: "weak", publicKey: rsaPair(1024).publicKey }] },
      "recipients.0.publicKey",
      /recipients\[0\]\.publicKey \(weak\) .*3072/,
    ],
    [{ vm: { qmpSocket: "relative.qmp", devices: ["vda"] } }, "vm.qmpSocket", /must be an absolute path/],
    [{ vm: { qmpSocket: "/run/a.qmp", devices: [] } }, "vm.devices", /vm.devices must name at least one disk/],
    [
      { vm: { server: "web-1" } },
      "vm",
      /vm must be \{ qmpSocket, devices: \["vda"\] \} \(a running VM\) or \{ disks: .* or \{ novaServer \}/,
    ],
    [{ allowDeleteWithoutBackup: "yes" }, "allowDeleteWithoutBackup", /must be true or false/],
    [
      { vm: { novaServer: "5f0c" }, policy: { ...inputs().policy, host: "nas-1" } },
      "vm.novaServer",
      /a Nova server's disks are staged on the machine that runs Pulumi, but the policy's target is reached through nas-1/,
    ],
  ])("%j fails at %s", async (change, property, reason) => {
    const failures = await failuresOf(inputs(change));
    expect(failures).toEqual(expect.arrayContaining([{ property, reason: expect.stringMatching(reason) }]));
  });

  test("a value not known yet during preview (a VM's socket from its resource) passes", async () => {
    const checked = await provider.check({}, inputs({ vm: { qmpSocket: UNKNOWN, devices: ["vda"] } }));
    expect(checked.failures).toBeUndefined();
  });
});

describe("FinalStateBackup diff", () => {
  const state = { ...inputs(), threshold: 1, schemaVersion: 1, setId: "final-x", targetId: "t", armedAt: "a" };

  test("another VM replaces it; other devices, recipients or hold update it in place; nothing changed is no change", async () => {
    const diff = (news: Record<string, unknown>) => provider.diff("final-x", state as never, { threshold: 1, ...news });
    expect(await diff(inputs())).toMatchObject({ changes: false, replaces: [] });
    expect(await diff(inputs({ holdDays: 30 }))).toMatchObject({ changes: true, replaces: [] });
    expect(await diff(inputs({ vm: { ...inputs().vm, devices: ["vda", "vdb"] } }))).toMatchObject({
      changes: true,
      replaces: [],
    });
    for (const vm of [
      { qmpSocket: "/run/qemu/web-2.qmp", devices: ["vda"], host: "kvm-07" },
      { qmpSocket: "/run/qemu/web-1.qmp", devices: ["vda"], host: "kvm-08" },
      { qmpSocket: UNKNOWN, devices: ["vda"] },
      { disks: [{ disk: "/var/lib/vms/web-1.raw" }] },
      { novaServer: "5f0c" },
    ]) {
      expect(await diff(inputs({ vm }))).toMatchObject({ changes: true, replaces: ["vm"], deleteBeforeReplace: false });
    }
  });
});

describe("the final point's plan", () => {
  test("a stopped VM's files become sources named after them, on the VM's host", () => {
    const sources = vmSources({
      disks: [
        { disk: "/vms/web-1/root.qcow2", format: "qcow2" },
        { disk: "/vms/web-1/data.raw" },
        { disk: "/x/root.raw" },
      ],
      host: "kvm-07",
    });
    expect(sources).toEqual([
      { name: "root", disk: "/vms/web-1/root.qcow2", format: "qcow2", host: "kvm-07" },
      { name: "data", disk: "/vms/web-1/data.raw", host: "kvm-07" },
      { name: "root-2", disk: "/x/root.raw", host: "kvm-07" },
    ]);
  });

  test("a Nova server is one source, its disks its items; scrub reaches the staging", async () => {
    expect(vmSources({ novaServer: "5f0c" })).toEqual([{ name: "server", novaServer: "5f0c" }]);
    const state = { ...inputs({ vm: { novaServer: "5f0c" }, scrub: true }), threshold: 1, setId: "f", targetId: "t" };
    const plan = await finalPointPlan(state as FinalStateOutputs, {
      pointId: "p",
      now: new Date(),
      operation: "delete",
    });
    expect(plan).toMatchObject({ scrubStaging: true, items: [{ name: "server", source: { novaServer: "5f0c" } }] });
    const unscrubbed = await finalPointPlan({ ...state, scrub: undefined } as FinalStateOutputs, {
      pointId: "p",
      now: new Date(),
      operation: "delete",
    });
    expect(unscrubbed.scrubStaging).toBeUndefined();
  });

  test("sealed for the recipients with a fresh key, signed, with the deletion's context and hold", async () => {
    const state = {
      ...inputs({ recipients: [...inputs().recipients, { name: "audit", publicKey: audit.publicKey }] }),
      threshold: 1,
      schemaVersion: 1,
      setId: "final-web-1-final-1a2b",
      targetId: "t",
      armedAt: "2026-11-27T00:00:00Z",
    } as FinalStateOutputs;
    const now = new Date("2026-11-27T12:00:00Z");
    const plan = await finalPointPlan(state, { pointId: "p-1", now, operation: "replace" });
    const other = await finalPointPlan(state, { pointId: "p-2", now, operation: "delete" });
    expect(plan).toMatchObject({
      setId: "final-web-1-final-1a2b",
      keySource: "recipients",
      policy: { encrypted: true, compression: "zstd", integrityCheck: "full" },
      items: [{ name: "vda", via: "kvm-07", source: { qmpSocket: "/run/qemu/web-1.qmp", device: "vda" } }],
      final: {
        reason: "security",
        operation: "replace",
        takenFor: { stack: "dev", project: "fleet", urn: URN },
        holdUntil: "2027-02-25T12:00:00.000Z",
      },
    });
    expect(plan.sealedKey?.recipients.map((r) => r.name)).toEqual(["forensics", "audit"]);
    expect(plan.keys.signingKey).toBe(signing.privateKey);
    expect(plan.keys.passphrase).toMatch(/^[0-9a-f]{64}$/);
    expect(plan.keys.passphrase).not.toBe(other.keys.passphrase);
    expect(plan.secrets).toContain(plan.keys.passphrase);
    expect(plan.escrow).toBeUndefined();
  });
});
