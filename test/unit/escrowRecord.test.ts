import { generateKeyPairSync } from "node:crypto";
import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import { RecipientKey, parseRecipientKey } from "../../provider/escrow/envelope";
import { readRecord, recordVersions, recoverSecret, writeRecord } from "../../provider/escrow/record";
import { useTempDir } from "../support/tempDir";

const SECRET = "the policy passphrase, escrowed";
const tempDir = useTempDir();
const pairs = [generateKeyPairSync("x25519"), generateKeyPairSync("x25519"), generateKeyPairSync("x25519")];
const publicPem = (i: number) => pairs[i].publicKey.export({ type: "spki", format: "pem" }) as string;
const privatePem = (i: number) => pairs[i].privateKey.export({ type: "pkcs8", format: "pem" }) as string;
const recipients = ["dr-team", "security", "cto"].map((name, i) => {
  const parsed = parseRecipientKey(publicPem(i));
  if (!parsed.ok) throw new Error(parsed.reason);
  return { name, key: parsed.key as RecipientKey };
});

describe("escrow records", () => {
  test("a version is one 0600 file under the record's id, with no trace of the secret", async () => {
    const { path: file, digest } = await writeRecord(tempDir(), "gold-passphrase", 1, SECRET, recipients, 2);
    expect(file).toBe(path.join(tempDir(), "gold-passphrase", "v1.json"));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await fs.readFile(file, "utf8")).not.toContain(SECRET);
    const read = await readRecord(tempDir(), "gold-passphrase", 1);
    expect(read?.digest).toBe(digest);
    expect(read?.record.sealed.recipients.map((r) => r.name)).toEqual(["dr-team", "security", "cto"]);
  });

  test("recovery takes the newest version unless one is named, and needs the threshold of keys", async () => {
    await writeRecord(tempDir(), "p", 1, "old secret value", recipients, 2);
    await writeRecord(tempDir(), "p", 2, SECRET, recipients, 2);
    expect(await recordVersions(tempDir(), "p")).toEqual([1, 2]);
    expect(await recoverSecret(tempDir(), "p", [privatePem(0), privatePem(2)])).toBe(SECRET);
    expect(await recoverSecret(tempDir(), "p", [privatePem(1), privatePem(2)], 1)).toBe("old secret value");
    await expect(recoverSecret(tempDir(), "p", [privatePem(1)])).rejects.toThrow(/needs keys of 2 recipients; got 1/);
    await expect(recoverSecret(tempDir(), "missing", [privatePem(1)])).rejects.toThrow(/no escrow record "missing"/);
  });

  test("a record copied under another version does not open (the secret is bound to id and version)", async () => {
    await writeRecord(tempDir(), "p", 1, SECRET, recipients, 1);
    const text = await fs.readFile(path.join(tempDir(), "p", "v1.json"), "utf8");
    await fs.writeFile(path.join(tempDir(), "p", "v2.json"), text.replace('"version": 1', '"version": 2'));
    await expect(recoverSecret(tempDir(), "p", [privatePem(0)], 2)).rejects.toThrow(/does not open this record/);
  });
});
