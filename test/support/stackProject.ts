import { execFileSync } from "node:child_process";
import { promises as fs, readdirSync, readFileSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { LocalWorkspace, Stack } from "@pulumi/pulumi/automation";

const repoRoot = path.resolve(__dirname, "../..");

/**
 * A Pulumi project directory laid out as a user's would be (Pulumi.yaml, package.json,
 * node_modules with coffer installed), a file:// backend and a passphrase secrets provider,
 * all in one temporary folder.
 */
export async function stackProject(
  program: string,
  extraEnv: Record<string, string> = {},
  options: { nodeModules?: string } = {},
) {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "coffer-e2e-"));
  const project = path.join(root, "project");
  await fs.mkdir(path.join(root, "state"), { recursive: true });
  await fs.mkdir(project);
  const nodeModules = path.join(project, "node_modules");
  await fs.symlink(options.nodeModules ?? path.join(repoRoot, "node_modules"), nodeModules);
  await fs.writeFile(
    path.join(project, "package.json"),
    JSON.stringify({ name: "coffer-e2e", private: true, main: "index.js" }),
  );
  await fs.writeFile(
    path.join(project, "Pulumi.yaml"),
    "name: coffer-e2e\nruntime:\n  name: nodejs\n  options:\n    typescript: false\nmain: index.js\n",
  );
  await fs.writeFile(path.join(project, "index.js"), program);
  const stack = await LocalWorkspace.createOrSelectStack(
    { stackName: "e2e", workDir: project },
    {
      pulumiHome: path.join(root, "home"),
      envVars: {
        PULUMI_BACKEND_URL: `file://${path.join(root, "state")}`,
        PULUMI_CONFIG_PASSPHRASE: "e2e-stack-passphrase",
        PULUMI_SKIP_UPDATE_CHECK: "true",
        PATH: process.env.PATH!,
        ...extraEnv,
      },
    },
  );
  const cliEnv = { ...process.env, ...stack.workspace.envVars, PULUMI_HOME: path.join(root, "home") };
  /** Runs the pulumi CLI on this stack's project, as a user would; returns stdout. */
  const cli = (args: string[], input?: string) =>
    execFileSync("pulumi", [...args, "--stack", "e2e"], { cwd: project, input, env: cliEnv }).toString();
  return {
    root,
    project,
    stack,
    cli,
    // Automation API's setConfig would put the value on pulumi's command line: stdin instead.
    setSecretConfig: (key: string, value: string) => cli(["config", "set", "--secret", key], value),
    /** The stack's state as `pulumi stack export` gives it (secrets encrypted). */
    exportedState: () => JSON.parse(cli(["stack", "export"])),
    remove: () => fs.rm(root, { recursive: true, force: true }),
    /** Installs this coffer in the project, as `npm install` of a new release would. */
    useThisCoffer: async () => {
      await fs.rm(nodeModules);
      await fs.symlink(path.join(repoRoot, "node_modules"), nodeModules);
    },
  };
}

/** Records every command line on this machine while `work` runs, so a test can prove a secret never was on one. */
export async function watchCommandLines<T>(
  work: () => Promise<T>,
): Promise<{ result: T; commandLines: Set<string>; samples: number }> {
  const commandLines = new Set<string>();
  let samples = 0;
  let running = true;
  const sample = () => {
    for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
      try {
        commandLines.add(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" "));
      } catch {
        // The process ended between listing and reading.
      }
    }
    samples++;
  };
  const poller = (async () => {
    while (running) {
      sample();
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  try {
    return { result: await work(), commandLines, samples };
  } finally {
    running = false;
    await poller;
  }
}

export type { Stack };

/** Every file under `dir` (recursively) whose bytes contain `needle`. */
export async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const hits: string[] = [];
  for (const entry of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    if ((await fs.readFile(file)).includes(needle)) hits.push(file);
  }
  return hits;
}

/** A listing of `dir` with sizes and modification times, to prove nothing changed under it. */
export async function snapshotTree(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return Promise.all(
    entries.map(async (e) => {
      const file = path.join(e.parentPath, e.name);
      const stat = await fs.stat(file);
      return `${path.relative(dir, file)} ${stat.size} ${stat.mtimeMs}`;
    }),
  ).then((lines) => lines.sort());
}
