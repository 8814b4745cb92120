import { describeStoreConformance } from "../support/storeConformance";
import { swiftLoop, swiftMissingNote, useS3Stores } from "../support/swiftLoop";
import { useTempDir } from "../support/tempDir";

// The same suite as every store's, for S3Store on Swift's S3 API (s3api) of the loopback cluster.
jest.setTimeout(60_000);

const swift = swiftLoop();
const tempDir = useTempDir();

if (swift) {
  const store = useS3Stores(swift);
  describeStoreConformance("s3 (Swift's s3api)", () => store(), tempDir);
} else {
  describe.skip(`the s3 store (conformance): ${swiftMissingNote}`, () => {
    test("needs the loopback Swift cluster", () => undefined);
  });
}
