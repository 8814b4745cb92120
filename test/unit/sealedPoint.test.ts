import {
  MANIFEST_SCHEMA_VERSION,
  Manifest,
  manifestSchema,
  openManifest,
  readManifest,
  renderSignedManifest,
  sealedKeyContext,
} from "../../provider/agent/manifest";
import { rebuildSetIndex } from "../../provider/agent/pointIndex";
import { planPoint, pointManifest, sealedForRecipients } from "../../provider/backupSet/plan";
import { BackupSetInputs, backupSetInputs } from "../../provider/backupSet/schema";
import { RecipientKey, open, parseRecipientKey } from "../../provider/escrow/envelope";
import { targetLayout } from "../../provider/targets/layout";
import { PemPair, rsaPair, x25519Pair } from "../support/escrowKeys";
import { memoryStore } from "../support/memoryStore";

jest.setTimeout(60_000);
const PASSPHRASE = "the policy's passphrase, which opens no sealed point";

const inputs = (): BackupSetInputs =>
  backupSetInputs.parse({
    policy: {
      id: "zone-a-1",
      zone: "zone-a",
      target: { kind: "directory", path: "/srv/b" },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 0,
      encrypted: true,
    },
    keys: { passphrase: PASSPHRASE, manifestKey: "k".repeat(44) },
    escrow: { recordId: "zone-a-passphrase", store: "/srv/escrow", escrowsPassphrase: true },
    sources: [{ name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.qcow2", format: "qcow2" }],
    trigger: "final",
  });

const recipientKey = (pair: PemPair): RecipientKey => {
  const parsed = parseRecipientKey(pair.publicKey);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.key;
};

const named = (pairs: PemPair[]) => pairs.map((pair, i) => ({ name: `r${i}`, key: recipientKey(pair) }));

/** A point sealed for `pairs` and its manifest, as takePoint would compose it. */
async function sealedPoint(pairs: PemPair[], threshold: number, pointId = "p1") {
  const plan = await sealedForRecipients(planPoint(inputs(), { setId: "final-web-1", pointId }), {
    recipients: named(pairs),
    threshold,
  });
  const manifest = pointManifest(plan, { items: [], qemuVersion: "7.2", createdAt: "2026-11-27T02:00:00.000Z" });
  return { plan, manifest, text: await renderSignedManifest(manifest, plan.keys.manifestSecret) };
}

const [alice, bob, carol] = [x25519Pair(), rsaPair(), x25519Pair()];

describe("a point sealed for recipients", () => {
  test("its plan has a fresh random key, for its backups and its HMAC, redacted, and no passphrase escrow", async () => {
    const plain = planPoint(inputs(), { setId: "final-web-1", pointId: "p1" });
    const { plan } = await sealedPoint([alice], 1);
    const { plan: other } = await sealedPoint([alice], 1);
    expect(plan.keySource).toBe("recipients");
    expect(plan.policy.encrypted).toBe(true);
    expect(plan.keys.passphrase).toMatch(/^[0-9a-f]{64}$/);
    expect(plan.keys.manifestSecret).toBe(plan.keys.passphrase);
    expect(plan.keys.passphrase).not.toBe(other.keys.passphrase);
    expect(plan.secrets).toEqual(expect.arrayContaining([PASSPHRASE, "k".repeat(44), plan.keys.passphrase]));
    expect(plan.escrow).toBeUndefined();
    expect(plan.sealedKey?.recipients.map((r) => [r.name, r.fingerprint])).toEqual([
      ["r0", recipientKey(alice).fingerprint],
    ]);
    // The plan it was made from is the one EncryptedBackupSet takes, unchanged: its key wrapped by the passphrase.
    expect(plain).toMatchObject({ keySource: "passphrase", wrapWith: PASSPHRASE });
    expect(plan.wrapWith).toBeUndefined();
    expect(plain.sealedKey).toBeUndefined();
    expect(plain.escrow).toMatchObject({ recordId: "zone-a-passphrase", store: "/srv/escrow" });
  });

  test("a threshold outside 1..recipients is refused", async () => {
    const plan = planPoint(inputs(), { setId: "s", pointId: "p1" });
    await expect(sealedForRecipients(plan, { recipients: named([alice]), threshold: 2 })).rejects.toMatchObject({
      code: "INVALID_INPUT",
      message: expect.stringMatching(/threshold must be from 1 to the number of recipients \(1\), not 2/),
    });
    await expect(sealedForRecipients(plan, { recipients: named([alice]), threshold: 0 })).rejects.toThrow(/not 0/);
  });

  test("its manifest is schema 5, round-trips, and its HMAC opens with the sealed key, not the passphrase", async () => {
    const { plan, manifest, text } = await sealedPoint([alice, bob], 1);
    expect(manifest).toMatchObject({ schemaVersion: 5, keySource: "recipients", policy: { encrypted: true } });
    const read = readManifest(text);
    if (!read.ok) throw new Error(read.problem);
    expect(read.manifest.sealedKey).toEqual(plan.sealedKey);
    expect(read.manifest.mac).toEqual({ kdf: "hkdf-sha256" });
    expect(read.manifest.escrow).toBeUndefined();
    for (const pair of [alice, bob]) {
      const key = await open(read.manifest.sealedKey!, [pair.privateKey], sealedKeyContext(read.manifest));
      expect(key).toBe(plan.keys.passphrase);
      expect(await openManifest(text, key)).toMatchObject({ ok: true, authentic: true });
    }
    expect(await openManifest(text, PASSPHRASE)).toMatchObject({ ok: true, authentic: false });
  });

  test("an unencrypted point's manifest is still written as schema 4", async () => {
    const unencrypted = inputs();
    unencrypted.policy.encrypted = false;
    const plan = planPoint(unencrypted, { setId: "s", pointId: "p1" });
    const manifest = pointManifest(plan, { items: [], qemuVersion: "7.2", createdAt: "2026-11-27T02:00:00.000Z" });
    expect(manifest.schemaVersion).toBe(MANIFEST_SCHEMA_VERSION);
    expect(MANIFEST_SCHEMA_VERSION).toBe(4);
    expect(manifest.sealedKey).toBeUndefined();
  });

  test("a sealed key copied into another point's manifest does not open there (X25519 and RSA)", async () => {
    const { manifest } = await sealedPoint([alice, bob], 1, "p1");
    const { manifest: other } = await sealedPoint([alice, bob], 1, "p2");
    const moved: Manifest = { ...other, sealedKey: manifest.sealedKey };
    for (const pair of [alice, bob]) {
      await expect(open(moved.sealedKey!, [pair.privateKey], sealedKeyContext(moved))).rejects.toMatchObject({
        code: expect.stringMatching(/^(WRONG_KEY|VERIFY_FAILED)$/),
      });
    }
    // Another zone or set is another context too.
    expect(sealedKeyContext({ ...manifest, zone: "zone-b" })).not.toBe(sealedKeyContext(manifest));
    expect(sealedKeyContext({ ...manifest, setId: "final-web-2" })).not.toBe(sealedKeyContext(manifest));
  });

  test("a key of no recipient is refused, naming the recipients", async () => {
    const { manifest } = await sealedPoint([alice, bob], 1);
    await expect(
      open(manifest.sealedKey!, [carol.privateKey], sealedKeyContext(manifest), "this point's key"),
    ).rejects.toMatchObject({
      code: "WRONG_KEY",
      message: expect.stringMatching(/is not one of this point's key's recipients \(r0, r1\)/),
    });
  });

  test("threshold 2 of 3: one key is not enough, any two are", async () => {
    const { plan, manifest } = await sealedPoint([alice, bob, carol], 2);
    const context = sealedKeyContext(manifest);
    await expect(open(manifest.sealedKey!, [bob.privateKey], context)).rejects.toThrow(/needs keys of 2 recipients/);
    for (const keys of [
      [alice, bob],
      [bob, carol],
      [carol, alice],
    ]) {
      const opened = await open(
        manifest.sealedKey!,
        keys.map((k) => k.privateKey),
        context,
      );
      expect(opened).toBe(plan.keys.passphrase);
    }
  });

  test("the schema ties sealedKey to keySource recipients, schema 5 and an encrypted point", async () => {
    const { manifest } = await sealedPoint([alice], 1);
    const problem = (m: object) => manifestSchema.safeParse(m).error?.issues[0];
    expect(problem(manifest)).toBeUndefined();
    expect(problem({ ...manifest, sealedKey: undefined })).toMatchObject({ path: ["sealedKey"] });
    expect(problem({ ...manifest, keySource: "passphrase" })).toMatchObject({ path: ["sealedKey"] });
    expect(problem({ ...manifest, schemaVersion: 4 })).toMatchObject({ path: ["keySource"] });
    const unencrypted = { ...manifest, policy: { ...manifest.policy, encrypted: false } };
    expect(problem(unencrypted)).toMatchObject({ path: ["keySource"] });
    expect(problem({ ...manifest, schemaVersion: 8 })).toMatchObject({ path: ["schemaVersion"] });
  });

  test("a set index rebuilt from the manifests records the point's key source", async () => {
    const { plan, text } = await sealedPoint([alice], 1);
    const set = { store: memoryStore(), zone: plan.zone, setId: plan.setId };
    await set.store.writeTextAtomic(`${targetLayout.setFolder(set.zone, set.setId)}/p1/manifest.json`, text);
    const rebuilt = await rebuildSetIndex(set);
    expect(rebuilt.points.map((p) => [p.id, p.keySource, p.escrow])).toEqual([["p1", "recipients", undefined]]);
  });
});
