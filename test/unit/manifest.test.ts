import { createHmac, hkdfSync } from "node:crypto";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { canonicalJson } from "../../provider/common/canonicalJson";
import {
  MANIFEST_KIND,
  MANIFEST_SCHEMA_VERSION,
  Manifest,
  misplacement,
  openManifest,
  readManifest,
  renderSignedManifest,
} from "../../provider/agent/manifest";

jest.setTimeout(60_000);
const PASSPHRASE = "manifest-test-passphrase-17";
const fixture = (name: string) => readFileSync(path.join(__dirname, "../fixtures", name), "utf8");

const manifest = (overrides: Partial<Manifest> = {}): Manifest => ({
  kind: MANIFEST_KIND,
  schemaVersion: 2,
  setId: "2026-11-24-0a1b2c3d",
  name: "2026-11-24",
  trigger: "2026-11-24",
  zone: "zone-a",
  policy: { compression: "zstd", encrypted: true, bandwidthLimitMiBps: 0, integrityCheck: "full" },
  keySource: "passphrase",
  qemuVersion: "7.2",
  createdAt: "2026-11-24T03:00:05.000Z",
  items: [],
  ...overrides,
});

/** What a reader of the target could compute for a guess with the schema 1 key derivation (fast HKDF). */
function fastGuess(signed: { manifest: Manifest }, guess: string): string {
  const key = hkdfSync(
    "sha256",
    Buffer.from(guess),
    Buffer.from(signed.manifest.setId),
    Buffer.from("coffer manifest v1"),
    32,
  );
  return createHmac("sha256", Buffer.from(key)).update(canonicalJson(signed.manifest)).digest("hex");
}

describe("manifest signatures", () => {
  test("a passphrase-keyed manifest is no fast oracle: its key is a memory-hard scrypt of 256 MiB or more", async () => {
    const signed = JSON.parse(await renderSignedManifest(manifest(), PASSPHRASE));
    // With schema 1 this guess, at ~20,000 per second, confirmed the passphrase.
    expect(fastGuess(signed, PASSPHRASE)).not.toBe(signed.hmacSha256);
    expect(signed.manifest).toMatchObject({
      schemaVersion: MANIFEST_SCHEMA_VERSION,
      mac: { kdf: "scrypt", salt: expect.any(String) },
    });
    const { N, r, p } = signed.manifest.mac;
    expect(128 * N * r).toBeGreaterThanOrEqual(256 * 2 ** 20);
    expect(p).toBeGreaterThanOrEqual(1);
    const text = JSON.stringify(signed);
    expect(await openManifest(text, PASSPHRASE)).toMatchObject({ ok: true, authentic: true });
    expect(await openManifest(text, "not the passphrase at all")).toMatchObject({ ok: true, authentic: false });
    // Two manifests never share a salt, so no guess is tested against two at once.
    const other = JSON.parse(await renderSignedManifest(manifest(), PASSPHRASE));
    expect(other.manifest.mac.salt).not.toBe(signed.manifest.mac.salt);
  });

  test("a manifest of an unencrypted set keeps the fast HKDF: its key is random, not a passphrase", async () => {
    const key = "bWFuaWZlc3Qta2V5LW9mLXRoZS1wb2xpY3ktMDAwMDA=";
    const text = await renderSignedManifest(manifest({ keySource: "manifest-key" }), key);
    expect(JSON.parse(text).manifest.mac).toEqual({ kdf: "hkdf-sha256" });
    expect(await openManifest(text, key)).toMatchObject({ authentic: true });
  });

  test("manifests written by the previous release (schema 1, HKDF) still verify, and only with their key", async () => {
    const byPassphrase = fixture("manifest-v1-passphrase.json");
    expect(await openManifest(byPassphrase, "release-0.1-passphrase")).toMatchObject({
      ok: true,
      authentic: true,
      manifest: { schemaVersion: 1 },
    });
    expect(await openManifest(byPassphrase, "release-0.1-passphrasX")).toMatchObject({ ok: true, authentic: false });
    const byKey = fixture("manifest-v1-manifest-key.json");
    expect(await openManifest(byKey, "cmVsZWFzZS0wLjEtbWFuaWZlc3Qta2V5LTAwMDAwMDA=")).toMatchObject({
      ok: true,
      authentic: true,
    });
  });

  test("a changed key derivation breaks the signature (no downgrade to the fast one)", async () => {
    const signed = JSON.parse(await renderSignedManifest(manifest(), PASSPHRASE));
    const downgraded = { ...signed, manifest: { ...signed.manifest, schemaVersion: 1 } };
    delete downgraded.manifest.mac;
    expect(await openManifest(JSON.stringify(downgraded), PASSPHRASE)).toMatchObject({ authentic: false });
  });

  test("a manifest that asks a verifier for more than 1 GiB, or names a file outside its folder, is refused unread", () => {
    const greedy = {
      manifest: { ...manifest(), mac: { kdf: "scrypt", N: 2 ** 23, r: 32, p: 1, salt: "AAAAAAAAAAAAAAAAAAAAAA==" } },
      hmacSha256: "0".repeat(64),
    };
    expect(readManifest(JSON.stringify(greedy))).toMatchObject({
      ok: false,
      problem: expect.stringMatching(/more than 1 GiB/),
    });
    const item = JSON.parse(fixture("manifest-v1-passphrase.json"));
    item.manifest.items[0].file = "../other-set/web-1-root.qcow2.luks";
    expect(readManifest(JSON.stringify(item))).toMatchObject({
      ok: false,
      problem: expect.stringMatching(/items\.0\.file: must be a file name/),
    });
  });

  test("a manifest belongs to the folder of its own set, in the folder of its own zone", () => {
    const m = manifest();
    expect(misplacement(m, "/srv/backups/sets/zone-a/2026-11-24-0a1b2c3d")).toBeUndefined();
    // A copy for a restore elsewhere keeps its set folder's name; the zone is only checked under sets/.
    expect(misplacement(m, "/restore/2026-11-24-0a1b2c3d/")).toBeUndefined();
    expect(misplacement(m, "/srv/backups/sets/zone-a/2026-11-25-99999999")).toMatch(
      /belongs to set 2026-11-24-0a1b2c3d, not to this folder's set 2026-11-25-99999999/,
    );
    expect(misplacement(m, "/srv/backups/sets/zone-b/2026-11-24-0a1b2c3d")).toMatch(
      /belongs to zone zone-a, not to this folder's zone zone-b/,
    );
  });
});
