/**
 * Tiers: unit (1), agent (1, with real qemu-img and QEMU), serialization (2), grpc host (3), mocks (4),
 * e2e with the real Pulumi CLI (5), cloud (a real OpenStack control plane on 127.0.0.1: tools/openstack/osloop.sh),
 * swift (a real Swift cluster on 127.0.0.1: tools/swift/swiftloop.sh).
 * Slow tiers raise their own timeout with jest.setTimeout (testTimeout is global-only in Jest).
 */
const tier = (name) => ({
  displayName: name,
  preset: "ts-jest",
  testEnvironment: "node",
  testMatch: [`<rootDir>/test/${name}/**/*.test.ts`],
});

module.exports = {
  projects: ["unit", "agent", "serialization", "grpc", "mocks", "e2e", "cloud", "swift"].map(tier),
};
