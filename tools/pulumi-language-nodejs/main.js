#!/usr/bin/env node
// The Node.js language plugin for a Pulumi CLI built from Pulumi's Go modules.
//
// Pulumi's own plugin (module github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3)
// has no release tags, and the Go module proxy these machines reach refuses it at every commit,
// so it can't be built here. This plugin does the part `pulumi up|preview|refresh|destroy` needs:
// it answers the engine over gRPC and runs the program with @pulumi/pulumi's own entry point
// (`@pulumi/pulumi/cmd/run`), given the same flags and environment Pulumi's plugin gives it.
// Resource plugins are not pre-announced (GetRequiredPlugins answers none): the engine loads a
// provider when the program first uses it.
// RunPlugin runs policy packs (`pulumi preview --policy-pack <dir>`): since the engine finds this
// language plugin, it no longer looks for the old `pulumi-analyzer-policy` shim and asks the plugin to
// run the pack, as Pulumi's own plugin does with @pulumi/pulumi's `cmd/run-policy-pack`.
"use strict";
const { spawn } = require("node:child_process");
const path = require("node:path");

// The plugin runs in the program's directory; take Pulumi's libraries from the program's install.
const fromProgram = (id) => require(require.resolve(id, { paths: [process.cwd()] }));
const grpc = fromProgram("@grpc/grpc-js");
const langrpc = fromProgram("@pulumi/pulumi/proto/language_grpc_pb");
const langproto = fromProgram("@pulumi/pulumi/proto/language_pb");
const pluginproto = fromProgram("@pulumi/pulumi/proto/plugin_pb");
const sdkVersion = fromProgram("@pulumi/pulumi/package.json").version;

// The engine passes its own address as the last argument.
const engineAddress = process.argv[process.argv.length - 1];
// Exit code of @pulumi/pulumi/cmd/run when it already reported the error to the engine.
const BAIL_EXIT_CODE = 32;

// Nothing stops this plugin, or the program it runs, when the engine is killed. The engine's
// exit gives this process a new parent (init or a subreaper): then end the programs and exit.
const programs = new Set();
const engineParent = process.ppid;
setInterval(() => {
  if (process.ppid === engineParent) return;
  for (const program of programs) program.kill("SIGKILL");
  process.exit(1);
}, 300).unref();

function runProgram(req) {
  const info = req.getInfo();
  const programDirectory = (info && info.getProgramDirectory()) || req.getPwd();
  const options = (info && info.getOptions() && info.getOptions().toJavaScript()) || {};
  const entryPoint = (info && info.getEntryPoint()) || req.getProgram() || ".";
  const runScript = require.resolve("@pulumi/pulumi/cmd/run", { paths: [programDirectory] });
  const config = Object.fromEntries(req.getConfigMap().entries());
  const args = [
    runScript,
    `--monitor=${req.getMonitorAddress()}`,
    `--engine=${engineAddress}`,
    `--project=${req.getProject()}`,
    `--stack=${req.getStack()}`,
    `--pwd=${req.getPwd()}`,
    `--parallel=${req.getParallel()}`,
    ...(req.getOrganization() ? [`--organization=${req.getOrganization()}`] : []),
    ...(info && info.getRootDirectory() ? [`--root-directory=${info.getRootDirectory()}`] : []),
    ...(req.getDryrun() ? ["--dry-run"] : []),
    entryPoint,
    ...req.getArgsList(),
  ];
  const env = {
    ...process.env,
    PULUMI_CONFIG: JSON.stringify(config),
    PULUMI_CONFIG_SECRET_KEYS: JSON.stringify(req.getConfigsecretkeysList()),
    PULUMI_NODEJS_TYPESCRIPT: String(options.typescript !== false),
    ...(options.tsconfig ? { PULUMI_NODEJS_TSCONFIG_PATH: String(options.tsconfig) } : {}),
  };
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [...(options.nodeargs ? String(options.nodeargs).split(/\s+/) : []), ...args],
      {
        cwd: req.getPwd() || programDirectory,
        env,
        stdio: ["ignore", "inherit", "inherit"],
      },
    );
    programs.add(child);
    child.on("error", (error) => resolve({ error: `could not start node: ${error.message}` }));
    child.on("close", (code, signal) => {
      programs.delete(child);
      if (code === 0) resolve({});
      else if (code === BAIL_EXIT_CODE) resolve({ bail: true });
      else
        resolve({
          error: signal ? `Program was killed by ${signal}` : `Program exited with non-zero exit code: ${code}`,
        });
    });
  });
}

// The engine's environment comes as "KEY=value" lines; a later line wins, as in exec. None at all
// means the plugin's own, as Go's exec does with a nil Env.
const envFromList = (list) =>
  list.length === 0
    ? { ...process.env }
    : Object.fromEntries(
        list
          .filter((line) => line.includes("="))
          .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
      );

// Runs a policy pack (kind "analyzer") the way Pulumi's plugin does: @pulumi/pulumi/cmd/run-policy-pack
// from the pack's own install, in the pack's folder, with the engine's arguments (its address) and
// then the pack's folder; its stdout (the port it serves on) and stderr are streamed back, then its
// exit code (-1 when a signal ended it, as Go reports it). Nothing secret goes on the command line:
// the stack's config reaches the pack over gRPC (ConfigureStack), and the environment is the engine's.
function runPlugin(call) {
  const req = call.request;
  let settled = false;
  const fail = (code, details) => {
    settled = true;
    call.emit("error", { code, details });
  };
  if (req.getKind() !== "analyzer") {
    return fail(grpc.status.UNIMPLEMENTED, `this plugin runs policy packs only, not ${req.getKind()} plugins`);
  }
  const info = req.getInfo();
  const packDirectory = info && info.getProgramDirectory();
  if (!packDirectory)
    return fail(grpc.status.INVALID_ARGUMENT, "RunPlugin needs the pack's folder (info.programDirectory)");
  const options = (info.getOptions() && info.getOptions().toJavaScript()) || {};
  let runScript;
  try {
    runScript = require.resolve("@pulumi/pulumi/cmd/run-policy-pack", { paths: [packDirectory] });
  } catch {
    return fail(
      grpc.status.FAILED_PRECONDITION,
      `@pulumi/pulumi is not installed for the policy pack in ${packDirectory}: run npm install there`,
    );
  }
  // run-policy-pack registers ts-node itself (a compiled pack loads as plain JS): no TypeScript settings.
  const args = [
    ...(options.nodeargs ? String(options.nodeargs).split(/\s+/) : []),
    runScript,
    ...req.getArgsList(),
    packDirectory,
  ];
  const child = spawn(process.execPath, args, {
    cwd: packDirectory,
    env: envFromList(req.getEnvList()),
    stdio: ["ignore", "pipe", "pipe"],
  });
  programs.add(child);
  const open = () => !settled && !call.cancelled;
  const send = (set, value) => {
    if (!open()) return;
    const response = new langproto.RunPluginResponse();
    response[set](value);
    call.write(response);
  };
  child.stdout.on("data", (chunk) => send("setStdout", chunk));
  child.stderr.on("data", (chunk) => send("setStderr", chunk));
  // The engine cancels the call when it is done with the pack (or is stopped): end the pack with it.
  call.on("cancelled", () => child.kill("SIGKILL"));
  child.on("error", (error) => {
    programs.delete(child);
    if (open()) fail(grpc.status.INTERNAL, `could not start node: ${error.message}`);
  });
  child.on("close", (code) => {
    programs.delete(child);
    if (!open()) return;
    send("setExitcode", code === null ? -1 : code);
    settled = true;
    call.end();
  });
}

const service = {
  getRequiredPlugins(_call, callback) {
    callback(null, new langproto.GetRequiredPluginsResponse());
  },
  getRequiredPackages(_call, callback) {
    callback(null, new langproto.GetRequiredPackagesResponse());
  },
  getPluginInfo(_call, callback) {
    const info = new pluginproto.PluginInfo();
    info.setVersion(sdkVersion);
    callback(null, info);
  },
  runPlugin,
  run(call, callback) {
    runProgram(call.request).then(
      ({ error, bail }) => {
        const response = new langproto.RunResponse();
        if (error) response.setError(error);
        if (bail) response.setBail(true);
        callback(null, response);
      },
      (error) => callback(error),
    );
  },
};

const server = new grpc.Server({ "grpc.max_receive_message_length": 400 * 1024 * 1024 });
server.addService(langrpc.LanguageRuntimeService, service);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) {
    console.error(`pulumi-language-nodejs: could not listen: ${error.message}`);
    process.exit(1);
  }
  // The engine reads the port from the first line of stdout.
  process.stdout.write(`${port}\n`);
});
