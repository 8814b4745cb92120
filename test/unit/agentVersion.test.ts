import {
  MIN_NODE_VERSION,
  compareVersions,
  cofferVersion,
  installedAgentFits,
  installedAgentOf,
  nodeRunsBundle,
} from "../../provider/agent/agentVersion";
import { AGENT_PROTOCOL_VERSION } from "../../provider/agent/protocol";

describe("compareVersions", () => {
  test.each([
    ["0.4.0", "0.4.0", 0],
    ["0.4.1", "0.4.0", 1],
    ["0.4.0", "0.5.0", -1],
    ["1.0.0", "0.99.99", 1],
    ["0.10.0", "0.9.0", 1],
    ["v18.19.0", "18.19.0", 0],
    ["v18.18.2", "18.19.0", -1],
    ["v20.20.2", "18.19.0", 1],
    ["0.5.0-rc.1", "0.5.0", -1],
    ["0.5.0", "0.5.0-rc.1", 1],
    ["0.5.0-rc.2", "0.5.0-rc.10", -1],
    ["0.5.0-alpha", "0.5.0-beta", -1],
    ["0.5.0-1", "0.5.0-alpha", -1],
    ["0.5.0-rc", "0.5.0-rc.1", -1],
    ["0.5.0+build.7", "0.5.0", 0],
  ])("%s against %s is %i", (a, b, expected) => {
    expect(compareVersions(a, b)).toBe(expected);
    expect(compareVersions(b, a)).toBe(-expected || 0);
  });

  test.each([
    ["", "0.4.0"],
    ["0.4", "0.4.0"],
    ["latest", "0.4.0"],
    ["0.4.0", "v20"],
  ])("%j against %j is no comparison", (a, b) => expect(compareVersions(a, b)).toBeUndefined());
});

describe("which Node.js runs the bundle", () => {
  test("the floor and anything newer; older, unparsable or none does not", () => {
    expect(nodeRunsBundle(`v${MIN_NODE_VERSION}`)).toBe(true);
    expect(nodeRunsBundle("v22.3.0")).toBe(true);
    expect(nodeRunsBundle("v18.18.2")).toBe(false);
    expect(nodeRunsBundle("v16.20.0")).toBe(false);
    expect(nodeRunsBundle("")).toBe(false);
    expect(nodeRunsBundle("node: command not found")).toBe(false);
  });
});

describe("an agent on a host's PATH", () => {
  const reply = (protocol: number | undefined, coffer: string | undefined) =>
    JSON.stringify({ ok: true, ...(protocol === undefined ? {} : { protocol }), result: { qemu: "7.2", coffer } });

  test("its version reply is read from the last line", () => {
    expect(installedAgentOf(`motd\n${reply(4, "0.4.0")}\n`)).toEqual({ protocol: 4, coffer: "0.4.0" });
    expect(installedAgentOf(reply(undefined, undefined))).toEqual({ protocol: 1, coffer: undefined });
    expect(installedAgentOf("")).toBeUndefined();
    expect(installedAgentOf("coffer-agent: node: not found")).toBeUndefined();
    expect(installedAgentOf(JSON.stringify({ ok: false, protocol: 4, error: { code: "IO_FAILED" } }))).toBeUndefined();
    expect(installedAgentOf("null")).toBeUndefined();
  });

  const ours = cofferVersion();
  test.each([
    ["of this version and protocol", AGENT_PROTOCOL_VERSION, ours, true],
    ["newer, same protocol", AGENT_PROTOCOL_VERSION, "99.0.0", true],
    ["older, same protocol", AGENT_PROTOCOL_VERSION, "0.0.1", false],
    ["of no stated version (older agents do not say)", AGENT_PROTOCOL_VERSION, undefined, false],
    ["of an older protocol", AGENT_PROTOCOL_VERSION - 1, "99.0.0", false],
    ["of a newer protocol (every call would be refused)", AGENT_PROTOCOL_VERSION + 1, "99.0.0", false],
    ["of an unparsable version", AGENT_PROTOCOL_VERSION, "dev", false],
  ])("one %s (protocol %i, Coffer %s): used %s", (_, protocol, coffer, used) => {
    expect(installedAgentFits({ protocol, coffer }, ours)).toBe(used);
  });

  test("the comparison is against the provider's own version", () => {
    expect(installedAgentFits({ protocol: AGENT_PROTOCOL_VERSION, coffer: "0.5.0" }, "0.5.1")).toBe(false);
    expect(installedAgentFits({ protocol: AGENT_PROTOCOL_VERSION, coffer: "0.5.1" }, "0.5.1")).toBe(true);
    expect(cofferVersion()).toBe(require("../../package.json").version);
  });
});
