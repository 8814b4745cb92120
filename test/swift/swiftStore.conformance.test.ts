import { describeStoreConformance } from "../support/storeConformance";
import { swiftLoop, swiftMissingNote, useSwiftStores } from "../support/swiftLoop";
import { useTempDir } from "../support/tempDir";

// The same suite as the directory and memory stores', on a real Swift cluster (tools/swift/swiftloop.sh).
jest.setTimeout(60_000);

const swift = swiftLoop();
const tempDir = useTempDir();
const MiB = 1024 * 1024;

if (swift) {
  const store = useSwiftStores(swift);
  describeStoreConformance("swift", () => store(), tempDir);
  // 1 MiB segments: the suite's 3 MiB put becomes a Static Large Object of 4 segments.
  describeStoreConformance("swift (1 MiB segments)", () => store({ segmentBytes: MiB }), tempDir);
} else {
  describe.skip(`the swift store (conformance): ${swiftMissingNote}`, () => {
    test("needs the loopback Swift cluster", () => undefined);
  });
}
