import { createHash, createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { promises as fs, readFileSync } from "node:fs";
import * as path from "node:path";
import { localHost as policyHost, provider as policyProvider } from "../../provider/backupPolicy";
import { createBackupPolicyProvider } from "../../provider/backupPolicy/provider";
import { provider as setChecker } from "../../provider/backupSet";
import { createBackupSetProvider } from "../../provider/backupSet/provider";
import { BackupSetOutputs, keysOfVersion, upgradeOutputs } from "../../provider/backupSet/state";
import { canonicalJson } from "../../provider/common/canonicalJson";
import { keyFingerprint, parsePublicKey, publicKeyOf, signingKeyProblem } from "../../provider/common/signingKey";
import {
  MANIFEST_KIND,
  Manifest,
  openManifest,
  renderSignedManifest,
  signManifest,
  signatureProblem,
  signedContent,
} from "../../provider/agent/manifest";
import { fakeAgent } from "../support/fakeAgent";
import { ed25519Pair } from "../support/signingKeys";
import { useTempDir } from "../support/tempDir";

const MANIFEST_KEY = "bWFuaWZlc3Qta2V5LW9mLXRoZS1wb2xpY3ktMDAwMDA=";
const fixture = (name: string) => readFileSync(path.join(__dirname, "../fixtures", name), "utf8");
const rsaPem = () =>
  generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();

const item = {
  name: "web-1-root",
  host: "kvm-07",
  source: { kind: "disk" as const, path: "/var/lib/libvirt/images/web-1.raw", format: "raw" as const },
  file: "web-1-root.qcow2",
  format: "qcow2" as const,
  compression: "zstd" as const,
  encrypted: false,
  virtualSize: 1 << 20,
  sizeBytes: 4096,
  streamSha256: "a".repeat(64),
  fileSha256: "b".repeat(64),
  verifiedAtBackup: "full" as const,
  startedAt: "2026-11-24T03:00:00.000Z",
  finishedAt: "2026-11-24T03:00:04.000Z",
};

const manifest = (): Manifest => ({
  kind: MANIFEST_KIND,
  schemaVersion: 3,
  setId: "nightly-0a1b2c3d",
  pointId: "20261124T030000Z-1a2b",
  name: "2026-11-24",
  trigger: "2026-11-24",
  zone: "zone-a",
  policy: { compression: "zstd", encrypted: false, bandwidthLimitMiBps: 0, integrityCheck: "full" },
  keySource: "manifest-key",
  qemuVersion: "7.2",
  createdAt: "2026-11-24T03:00:05.000Z",
  items: [item],
});

describe("signing keys", () => {
  test("a fingerprint is SHA256: and the unpadded base64 of the SHA-256 of the public key's SPKI DER", () => {
    const pair = ed25519Pair();
    const der = createPublicKey(pair.publicKey).export({ type: "spki", format: "der" });
    const expected = "SHA256:" + createHash("sha256").update(der).digest("base64").replace(/=+$/, "");
    expect(publicKeyOf(pair.privateKey)).toEqual({ pem: pair.publicKey, fingerprint: expected });
    expect(keyFingerprint(createPublicKey(pair.publicKey))).toBe(expected);
    expect(parsePublicKey(pair.publicKey, "k")).toEqual({
      ok: true,
      key: { pem: pair.publicKey, fingerprint: expected },
    });
  });

  test("a wrong key is named by its field, with the fix, and its text never appears in the message", () => {
    const pair = ed25519Pair();
    const rsa = rsaPem();
    const encrypted = generateKeyPairSync("ed25519")
      .privateKey.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "pw-of-the-key" })
      .toString();
    const cases: [unknown, RegExp][] = [
      [
        rsa,
        /^f is an RSA key; Coffer signs manifests with Ed25519 only: make one with `openssl genpkey -algorithm ed25519/,
      ],
      [pair.publicKey, /^f is a public key: give the private key it belongs to \(make one with `openssl genpkey/],
      [
        "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        /^f is not a PEM private key: give the whole file/,
      ],
      [encrypted, /^f is encrypted with a passphrase: give it unencrypted, as a Pulumi secret/],
      ["", /^f must be the PEM text of an Ed25519 private key \(make one with `openssl genpkey -algorithm ed25519/],
    ];
    for (const [pem, message] of cases) {
      const problem = signingKeyProblem(pem, "f");
      expect([pem, problem]).toEqual([pem, expect.stringMatching(message)]);
      if (typeof pem === "string" && pem) expect(problem).not.toContain(pem.split("\n")[1]);
    }
    expect(signingKeyProblem(pair.privateKey, "f")).toBeUndefined();
    expect(parsePublicKey(pair.privateKey, "--public-key k.pem")).toEqual({
      ok: false,
      problem: "--public-key k.pem is a private key: give its public key (openssl pkey -pubout)",
    });
    const rsaPublic = createPublicKey(rsa).export({ type: "spki", format: "pem" }).toString();
    expect(parsePublicKey(rsaPublic, "k")).toMatchObject({ ok: false, problem: expect.stringMatching(/RSA key/) });
  });
});

describe("signed manifests", () => {
  test("the signature covers a context and the HMAC's bytes, which name the key: anyone can check it", async () => {
    const pair = ed25519Pair();
    const { manifest: signed, signature } = signManifest(manifest(), pair.privateKey);
    const fingerprint = publicKeyOf(pair.privateKey).fingerprint;
    expect(signed.signing).toEqual({ algorithm: "ed25519", keyFingerprint: fingerprint });
    // Its final `mac` is fixed before signing: the agent's HMAC covers the same bytes.
    expect(signed.mac).toEqual({ kdf: "hkdf-sha256" });
    const content = Buffer.from("coffer manifest signature v1\n" + canonicalJson(signed));
    expect(signedContent(signed)).toEqual(content);
    expect(verify(null, content, createPublicKey(pair.publicKey), Buffer.from(signature, "base64"))).toBe(true);

    const text = await renderSignedManifest(signed, MANIFEST_KEY, signature);
    expect(text).not.toContain(pair.privateKey.split("\n")[1]);
    expect(JSON.parse(text)).toMatchObject({ ed25519Signature: signature, manifest: { signing: signed.signing } });
    const key = { pem: pair.publicKey, fingerprint };
    expect(signatureProblem(text, key)).toBeUndefined();
    // A passphrase or manifest key holder checks it as before.
    expect(await openManifest(text, MANIFEST_KEY)).toMatchObject({ ok: true, authentic: true });
  });

  test("any changed field, a stripped signature, or another key is told with the public key alone", async () => {
    const pair = ed25519Pair();
    const key = { pem: pair.publicKey, fingerprint: publicKeyOf(pair.privateKey).fingerprint };
    const { manifest: signed, signature } = signManifest(manifest(), pair.privateKey);
    const envelope = JSON.parse(await renderSignedManifest(signed, MANIFEST_KEY, signature));
    const changed = (change: (e: any) => void) => {
      const copy = JSON.parse(JSON.stringify(envelope));
      change(copy);
      return signatureProblem(JSON.stringify(copy), key);
    };
    const mismatch = {
      kind: "mismatch",
      message: expect.stringMatching(/Ed25519 signature \(key SHA256:.*\) does not match/),
    };
    expect(changed((e) => (e.manifest.items[0].fileSha256 = "c".repeat(64)))).toEqual(mismatch);
    expect(changed((e) => (e.manifest.policy.integrityCheck = "none"))).toEqual(mismatch);
    expect(changed((e) => (e.manifest.extra = "an unknown field is covered too"))).toEqual(mismatch);
    expect(changed((e) => delete e.ed25519Signature)).toMatchObject({ kind: "unsigned" });
    expect(changed((e) => delete e.manifest.signing)).toMatchObject({
      kind: "unsigned",
      message: `manifest: it is not signed; it should be signed with ${key.fingerprint}`,
    });
    // Re-signed with an attacker's key: the manifest's own claim is not trusted.
    const other = ed25519Pair();
    const forged = signManifest(manifest(), other.privateKey);
    const forgedText = await renderSignedManifest(forged.manifest, MANIFEST_KEY, forged.signature);
    expect(signatureProblem(forgedText, key)).toMatchObject({
      kind: "other-key",
      message: expect.stringMatching(/^manifest: it is signed with key SHA256:\S+, not with the expected SHA256:/),
    });
    // Claiming the expected key does not help.
    const claimed = JSON.parse(forgedText);
    claimed.manifest.signing.keyFingerprint = key.fingerprint;
    expect(signatureProblem(JSON.stringify(claimed), key)).toEqual(mismatch);
  });

  test("unsigned manifests of every earlier schema still read, and are unsigned to a public key", async () => {
    const key = { pem: ed25519Pair().publicKey, fingerprint: "SHA256:" + "A".repeat(43) };
    for (const name of ["manifest-v1-passphrase.json", "manifest-v1-manifest-key.json"]) {
      expect(signatureProblem(fixture(name), key)).toMatchObject({ kind: "unsigned" });
    }
    const unsigned = await renderSignedManifest(manifest(), MANIFEST_KEY);
    expect(JSON.parse(unsigned)).not.toHaveProperty("ed25519Signature");
    expect(await openManifest(unsigned, MANIFEST_KEY)).toMatchObject({ authentic: true });
    // A signature comes only with the manifest's `signing`.
    await expect(renderSignedManifest(manifest(), MANIFEST_KEY, "A".repeat(86) + "==")).rejects.toMatchObject({
      code: "INVALID_INPUT",
    });
  });
});

describe("BackupPolicy signing", () => {
  const tempDir = useTempDir();
  const declared = (signing?: object) => ({
    zone: "zone-a",
    target: { kind: "directory", path: tempDir() },
    ...(signing ? { signing } : {}),
  });
  const docFile = () => path.join(tempDir(), ".coffer", "zones", "zone-a", "policy.json");

  test("check names signing.privateKey and the fix for a wrong key, and never shows it", async () => {
    const rsa = rsaPem();
    const result = await policyProvider.check({}, declared({ privateKey: rsa }));
    expect(result.failures).toEqual([
      {
        property: "signing.privateKey",
        reason: expect.stringMatching(/^signing.privateKey is an RSA key; .*openssl genpkey -algorithm ed25519/),
      },
    ]);
    expect(JSON.stringify(result.failures)).not.toContain(rsa.split("\n")[1]);
    expect((await policyProvider.check({}, declared({ privateKey: 42 }))).failures).toEqual([
      { property: "signing.privateKey", reason: expect.stringMatching(/^signing.privateKey must be the PEM text/) },
    ]);
    const misspelled = (await policyProvider.check({}, declared({ key: "x" }))).failures;
    expect(misspelled?.map((f) => f.property)).toEqual(["signing.privateKey", "signing.key"]);
    const pair = ed25519Pair();
    expect((await policyProvider.check({}, declared({ privateKey: pair.privateKey }))).inputs.signing).toEqual({
      privateKey: pair.privateKey,
    });
  });

  test("the document and the public output hold the public key only; removing it out of band is drift", async () => {
    const pair = ed25519Pair();
    const inputs = (await policyProvider.check({}, declared({ privateKey: pair.privateKey }))).inputs;
    const { id, outs } = await policyProvider.create(inputs);
    const fingerprint = publicKeyOf(pair.privateKey).fingerprint;
    expect(outs.signing).toEqual({ privateKey: pair.privateKey });
    expect(outs.signingPublicKey).toEqual({ pem: pair.publicKey, fingerprint });
    const text = await fs.readFile(docFile(), "utf8");
    expect(text).not.toContain(pair.privateKey.split("\n")[1]);
    expect(JSON.parse(text).settings.signing).toEqual({ algorithm: "ed25519", publicKey: pair.publicKey, fingerprint });
    expect(await policyProvider.diff(id, outs, inputs)).toMatchObject({ changes: false });

    const edited = JSON.parse(text);
    delete edited.settings.signing;
    await fs.writeFile(docFile(), JSON.stringify(edited));
    const read = await policyProvider.read(id, outs);
    expect(read.props).toMatchObject({ signing: null, signingPublicKey: null });
    expect(read.inputs.signing).toBeUndefined();
    expect(await policyProvider.diff(id, read.props, inputs)).toMatchObject({ changes: true });

    // A new key (rotation) is a change; the document then names it.
    const next = ed25519Pair();
    const rotated = (await policyProvider.check({}, declared({ privateKey: next.privateKey }))).inputs;
    expect(await policyProvider.diff(id, outs, rotated)).toMatchObject({ changes: true });
    const { outs: after } = await policyProvider.update(id, read.props, rotated);
    expect(after.signingPublicKey.fingerprint).toBe(publicKeyOf(next.privateKey).fingerprint);
    expect(JSON.parse(await fs.readFile(docFile(), "utf8")).settings.signing.publicKey).toBe(next.publicKey);
  });

  test("a policy without signing and state from before signing diff as unchanged", async () => {
    const inputs = (await policyProvider.check({}, declared())).inputs;
    const { id, outs } = await policyProvider.create(inputs);
    expect(outs).toMatchObject({ signing: null, signingPublicKey: null });
    const { signing: _s, signingPublicKey: _p, ...older } = outs;
    expect(await policyProvider.diff(id, older, inputs)).toMatchObject({ changes: false });
    const read = await createBackupPolicyProvider(policyHost).read(id, older);
    expect(read.props).not.toHaveProperty("signing");
    expect(read.props).not.toHaveProperty("signingPublicKey");
  });
});

describe("an EncryptedBackupSet's signed points", () => {
  const policy = {
    id: "zone-a-1",
    zone: "zone-a",
    target: { kind: "directory", path: "/srv/b" },
    compression: "zstd",
    integrityCheck: "full",
    bandwidthLimitMiBps: 0,
    encrypted: false,
  };
  const declared = (signingKey: string | undefined, trigger = "2026-11-24") => ({
    policy,
    keys: { manifestKey: MANIFEST_KEY, ...(signingKey ? { signingKey } : {}) },
    sources: [{ name: "web-1-root", disk: "/var/lib/libvirt/images/web-1.raw" }],
    trigger,
  });
  const checked = async (news: object) => {
    const result = await setChecker.check({}, news as Record<string, unknown>);
    expect(result.failures).toBeUndefined();
    return result.inputs;
  };

  test("a wrong signing key reaching the set is refused at check, without its text", async () => {
    const rsa = rsaPem();
    const result = await setChecker.check({}, declared(rsa) as Record<string, unknown>);
    expect(result.failures).toEqual([
      { property: "keys.signingKey", reason: expect.stringMatching(/^the policy's signing.privateKey is an RSA key/) },
    ]);
    expect(JSON.stringify(result)).not.toContain(rsa.split("\n")[1]);
  });

  test("each point records its key; after a rotation old points keep theirs; tampering is drift", async () => {
    const first = ed25519Pair();
    const second = ed25519Pair();
    const fingerprint = (pair: { privateKey: string }) => publicKeyOf(pair.privateKey).fingerprint;
    let now = Date.parse("2026-11-24T03:00:00Z");
    const agent = fakeAgent({ now: () => new Date(now) });
    const provider = createBackupSetProvider(agent.host);

    const { outs: created } = await provider.create(await checked(declared(first.privateKey)));
    let state = created as BackupSetOutputs;
    expect(state.points[0]).toMatchObject({ id: "p001", signedBy: fingerprint(first) });
    expect(state.signers).toEqual([{ pem: first.publicKey, fingerprint: fingerprint(first) }]);
    expect(agent.signatures.size).toBe(1);

    // The rotation is a change of the next point's keys; the next point is signed with the new key.
    const rotated = await checked(declared(second.privateKey, "2026-11-25"));
    expect(await provider.diff(state.setId, state, await checked(declared(second.privateKey)))).toMatchObject({
      changes: true,
    });
    expect(agent.notes).toContainEqual(expect.stringMatching(/keys changed: applies from the next point/));
    now += 86_400_000;
    state = (await provider.update(state.setId, state, rotated)).outs as BackupSetOutputs;
    expect(state.points.map((p) => [p.id, p.signedBy])).toEqual([
      ["p001", fingerprint(first)],
      ["p002", fingerprint(second)],
    ]);
    expect(state.signers?.map((s) => s.fingerprint)).toEqual([fingerprint(first), fingerprint(second)]);
    // A signing key is no HMAC key: no keyring entry, and never one that goes to an agent.
    expect(state.keyVersion).toBe(1);
    expect(keysOfVersion(state, 1)).toEqual({ passphrase: undefined, manifestKey: MANIFEST_KEY });

    agent.calls.length = 0;
    state = (await provider.read(state.setId, { ...state, history: { reverifyAfterDays: 0.001 } })).props;
    expect(state.points.map((p) => p.status)).toEqual(["ok", "ok"]);
    const verifies = agent.calls.filter((c) => c.command === "verify-set");
    expect(verifies.map((c) => [path.basename(c.request.setDir), c.request.publicKey])).toEqual([
      ["p001", first.publicKey],
      ["p002", second.publicKey],
    ]);
    // The private keys never left the provider.
    for (const key of [first.privateKey, second.privateKey]) {
      const body = key.split("\n")[1];
      expect(agent.calls.filter((c) => JSON.stringify(c.request).includes(body))).toEqual([]);
    }

    // A changed manifest (a recorded hash rewritten on the target) fails by name, and the next up takes a point.
    const dir = [...agent.manifests.keys()].find((d) => d.endsWith("/p001"))!;
    agent.manifests.get(dir)!.items[0].fileSha256 = "f".repeat(64);
    now += 86_400_000;
    const drifted = (await provider.read(state.setId, { ...state, history: { reverifyAfterDays: 0.001 } })).props;
    expect(drifted.points[0]).toMatchObject({
      status: "failed",
      failures: [expect.stringMatching(/^manifest: its Ed25519 signature \(key SHA256:\S+\) does not match/)],
    });
    expect(drifted.verification).toMatchObject({ status: "failed" });
    // A stripped signature on the newest point: unsigned, though state says it was signed.
    agent.signatures.delete([...agent.manifests.keys()].find((d) => d.endsWith("/p002"))!);
    const stripped = (await provider.read(state.setId, state)).props;
    expect(stripped.points[1].failures).toEqual([
      `manifest: it names key ${fingerprint(second)} but carries no Ed25519 signature; ` +
        `it should be signed with ${fingerprint(second)}`,
    ]);
    expect(await provider.diff(state.setId, stripped, rotated)).toMatchObject({ changes: true });
  });

  test("unsigned points, and state written before signatures, verify as before, with no public key", async () => {
    const agent = fakeAgent({ now: () => new Date("2026-11-24T03:00:00Z") });
    const provider = createBackupSetProvider(agent.host);
    const { outs } = await provider.create(await checked(declared(undefined)));
    expect(outs).not.toHaveProperty("signers");
    expect(outs.points[0]).not.toHaveProperty("signedBy");
    const older = upgradeOutputs({ ...outs, schemaVersion: 3 });
    const { props } = await provider.read(outs.setId, older);
    expect(props.points[0].status).toBe("ok");
    expect(agent.calls.find((c) => c.command === "verify-set")?.request).not.toHaveProperty("publicKey");
  });
});
