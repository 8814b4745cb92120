import {
  Manifest,
  WRAPPED_MANIFEST_SCHEMA_VERSION,
  manifestSchema,
  openManifest,
  pointSecret,
  readManifest,
  renderSignedManifest,
  sealedKeyContext,
} from "../../provider/agent/manifest";
import { WRAP_SCRYPT_COST, unwrapPointKey, wrapPointKey } from "../../provider/agent/pointKey";
import { planPoint, pointManifest } from "../../provider/backupSet/plan";
import { BackupSetInputs, backupSetInputs } from "../../provider/backupSet/schema";

jest.setTimeout(60_000);
const PASSPHRASE = "the policy's passphrase, which only wraps point keys";

const inputs = (encrypted = true): BackupSetInputs =>
  backupSetInputs.parse({
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/b" },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 0,
      encrypted,
    },
    keys: encrypted ? { passphrase: PASSPHRASE } : { manifestKey: "k".repeat(44) },
    sources: [{ name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.qcow2", format: "qcow2" }],
    trigger: "nightly",
  });

/** A point's plan and its manifest as takePoint composes them: the key wrapped beside the copies. */
async function wrappedPoint(pointId = "p1") {
  const plan = planPoint(inputs(), { setId: "web-1", pointId });
  const wrappedKey = await wrapPointKey(plan.keys.passphrase!, plan.wrapWith!, sealedKeyContext(plan));
  const manifest = pointManifest(plan, {
    items: [],
    qemuVersion: "7.2",
    createdAt: "2026-11-27T08:00:00.000Z",
    wrappedKey,
  });
  return { plan, manifest, text: await renderSignedManifest(manifest, plan.keys.manifestSecret) };
}

describe("an encrypted point's own key, wrapped by the passphrase", () => {
  test("each plan has a fresh random key for its backups and its HMAC, redacted; the passphrase only wraps it", () => {
    const [a, b] = [1, 2].map((n) => planPoint(inputs(), { setId: "web-1", pointId: `p${n}` }));
    for (const plan of [a, b]) {
      expect(plan.keys.passphrase).toMatch(/^[0-9a-f]{64}$/);
      expect(plan.keys.manifestSecret).toBe(plan.keys.passphrase);
      expect(plan.wrapWith).toBe(PASSPHRASE);
      expect(plan.secrets).toEqual(expect.arrayContaining([PASSPHRASE, plan.keys.passphrase]));
    }
    expect(a.keys.passphrase).not.toBe(b.keys.passphrase);
    const unencrypted = planPoint(inputs(false), { setId: "web-1", pointId: "p1" });
    expect(unencrypted.keys.passphrase).toBeUndefined();
    expect(unencrypted.wrapWith).toBeUndefined();
  });

  test("its manifest is schema 6, keySource passphrase, HKDF for the HMAC; the passphrase opens it through the wrap", async () => {
    const { plan, manifest, text } = await wrappedPoint();
    expect(manifest).toMatchObject({ schemaVersion: WRAPPED_MANIFEST_SCHEMA_VERSION, keySource: "passphrase" });
    const read = readManifest(text);
    if (!read.ok) throw new Error(read.problem);
    expect(read.manifest.mac).toEqual({ kdf: "hkdf-sha256" });
    expect(read.manifest.wrappedKey).toMatchObject({ kdf: "scrypt", ...WRAP_SCRYPT_COST, cipher: "aes-256-gcm" });
    expect(JSON.stringify(read.manifest)).not.toContain(plan.keys.passphrase);
    const pointKey = await pointSecret(read.manifest, PASSPHRASE);
    expect(pointKey).toBe(plan.keys.passphrase);
    expect(await openManifest(text, pointKey!)).toMatchObject({ ok: true, authentic: true });
    // The passphrase itself keys neither the HMAC nor (so) the backups.
    expect(await openManifest(text, PASSPHRASE)).toMatchObject({ ok: true, authentic: false });
    expect(await pointSecret(read.manifest, "not the passphrase")).toBeUndefined();
  });

  test("a wrapped key copied into another point's manifest does not open there", async () => {
    const one = await wrappedPoint("p1");
    const two = await wrappedPoint("p2");
    const swapped: Manifest = { ...two.manifest, wrappedKey: one.manifest.wrappedKey };
    expect(await pointSecret(swapped, PASSPHRASE)).toBeUndefined();
    const tampered = { ...one.manifest.wrappedKey!, ciphertext: Buffer.alloc(64, 1).toString("base64") };
    expect(await unwrapPointKey(tampered, PASSPHRASE, sealedKeyContext(one.manifest))).toBeUndefined();
  });

  test("the schema ties wrappedKey to keySource passphrase, schema 6 and an encrypted point, and bounds its cost", async () => {
    const { manifest } = await wrappedPoint();
    const problem = (m: object) => manifestSchema.safeParse(m).error?.issues[0];
    expect(problem(manifest)).toBeUndefined();
    expect(problem({ ...manifest, schemaVersion: 5 })).toMatchObject({ path: ["wrappedKey"] });
    expect(problem({ ...manifest, keySource: "manifest-key" })).toMatchObject({ path: ["wrappedKey"] });
    const unencrypted = { ...manifest, policy: { ...manifest.policy, encrypted: false } };
    expect(problem(unencrypted)).toMatchObject({ path: ["wrappedKey"] });
    const greedy = { ...manifest, wrappedKey: { ...manifest.wrappedKey!, N: 2 ** 23, r: 8 } };
    expect(problem(greedy)).toMatchObject({ path: ["wrappedKey"], message: "asks for more than 1 GiB of memory" });
    expect(problem({ ...manifest, wrappedKey: { ...manifest.wrappedKey!, N: 3 * 2 ** 16 } })).toMatchObject({
      path: ["wrappedKey", "N"],
    });
  });
});
