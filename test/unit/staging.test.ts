import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import { removeStaged } from "../../provider/sources/staging";
import { useTempDir } from "../support/tempDir";

describe("removeStaged: a staged copy's file removed, overwritten first when scrubbing", () => {
  const tempDir = useTempDir("coffer-staging-");

  /** Stages `size` random bytes and keeps an fd on them, to read what the file held once removed. */
  async function staged(size: number) {
    const file = path.join(tempDir(), "p1-web-0a1b.raw");
    await fs.writeFile(file, randomBytes(size), { mode: 0o600 });
    const handle = await fs.open(file, "r");
    const bytesAfter = async () => {
      const bytes = Buffer.alloc(size);
      await handle.read(bytes, 0, size, 0);
      await handle.close();
      return bytes;
    };
    return { file, bytesAfter };
  }

  test("scrub writes zeros over its whole length (more than one chunk), then removes it", async () => {
    const size = 2 * 1024 * 1024 + 4097;
    const { file, bytesAfter } = await staged(size);
    await removeStaged(file, true);
    await expect(fs.stat(file)).rejects.toMatchObject({ code: "ENOENT" });
    const bytes = await bytesAfter();
    expect(bytes.length).toBe(size);
    expect(bytes.every((b) => b === 0)).toBe(true);
  });

  test("without scrub it is only removed: its bytes are left as they were", async () => {
    const { file, bytesAfter } = await staged(8192);
    const before = await fs.readFile(file);
    await removeStaged(file);
    await expect(fs.stat(file)).rejects.toMatchObject({ code: "ENOENT" });
    expect((await bytesAfter()).equals(before)).toBe(true);
  });

  test("a file already gone is nothing to do, scrubbing or not", async () => {
    const gone = path.join(tempDir(), "never-staged.raw");
    await expect(removeStaged(gone, true)).resolves.toBeUndefined();
    await expect(removeStaged(gone)).resolves.toBeUndefined();
  });
});
