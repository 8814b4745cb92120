import {
  AGENT_PROTOCOL_VERSION,
  AgentCommand,
  agentRequests,
  checkAgentRequest,
  protocolMismatch,
} from "../../provider/agent/protocol";

const SECRET = "agent-protocol-secret-7731";
const target = { path: "/srv/b", id: "a".repeat(32), zone: "zone-a" };
const valid: { [C in AgentCommand]: unknown } = {
  "check-target": { target },
  "backup-item": {
    target,
    zoneDir: "/srv/b/sets/zone-a",
    setId: "2026-11-24-ab12",
    name: "web-1-root",
    source: { disk: "/var/lib/libvirt/images/web-1.qcow2", format: "qcow2" },
    compression: "zstd",
    encrypted: true,
    bandwidthLimitMiBps: 0,
    integrityCheck: "full",
    passphrase: SECRET,
    owner: { host: "pulumi-1", pid: 42, bootId: "b" },
  },
  "read-manifest": { target, setDir: "/srv/b/sets/zone-a/s/p1" },
  "chain-status": { name: "vm", source: { qmpSocket: "/run/vm.qmp", device: "vda", incremental: true } },
  "write-manifest": { target, setDir: "/srv/b/sets/zone-a/s", manifest: {}, manifestSecret: SECRET },
  "verify-set": { target, setDir: "/srv/b/sets/zone-a/s", level: "metadata", manifestSecret: SECRET },
  "delete-set": { target, setDir: "/srv/b/sets/zone-a/s" },
  "delete-points": { target, pointDirs: ["/srv/b/sets/zone-a/s/p1"] },
  "read-index": { target, setDir: "/srv/b/sets/zone-a/s", zone: "zone-a" },
  "write-index": { target, setDir: "/srv/b/sets/zone-a/s", index: null },
  "drill-point": {
    target,
    setDir: "/srv/b/sets/zone-a/s/p1",
    keys: { passphrase: SECRET },
    scratchDir: "/var/tmp",
    boot: { marker: "login:", timeoutSeconds: 60, memoryMiB: 256 },
  },
  "merge-prepare": {
    target,
    setDir: "/srv/b/sets/zone-a/s",
    from: "p1",
    into: "p2",
    manifestSecret: SECRET,
    owner: { host: "pulumi-1", pid: 42, bootId: "b" },
  },
  "merge-commit": {
    target,
    setDir: "/srv/b/sets/zone-a/s",
    from: "p1",
    into: "p2",
    manifestSecret: SECRET,
    owner: { host: "pulumi-1", pid: 42, bootId: "b" },
    manifests: [{ pointId: "p2", text: "{}" }],
  },
  "merge-abort": { target, setDir: "/srv/b/sets/zone-a/s", from: "p1", into: "p2" },
  version: {},
};

/** The error checkAgentRequest throws for `request`. */
function refusal(command: AgentCommand, request: unknown) {
  try {
    checkAgentRequest(command, request);
  } catch (error) {
    return error as { code: string; field?: string; message: string };
  }
  throw new Error(`${command} accepted ${JSON.stringify(request)}`);
}

describe("the agent protocol's requests", () => {
  test("every command has a schema, and accepts what today's provider sends", () => {
    expect(Object.keys(agentRequests).sort()).toEqual(Object.keys(valid).sort());
    for (const [command, request] of Object.entries(valid)) {
      expect(() => checkAgentRequest(command as AgentCommand, request)).not.toThrow();
    }
    expect(checkAgentRequest("delete-set", valid["delete-set"]).knownFiles).toEqual([]);
    expect(
      checkAgentRequest("backup-item", {
        ...(valid["backup-item"] as object),
        source: { qmpSocket: "/s", device: "vda" },
      }).source,
    ).toEqual({ qmpSocket: "/s", device: "vda" });
  });

  test.each([
    ["check-target", { target: undefined }, "target", /names no backup target: install the same coffer version/],
    ["backup-item", { source: { disk: "images/a.raw" } }, "source.disk", /disk must be an absolute path/],
    [
      "backup-item",
      { source: {} },
      "source.disk",
      /give disk .*, qmpSocket and device .* cinderVolume .*, glanceImage .* or novaServer \(a Nova server\)/,
    ],
    ["backup-item", { source: { disk: "/a", colour: "red" } }, "source.colour", /not a known field/],
    ["backup-item", { setId: "../elsewhere" }, "setId", /plain file name/],
    ["backup-item", { name: "a/b" }, "name", /plain file name/],
    ["backup-item", { compression: "lz4" }, "compression", /./],
    ["backup-item", { passphrase: 12345 }, "passphrase", /passphrase must be a string/],
    ["verify-set", { level: SECRET }, "level", /./],
    ["write-manifest", { manifestSecret: "" }, "manifestSecret", /./],
    ["delete-set", { knownFiles: "a.qcow2" }, "knownFiles", /./],
    ["drill-point", { scratchDir: "tmp" }, "scratchDir", /scratchDir must be an absolute path/],
    ["drill-point", { keys: { passphrase: 7 } }, "keys.passphrase", /keys.passphrase must be a string/],
    ["drill-point", { boot: { marker: "" } }, "boot.marker", /boot.marker must not be empty/],
  ] as const)("%s: a wrong %j is INVALID_INPUT naming %s, without any secret", (command, change, field, reason) => {
    const error = refusal(command, { ...(valid[command] as object), ...change });
    expect(error).toMatchObject({ code: "INVALID_INPUT", field });
    expect(error.message).toMatch(reason);
    expect(error.message).not.toContain(SECRET);
  });

  test("a request that is no object is refused", () => {
    expect(refusal("version", "x")).toMatchObject({ code: "INVALID_INPUT" });
    expect(refusal("backup-item", null)).toMatchObject({ code: "INVALID_INPUT" });
  });
});

describe("protocol versions in replies", () => {
  test("this version is 4; a reply of it is accepted, and one of 3 (no manifest signatures) is not", () => {
    expect(AGENT_PROTOCOL_VERSION).toBe(4);
    expect(protocolMismatch({ protocol: 4 }, "host kvm-07")).toBeUndefined();
    expect(protocolMismatch({ protocol: 3 }, "host kvm-07")?.message).toMatch(/speaks protocol 3 \(an older Coffer\)/);
  });

  test("a reply without protocol is an older agent's (1): the error says which host and what to do", () => {
    expect(protocolMismatch({}, "host kvm-07")).toMatchObject({
      code: "AGENT_PROTOCOL_MISMATCH",
      message:
        "coffer-agent on host kvm-07 speaks protocol 1 (an older Coffer); this provider needs 4: " +
        "install the same coffer version where Pulumi runs and on every host",
    });
  });

  test("a newer agent is named too", () => {
    expect(protocolMismatch({ protocol: 5 }, "this machine")?.message).toMatch(
      /^coffer-agent on this machine speaks protocol 5 \(a newer Coffer\); this provider needs 4: install/,
    );
    expect(protocolMismatch({ protocol: 2 }, "host x")?.message).toMatch(/speaks protocol 2 \(an older Coffer\)/);
    expect(protocolMismatch({ protocol: "3" }, "host x")?.message).toMatch(/speaks protocol 1/);
  });
});
