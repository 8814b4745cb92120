import { CofferError, isCofferError, redact, redactError } from "../../provider/common/errors";

describe("CofferError", () => {
  test("is data first: code, field, shortMessage; message adds the field", () => {
    const error = new CofferError("TARGET_UNREACHABLE", "mount it", { field: "target.path" });
    expect(error).toMatchObject({
      code: "TARGET_UNREACHABLE",
      field: "target.path",
      shortMessage: "mount it",
      message: "target.path: mount it",
    });
    expect(error.name).toBe("CofferError");
    expect(Object.keys(error)).not.toContain("name");
    expect(error).toBeInstanceOf(Error);
  });

  test("is recognised across copies of the module by its brand, not by instanceof", () => {
    const error = new CofferError("IO_FAILED", "x");
    const lookalike = Object.assign(new Error("x"), { code: "IO_FAILED" });
    expect(isCofferError(error)).toBe(true);
    expect(isCofferError(lookalike)).toBe(false);
    expect(isCofferError(null)).toBe(false);
    expect(isCofferError({ ...error })).toBe(false);
  });

  test("redacts every known secret from its message and from its cause's message and stack", () => {
    const cause = new Error("qemu-img: could not open with key hunter2hunter2");
    (cause as NodeJS.ErrnoException).code = "EPERM";
    const error = new CofferError("IO_FAILED", "failed for hunter2hunter2", { cause, secrets: ["hunter2hunter2"] });
    expect(error.message).toBe("failed for [secret]");
    expect((error.cause as Error).message).toBe("qemu-img: could not open with key [secret]");
    expect((error.cause as Error).stack).not.toContain("hunter2hunter2");
    expect((error.cause as NodeJS.ErrnoException).code).toBe("EPERM");
  });
});

describe("redact", () => {
  test("replaces each occurrence, ignores empty secrets, and stringifies non-errors", () => {
    expect(redact("a-s3cret-b-s3cret", ["s3cret", ""])).toBe("a-[secret]-b-[secret]");
    expect(redactError("token s3cret", ["s3cret"]).message).toBe("token [secret]");
  });
});
