import fc from "fast-check";
import { planHosts, planPoint, planTarget, pointManifest } from "../../provider/backupSet/plan";
import { BackupSetInputs, backupSetInputs } from "../../provider/backupSet/schema";

const policy = {
  id: "zone-a-1",
  zone: "zone-a",
  target: { kind: "directory" as const, path: "/srv/b" },
  compression: "zstd" as const,
  integrityCheck: "full" as const,
  bandwidthLimitMiBps: 8,
  encrypted: true,
};
const inputs = (change: Partial<Record<keyof BackupSetInputs, unknown>> = {}): BackupSetInputs =>
  backupSetInputs.parse({
    policy,
    keys: { passphrase: "correct horse battery staple", manifestKey: "k".repeat(44) },
    sources: [
      { name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.qcow2", format: "qcow2" },
      { name: "db-1-vda", qmpSocket: "/run/qemu/db-1.qmp", device: "vda", host: "kvm-2" },
    ],
    trigger: "2026-11-24",
    ...change,
  });

describe("planPoint", () => {
  test("places the point in the set's folder under the target and zone, and asks each agent for its source", () => {
    const plan = planPoint(inputs(), { setId: "nightly-1", pointId: "p1" });
    expect(plan).toMatchObject({
      setId: "nightly-1",
      zoneDir: "/srv/b/sets/zone-a",
      pointDir: "/srv/b/sets/zone-a/nightly-1/p1",
      manifestWhere: undefined,
      concurrency: 2,
      keySource: "passphrase",
      policy: { compression: "zstd", encrypted: true, bandwidthLimitMiBps: 8, integrityCheck: "full" },
    });
    expect(plan.items).toEqual([
      {
        name: "web-1-root",
        via: undefined,
        source: {
          disk: "/var/lib/libvirt/images/web-1.qcow2",
          format: "qcow2",
          backingFiles: undefined,
          dataFile: undefined,
        },
      },
      { name: "db-1-vda", via: "kvm-2", source: { qmpSocket: "/run/qemu/db-1.qmp", device: "vda" } },
    ]);
    expect(planTarget(plan, "t-1")).toEqual({ path: "/srv/b", id: "t-1", zone: "zone-a" });
    expect(planHosts(plan)).toEqual(["local", "kvm-2"]);
  });

  test("an unencrypted point signs with the manifest key and hands no passphrase to agents", () => {
    const plan = planPoint(inputs({ policy: { ...policy, encrypted: false } }), { setId: "s", pointId: "p1" });
    expect(plan.keySource).toBe("manifest-key");
    expect(plan.keys).toEqual({ passphrase: undefined, manifestSecret: "k".repeat(44) });
    // Both keys are still redacted from errors.
    expect(plan.secrets).toEqual(["correct horse battery staple", "k".repeat(44)]);
  });

  test("a source's host wins over the set's, which wins over the policy's; the manifest goes where the set says", () => {
    fc.assert(
      fc.property(
        fc.option(fc.constantFrom("a", "b"), { nil: undefined }),
        fc.option(fc.constantFrom("c", "d"), { nil: undefined }),
        fc.option(fc.constantFrom("e", "f"), { nil: undefined }),
        (sourceHost, setHost, policyHost) => {
          const plan = planPoint(
            inputs({
              policy: { ...policy, host: policyHost },
              host: setHost,
              sources: [{ name: "x", disk: "/x", host: sourceHost }],
            }),
            { setId: "s", pointId: "p1" },
          );
          expect(plan.items[0].via).toBe(sourceHost ?? setHost ?? policyHost);
          expect(plan.manifestWhere).toBe(setHost ?? policyHost);
          expect(planHosts(plan)).toContain(plan.manifestWhere ?? "local");
          expect(new Set(planHosts(plan)).size).toBe(planHosts(plan).length);
        },
      ),
    );
  });

  test("a Cinder source copies to the target by its own copyToTarget, else by the policy's; other kinds never", () => {
    const volume = { name: "db", cinderVolume: "9d1c6a3e-0b5e-4b8e-9a57-3c1c3b0b7f10" };
    const planned = (policyCopies: boolean | undefined, sources: object[]) =>
      planPoint(inputs({ policy: { ...policy, copyToTarget: policyCopies }, sources }), {
        setId: "s",
        pointId: "p",
      }).items.map((item) => item.source);
    const copiesOf = (policyCopies: boolean | undefined, sources: object[]) =>
      planned(policyCopies, sources).map((source) => (source as { copyToTarget?: boolean }).copyToTarget);
    expect(copiesOf(true, [volume])).toEqual([true]);
    expect(copiesOf(true, [{ ...volume, copyToTarget: false }])).toEqual([false]);
    expect(copiesOf(undefined, [{ ...volume, copyToTarget: true }])).toEqual([true]);
    expect(copiesOf(false, [{ ...volume, copyToTarget: true }])).toEqual([true]);
    expect(copiesOf(undefined, [volume])).toEqual([undefined]);
    // Disks and Glance images have no copy: the policy's flag changes nothing the agent or the cloud is asked.
    const others = [
      { name: "w", disk: "/d" },
      { name: "i", glanceImage: "5b3f7c1e-8d2a-4f7e-9c0b-1a2b3c4d5e6f" },
    ];
    expect(planned(true, others)).toEqual(planned(undefined, others));
    expect(copiesOf(true, others)).toEqual([undefined, undefined]);
  });

  test("the manifest names the escrow version only when the point counted a reference to it", () => {
    const escrow = { recordId: "gold", store: "/srv/escrow", escrowsPassphrase: true };
    const plan = planPoint(inputs({ escrow }), { setId: "s", pointId: "p1" });
    const taken = { items: [], qemuVersion: "7.2.0", createdAt: "2026-11-26T00:00:00.000Z" };
    expect(pointManifest(plan, { ...taken, escrowVersion: 3 }).escrow).toEqual({
      recordId: "gold",
      store: "/srv/escrow",
      version: 3,
    });
    expect(pointManifest(plan, taken).escrow).toBeUndefined();
    expect(pointManifest(plan, taken)).toMatchObject({ setId: "s", zone: "zone-a", name: "2026-11-24" });
  });
});
