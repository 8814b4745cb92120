/** Tiers: unit (1), serialization (2), grpc host (3), mocks (4), e2e with the real Pulumi CLI (5). */
const tier = (name, timeout) => ({
  displayName: name,
  preset: "ts-jest",
  testEnvironment: "node",
  testMatch: [`<rootDir>/test/${name}/**/*.test.ts`],
  testTimeout: timeout,
});

module.exports = {
  projects: [tier("unit", 20_000), tier("serialization", 60_000), tier("grpc", 60_000), tier("mocks", 30_000), tier("e2e", 600_000)],
};
