import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as langrpc from "@pulumi/pulumi/proto/language_grpc_pb";
import * as langproto from "@pulumi/pulumi/proto/language_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { backupSetProvider } from "../../sdk/encryptedBackupSet";
import { makeRawDisk } from "../support/disks";
import {
  ProcessIdentity,
  childrenOf,
  identityOf,
  isRunning,
  killIfStillRunning,
  killLeftovers,
  pollFor,
  processesMentioning,
} from "../support/processes";
import { ProviderHost, repoRoot } from "../support/providerHost";
import { serializeProvider } from "../support/serializedProvider";
import { makeTarget } from "../support/targets";
import { useTempDir } from "../support/tempDir";

/**
 * A killed `pulumi` (the engine) leaves no plugin behind: the provider process and the language
 * plugin notice it and exit, and a backup set in flight is stopped and removed. A shell stands in
 * for the engine; it is killed with SIGKILL.
 */
jest.setTimeout(180_000);
const URN = "urn:pulumi:dev::coffer-grpc::pulumi-nodejs:dynamic/coffer:EncryptedBackupSet::nightly";
const tempDir = useTempDir();
// Whatever a failing test leaves running must not outlive it.
const started: ProcessIdentity[] = [];
const track = (pid: number) => {
  const identity = identityOf(pid);
  if (identity) started.push(identity);
};
afterEach(() => {
  for (const identity of started.splice(0)) killIfStillRunning(identity);
  killLeftovers(tempDir());
});

/** The pid of the process `depth` generations below `pid` (through only children), once it exists. */
async function descendant(pid: number, depth: number): Promise<number> {
  let current = pid;
  for (let i = 0; i < depth; i++) {
    const parent = current;
    const child = await pollFor(() => childrenOf(parent).find((c) => !c.command.startsWith("node -e")), 30_000);
    if (!child) throw new Error(`process ${parent} started no child`);
    current = child.pid;
  }
  return current;
}

test("the provider process stops a create in flight, keeps nothing of the set, and exits with its engine", async () => {
  const target = path.join(tempDir(), "target");
  await makeTarget(target);
  const disk = path.join(tempDir(), "d.raw");
  await makeRawDisk(disk, 64);
  // Pulumi starts the provider through this script, which runs node as its child (no exec).
  const script = path.join(repoRoot, "node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs");
  const host = await ProviderHost.start(repoRoot, { file: "sh", args: ["-c", `"${script}" 127.0.0.1:0; true`] });
  const providerPid = await descendant(host.process.pid!, 2);
  track(providerPid);
  expect(processesMentioning("dynamic-provider").map((p) => p.pid)).toContain(providerPid);
  await host.configure({});
  const news = {
    __provider: (await serializeProvider(backupSetProvider)).text,
    policy: {
      id: "p",
      zone: "zone-g",
      target: { kind: "directory", path: target },
      compression: "none",
      integrityCheck: "none",
      bandwidthLimitMiBps: 2,
      encrypted: false,
    },
    keys: { manifestKey: "bWFuaWZlc3Qta2V5" },
    sources: [{ name: "d", disk }],
    trigger: "t1",
  };
  const checked = await host.check(URN, {}, news);
  // Its answer may never come: the process exits once the create has cleaned up.
  host.create(URN, checked.inputs!).catch(() => undefined);
  const copy = () => processesMentioning(disk).find((p) => p.command.includes("qemu-img convert -p"));
  const copying = await pollFor(copy, 60_000);
  expect(copying).toBeDefined();

  host.process.kill("SIGKILL");
  // The throttled copy alone would take about 24 s more.
  await pollFor(() => (isRunning(providerPid) ? undefined : true), 20_000);
  const left = { providerRunning: isRunning(providerPid), tools: processesMentioning(tempDir()) };
  expect(left).toEqual({ providerRunning: false, tools: [] });
  // Nothing of the set: only the target's identity, which was there before.
  expect(await fs.readdir(target)).toEqual([".coffer"]);
  expect(await fs.readdir(path.join(target, ".coffer"))).toEqual(["target.json"]);
  host.stop();
});

test("the language plugin ends the program it runs and exits with its engine", async () => {
  const stack = `killed-engine-${randomBytes(4).toString("hex")}`;
  const plugin = path.join(repoRoot, "tools/pulumi-language-nodejs/main.js");
  const command = `"${process.execPath}" "${plugin}" 127.0.0.1:1; true`;
  const engine = spawn("sh", ["-c", command], { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] });
  const port = await new Promise<string>((resolve, reject) => {
    engine.stdout!.once("data", (chunk) => resolve(String(chunk).split("\n")[0].trim()));
    engine.once("exit", (code) => reject(new Error(`the plugin exited with ${code}`)));
  });
  const pluginPid = await descendant(engine.pid!, 1);
  track(pluginPid);
  const Client = grpc.makeGenericClientConstructor((langrpc as any).LanguageRuntimeService, "LanguageRuntime");
  const client: any = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const info = new langproto.ProgramInfo();
  info.setRootDirectory(repoRoot);
  info.setProgramDirectory(repoRoot);
  info.setEntryPoint(".");
  // The program is a node that waits forever (nodeargs come before the run script): one that
  // runs until something ends it, without a resource monitor to talk to.
  info.setOptions(Struct.fromJavaScript({ nodeargs: "-e setInterval(()=>{},1000)" }));
  const request = new langproto.RunRequest();
  request.setProject("p");
  request.setStack(stack);
  request.setPwd(repoRoot);
  request.setMonitorAddress("127.0.0.1:1");
  request.setInfo(info);
  client.run(request, () => undefined);
  const program = await pollFor(() => processesMentioning(`--stack=${stack}`)[0], 30_000);
  expect(program).toBeDefined();
  track(program!.pid);

  engine.kill("SIGKILL");
  await pollFor(() => (isRunning(pluginPid) || isRunning(program!.pid) ? undefined : true), 3000);
  expect({ plugin: isRunning(pluginPid), program: isRunning(program!.pid) }).toEqual({ plugin: false, program: false });
  client.close();
});
