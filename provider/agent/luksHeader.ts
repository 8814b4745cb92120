import { createCipheriv, createHash, pbkdf2, randomBytes, randomUUID } from "node:crypto";
import { promises as fs } from "node:fs";
import { promisify } from "node:util";

/**
 * A LUKS1 header for a point's own random key, written here rather than by `qemu-img create -f luks`:
 * QEMU times its PBKDF2 for about 2 s of CPU at every creation, whatever `iter-time` says, and a random
 * 256-bit key needs no stretching. The container is standard LUKS1 (aes-xts-plain64, sha256, 4000
 * stripes, as QEMU and cryptsetup make it): QEMU's luks driver and cryptsetup open it.
 */

const SECTOR = 512;
const KEY_BYTES = 64; // aes-256-xts: two 256-bit keys
const STRIPES = 4000;
const SLOTS = 8;
/** The key slots' material starts after the first 4 KiB, each slot aligned to 4 KiB, as QEMU lays them out. */
const FIRST_SLOT_SECTOR = 8;
const SLOT_SECTORS = Math.ceil((KEY_BYTES * STRIPES) / 4096) * 8;
/** The payload starts at 2 MiB, as cryptsetup aligns it. */
export const LUKS_PAYLOAD_OFFSET_BYTES = 4096 * SECTOR;
/** PBKDF2 iterations for the key slot and the master key digest: the LUKS1 minimum, enough for a random key. */
const ITERATIONS = 1000;
const SLOT_ACTIVE = 0x00ac71f3;
const SLOT_INACTIVE = 0x0000dead;

const pbkdf2Async = promisify(pbkdf2);

/** LUKS1's anti-forensic diffusion: each hash-sized chunk i of `block` becomes sha256(be32(i) || chunk). */
function diffuse(block: Buffer): Buffer {
  const out = Buffer.alloc(block.length);
  for (let i = 0, at = 0; at < block.length; i++, at += 32) {
    const chunk = block.subarray(at, Math.min(at + 32, block.length));
    const index = Buffer.alloc(4);
    index.writeUInt32BE(i);
    createHash("sha256").update(index).update(chunk).digest().copy(out, at, 0, chunk.length);
  }
  return out;
}

/** LUKS1's anti-forensic split of `key` into STRIPES stripes: all random but the last. */
function afSplit(key: Buffer): Buffer {
  const stripes = Buffer.alloc(key.length * STRIPES);
  let block: Buffer = Buffer.alloc(key.length);
  for (let i = 0; i < STRIPES - 1; i++) {
    const stripe = randomBytes(key.length);
    stripe.copy(stripes, i * key.length);
    for (let j = 0; j < key.length; j++) block[j] ^= stripe[j];
    block = diffuse(block);
  }
  for (let j = 0; j < key.length; j++) stripes[(STRIPES - 1) * key.length + j] = block[j] ^ key[j];
  return stripes;
}

/** aes-xts-plain64 over whole sectors, the tweak of each its index from `data`'s start (little-endian). */
function encryptSectors(data: Buffer, key: Buffer): Buffer {
  const out = Buffer.alloc(data.length);
  for (let sector = 0; sector * SECTOR < data.length; sector++) {
    const tweak = Buffer.alloc(16);
    tweak.writeBigUInt64LE(BigInt(sector));
    const cipher = createCipheriv("aes-256-xts", key, tweak);
    const plain = data.subarray(sector * SECTOR, (sector + 1) * SECTOR);
    Buffer.concat([cipher.update(plain), cipher.final()]).copy(out, sector * SECTOR);
  }
  return out;
}

function fixedString(value: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  out.write(value, "latin1");
  return out;
}

/**
 * Writes a new LUKS1 header to `file` (created, or truncated) whose key slot 0 opens with `key`, and a
 * fresh random master key; the payload (empty) starts at LUKS_PAYLOAD_OFFSET_BYTES.
 */
export async function writeLuksHeader(file: string, key: string): Promise<void> {
  const masterKey = randomBytes(KEY_BYTES);
  const digestSalt = randomBytes(32);
  const digest = await pbkdf2Async(masterKey, digestSalt, ITERATIONS, 20, "sha256");
  const slotSalt = randomBytes(32);
  const slotKey = await pbkdf2Async(Buffer.from(key, "utf8"), slotSalt, ITERATIONS, KEY_BYTES, "sha256");
  const material = encryptSectors(afSplit(masterKey), slotKey);

  const header = Buffer.alloc(FIRST_SLOT_SECTOR * SECTOR);
  let at = 0;
  const put = (bytes: Buffer) => {
    bytes.copy(header, at);
    at += bytes.length;
  };
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  put(Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe])); // "LUKS\xba\xbe"
  put(u16(1));
  put(fixedString("aes", 32));
  put(fixedString("xts-plain64", 32));
  put(fixedString("sha256", 32));
  put(u32(LUKS_PAYLOAD_OFFSET_BYTES / SECTOR));
  put(u32(KEY_BYTES));
  put(digest);
  put(digestSalt);
  put(u32(ITERATIONS));
  put(fixedString(randomUUID(), 40));
  for (let slot = 0; slot < SLOTS; slot++) {
    put(u32(slot === 0 ? SLOT_ACTIVE : SLOT_INACTIVE));
    put(u32(slot === 0 ? ITERATIONS : 0));
    put(slot === 0 ? slotSalt : Buffer.alloc(32));
    put(u32(FIRST_SLOT_SECTOR + slot * SLOT_SECTORS));
    put(u32(STRIPES));
  }
  const handle = await fs.open(file, "w", 0o600);
  try {
    await handle.write(header, 0, header.length, 0);
    await handle.write(material, 0, material.length, FIRST_SLOT_SECTOR * SECTOR);
    await handle.truncate(LUKS_PAYLOAD_OFFSET_BYTES);
  } finally {
    await handle.close();
  }
}
