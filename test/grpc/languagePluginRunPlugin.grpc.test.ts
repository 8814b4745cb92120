import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as langrpc from "@pulumi/pulumi/proto/language_grpc_pb";
import * as langproto from "@pulumi/pulumi/proto/language_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import { isRunning, killLeftovers, pollFor, processesMentioning } from "../support/processes";
import { repoRoot } from "../support/providerHost";

/**
 * The language plugin's RunPlugin, which runs policy packs: what it starts (argv, folder, the
 * engine's environment), what it streams back (output, exit code), and that a cancelled call ends
 * the pack. A `node -e` script given as nodeargs stands in for run-policy-pack (nodeargs come first).
 */
jest.setTimeout(60_000);
let plugin: ChildProcess;
let client: any;
const marker = `runplugin-${randomBytes(4).toString("hex")}`;

beforeAll(async () => {
  const main = path.join(repoRoot, "tools/pulumi-language-nodejs/main.js");
  plugin = spawn(process.execPath, [main, "127.0.0.1:1"], {
    cwd: repoRoot,
    env: { ...process.env, COFFER_PLUGIN_ONLY: "plugin's own" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<string>((resolve) =>
    plugin.stdout!.once("data", (chunk) => resolve(String(chunk).trim())),
  );
  const Client = grpc.makeGenericClientConstructor((langrpc as any).LanguageRuntimeService, "LanguageRuntime");
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
});
afterAll(() => {
  client?.close();
  plugin?.kill("SIGKILL");
  killLeftovers(marker);
});

function request(script: string, env: string[], kind = "analyzer") {
  const info = new langproto.ProgramInfo();
  info.setProgramDirectory(repoRoot);
  info.setRootDirectory(repoRoot);
  info.setEntryPoint(".");
  // nodeargs are split on spaces, so the script has none.
  info.setOptions(Struct.fromJavaScript({ nodeargs: `-e ${script}` }));
  const req = new langproto.RunPluginRequest();
  req.setKind(kind);
  req.setInfo(info);
  req.setArgsList([`127.0.0.1:1`, marker]);
  req.setEnvList(env);
  return req;
}

/** Everything the call streams back, and how it ends. */
function runPlugin(req: langproto.RunPluginRequest) {
  const call = client.runPlugin(req);
  let stdout = "";
  let stderr = "";
  const exitCodes: number[] = [];
  const ended = new Promise<{ error?: grpc.ServiceError }>((resolve) => {
    call.on("data", (response: langproto.RunPluginResponse) => {
      if (response.hasStdout()) stdout += Buffer.from(response.getStdout_asU8()).toString();
      if (response.hasStderr()) stderr += Buffer.from(response.getStderr_asU8()).toString();
      if (response.hasExitcode()) exitCodes.push(response.getExitcode());
    });
    call.on("error", (error: grpc.ServiceError) => resolve({ error }));
    call.on("end", () => resolve({}));
  });
  return { call, ended, output: () => ({ stdout, stderr, exitCodes }) };
}

test("runs the pack in its folder with the engine's arguments and environment; streams output, exit", async () => {
  const script =
    "console.log(JSON.stringify({argv:process.argv.slice(1),cwd:process.cwd(),env:process.env}));" +
    "console.error('to-stderr');process.exitCode=3";
  const run = runPlugin(request(script, ["COFFER_FROM_ENGINE=engine's", `PATH=${process.env.PATH}`]));
  expect(await run.ended).toEqual({});
  const { stdout, stderr, exitCodes } = run.output();
  const seen = JSON.parse(stdout);
  expect(seen.argv).toEqual([
    path.join(repoRoot, "node_modules/@pulumi/pulumi/cmd/run-policy-pack/index.js"),
    "127.0.0.1:1",
    marker,
    repoRoot,
  ]);
  expect(seen.cwd).toBe(repoRoot);
  // The engine's environment, not the plugin's.
  expect(seen.env.COFFER_FROM_ENGINE).toBe("engine's");
  expect(seen.env.COFFER_PLUGIN_ONLY).toBeUndefined();
  expect(stderr).toBe("to-stderr\n");
  expect(exitCodes).toEqual([3]);
});

test("without an environment from the engine, the pack gets the plugin's", async () => {
  const run = runPlugin(request("console.log(process.env.COFFER_PLUGIN_ONLY)", []));
  await run.ended;
  expect(run.output()).toEqual({ stdout: "plugin's own\n", stderr: "", exitCodes: [0] });
});

test("a cancelled call ends the pack", async () => {
  const run = runPlugin(request("console.log('serving');setInterval(()=>{},1000)", [`PATH=${process.env.PATH}`]));
  const pack = await pollFor(() => processesMentioning(marker)[0], 20_000);
  expect(pack).toBeDefined();
  await pollFor(() => (run.output().stdout ? true : undefined), 20_000);
  run.call.cancel();
  await pollFor(() => (isRunning(pack!.pid) ? undefined : true), 5000);
  expect(isRunning(pack!.pid)).toBe(false);
  expect((await run.ended).error?.code).toBe(grpc.status.CANCELLED);
  expect(run.output().exitCodes).toEqual([]);
});

test("refuses plugins other than policy packs", async () => {
  const run = runPlugin(request("0", [], "resource"));
  expect((await run.ended).error?.code).toBe(grpc.status.UNIMPLEMENTED);
});
