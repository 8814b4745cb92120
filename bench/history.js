// A set's history at scale, through the real Pulumi engine: a set of BENCH_POINTS (1,000) points
// against one of 10, made the same way in the same run. One point of each set is taken by `pulumi
// up`; the others are generated from it (the same backup file, a signed manifest each, and their
// records in state), so the numbers measure Coffer's bookkeeping, not qemu. Prints the median
// seconds of BENCH_RUNS runs of `pulumi preview` and `pulumi refresh` for each, their ratios, the
// state file's size and its growth per point, and the time of a prune of 90% of the points by `up`.
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const repo = path.resolve(__dirname, "..");
const { LocalWorkspace } = require(path.join(repo, "node_modules/@pulumi/pulumi/automation"));
const { renderSignedManifest } = require(path.join(repo, "dist/provider/agent/manifest.js"));
const { setAt, writeSetIndex } = require(path.join(repo, "dist/provider/agent/pointIndex.js"));
const { itemsDigest, newPointId } = require(path.join(repo, "dist/provider/backupSet/state.js"));

const MANY = Number(process.env.BENCH_POINTS ?? 1000);
const FEW = 10;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const say = (message) => process.stderr.write(`bench: ${message}\n`);

const PROGRAM = `
const pulumi = require("@pulumi/pulumi");
const coffer = require("coffer");
const spec = new pulumi.Config().requireObject("spec");
const policy = new coffer.BackupPolicy("gold", {
  zone: "gold",
  target: { kind: "directory", path: spec.target },
  integrityCheck: "none",
  retention: spec.retention,
});
new coffer.EncryptedBackupSet("nightly", { policy, sources: [{ name: "vm-root", disk: spec.disk }], trigger: "t1" });
`;

async function stackWith(root, points) {
  const project = path.join(root, "project");
  fs.mkdirSync(path.join(root, "state"), { recursive: true });
  fs.mkdirSync(project);
  fs.symlinkSync(path.join(repo, "node_modules"), path.join(project, "node_modules"));
  fs.writeFileSync(path.join(project, "package.json"), JSON.stringify({ name: "bench", main: "index.js" }));
  fs.writeFileSync(path.join(project, "Pulumi.yaml"), "name: bench\nruntime: nodejs\nmain: index.js\n");
  fs.writeFileSync(path.join(project, "index.js"), PROGRAM);
  const envVars = {
    PULUMI_BACKEND_URL: `file://${path.join(root, "state")}`,
    PULUMI_CONFIG_PASSPHRASE: "bench",
    PULUMI_SKIP_UPDATE_CHECK: "true",
    PATH: process.env.PATH,
  };
  const stack = await LocalWorkspace.createOrSelectStack(
    { stackName: "bench", workDir: project },
    { pulumiHome: path.join(root, "home"), envVars },
  );
  const disk = path.join(root, "vm.raw");
  fs.writeFileSync(disk, Buffer.alloc(1 << 20, 1));
  const target = path.join(root, "target");
  fs.mkdirSync(target);
  const spec = (retention) => stack.setConfig("spec", { value: JSON.stringify({ target, disk, retention }) });
  await spec(undefined);
  await stack.up();
  await grow(stack, points);
  return { stack, spec, root };
}

/** Adds points-1 generated points before the real one: folders with its backup and a signed manifest each. */
async function grow(stack, points) {
  const exported = await stack.exportStack();
  const shown = JSON.parse(
    execFileSync("pulumi", ["stack", "export", "--show-secrets", "--stack", "bench"], {
      cwd: stack.workspace.workDir,
      env: { ...process.env, ...stack.workspace.envVars, PULUMI_HOME: stack.workspace.pulumiHome },
    }).toString(),
  );
  const find = (deployment) => deployment.resources.find((r) => r.type.endsWith(":EncryptedBackupSet"));
  const set = find(exported.deployment).outputs;
  const manifestKey = JSON.parse(find(shown.deployment).outputs.keys.plaintext).manifestKey;
  const real = set.points[0];
  const realDir = path.dirname(set.manifestPath);
  const manifest = JSON.parse(fs.readFileSync(set.manifestPath, "utf8")).manifest;
  const records = [];
  const start = Date.parse(real.takenAt) - points * 3_600_000;
  for (let i = 0; i < points - 1; i++) {
    const at = new Date(start + i * 3_600_000);
    const id = newPointId(at, i.toString(16).padStart(4, "0"));
    const dir = path.join(set.setDir, id);
    fs.mkdirSync(dir, { mode: 0o700 });
    for (const item of manifest.items) fs.linkSync(path.join(realDir, item.file), path.join(dir, item.file));
    const text = await renderSignedManifest(
      { ...manifest, pointId: id, createdAt: at.toISOString(), mac: undefined },
      manifestKey,
    );
    fs.writeFileSync(path.join(dir, "manifest.json"), text, { mode: 0o600 });
    records.push({ ...real, id, takenAt: at.toISOString(), itemsSha256: itemsDigest(manifest.items) });
  }
  set.points = [...records, real];
  find(exported.deployment).outputs = set;
  await stack.importStack(exported);
  const index = JSON.parse(fs.readFileSync(path.join(set.setDir, "index.json"), "utf8"));
  const indexed = set.points.map((p) => ({ ...index.points[0], id: p.id, takenAt: p.takenAt }));
  const target = path.dirname(path.dirname(path.dirname(set.setDir)));
  await writeSetIndex(setAt(target, set.setDir), { ...index, points: indexed });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function timed(work) {
  const started = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - started) / 1e9;
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "coffer-bench-history-"));
  try {
    const sets = {};
    for (const points of [FEW, MANY]) {
      say(`making a set of ${points} points`);
      sets[points] = await stackWith(path.join(work, String(points)), points);
    }
    const results = { preview: {}, refresh: {} };
    for (let run = 0; run < RUNS; run++) {
      for (const points of [FEW, MANY]) {
        const { stack } = sets[points];
        (results.preview[points] ??= []).push(await timed(() => stack.preview()));
        (results.refresh[points] ??= []).push(await timed(() => stack.refresh()));
      }
    }
    // The file backend's checkpoint: the state file Pulumi keeps for the stack.
    const stateFile = (points) =>
      execFileSync("find", [path.join(sets[points].root, "state"), "-name", "bench.json*", "-path", "*stacks*"])
        .toString()
        .split("\n")[0];
    const size = (points) => fs.statSync(stateFile(points)).size;
    console.log(`| case | ${FEW} points (s) | ${MANY} points (s) | ratio |`);
    console.log("|---|---|---|---|");
    for (const op of ["preview", "refresh"]) {
      const [few, many] = [median(results[op][FEW]), median(results[op][MANY])];
      console.log(
        `| pulumi ${op} (median of ${RUNS}) | ${few.toFixed(2)} | ${many.toFixed(2)} | ${(many / few).toFixed(2)} |`,
      );
    }
    const perPoint = (size(MANY) - size(FEW)) / (MANY - FEW);
    console.log(`| state file (bytes) | ${size(FEW)} | ${size(MANY)} | ${perPoint.toFixed(0)} bytes per point |`);
    const keep = Math.round(MANY / 10);
    say(`pruning ${MANY - keep} points with up (retention keepLast ${keep})`);
    const { stack, spec } = sets[MANY];
    await spec({ keepLast: keep });
    const prune = await timed(() => stack.up());
    const setsDir = path.join(work, String(MANY), "target", "sets", "gold");
    const [setId] = fs.readdirSync(setsDir);
    const left = fs.readdirSync(path.join(setsDir, setId)).filter((f) => f !== "index.json").length;
    const baseline = median(results.preview[MANY]);
    console.log(
      `| up pruning ${MANY - keep} points | | ${prune.toFixed(2)} | ` +
        `${(prune / baseline).toFixed(2)}x the ${MANY}-point preview |`,
    );
    say(`${left} point folder(s) left`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
