import { promises as fs, statSync } from "node:fs";
import * as path from "node:path";
import {
  readFileIfExists,
  removeEmptyDirs,
  writeFileAtomic,
  writeFileExclusive,
} from "../../provider/common/atomicFile";
import { useTempDir } from "../support/tempDir";

const tempDir = useTempDir();

describe("atomic file writes", () => {
  test("creates parents 0700 and the file 0600, replacing the old content whole", async () => {
    const file = path.join(tempDir(), "a", "b", "doc.json");
    await writeFileAtomic(file, "one");
    await writeFileAtomic(file, "two");
    expect(await fs.readFile(file, "utf8")).toBe("two");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(await fs.readdir(path.dirname(file))).toEqual(["doc.json"]);
  });

  test("a failed rename leaves no temporary file and the destination untouched", async () => {
    const destination = path.join(tempDir(), "doc.json");
    await fs.mkdir(path.join(destination, "occupied"), { recursive: true });
    await expect(writeFileAtomic(destination, "new")).rejects.toThrow();
    expect(await fs.readdir(tempDir())).toEqual(["doc.json"]);
    expect(await fs.readdir(destination)).toEqual(["occupied"]);
  });

  test("writeFileExclusive writes a new file whole, 0600, and never replaces an existing one", async () => {
    const file = path.join(tempDir(), "a", "claim.json");
    expect(await writeFileExclusive(file, "first")).toBe(true);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    expect(await writeFileExclusive(file, "second")).toBe(false);
    expect(await fs.readFile(file, "utf8")).toBe("first");
    expect(await fs.readdir(path.dirname(file))).toEqual(["claim.json"]);
  });

  test("of two exclusive writes at once, exactly one wins", async () => {
    const file = path.join(tempDir(), "claim.json");
    const results = await Promise.all([writeFileExclusive(file, "one"), writeFileExclusive(file, "two")]);
    expect(results.sort()).toEqual([false, true]);
    expect(["one", "two"]).toContain(await fs.readFile(file, "utf8"));
    expect(await fs.readdir(tempDir())).toEqual(["claim.json"]);
  });

  test("readFileIfExists tells a missing file from other errors", async () => {
    expect(await readFileIfExists(path.join(tempDir(), "missing"))).toBeUndefined();
    await expect(readFileIfExists(tempDir())).rejects.toMatchObject({ code: "EISDIR" });
  });

  test("removeEmptyDirs stops at the first non-empty folder and never goes above its stop", async () => {
    const root = tempDir();
    await fs.mkdir(path.join(root, "x", "y", "z"), { recursive: true });
    await fs.writeFile(path.join(root, "x", "keep"), "");
    await removeEmptyDirs(path.join(root, "x", "y", "z"), root);
    expect(await fs.readdir(path.join(root, "x"))).toEqual(["keep"]);
    await fs.rm(path.join(root, "x", "keep"));
    await removeEmptyDirs(path.join(root, "x"), path.join(root, "x"));
    expect(await fs.readdir(root)).toEqual(["x"]);
  });
});
