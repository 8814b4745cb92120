// Refresh of BENCH_POINTS (200) Cinder-backed points, on the loopback cloud: the check refresh runs
// (one listing of the project's backups, page by page) against the baseline of one GET per backup,
// both through Coffer's client with one signed-in session, counted with its request observer.
// The backups are real: BENCH_VOLUMES (8) volumes, backed up in parallel across volumes (Cinder
// backs up one volume at a time), deleted at the end. Prints medians of BENCH_RUNS (5) runs.
const path = require("node:path");
const fs = require("node:fs");
const repo = path.resolve(__dirname, "..");
const os = require(path.join(repo, "dist/provider/openstack/index.js"));
const { cinderBackups } = require(path.join(repo, "dist/provider/sources/cinderVolume.js"));

const POINTS = Number(process.env.BENCH_POINTS ?? 200);
const VOLUMES = Number(process.env.BENCH_VOLUMES ?? 8);
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const say = (message) => process.stderr.write(`bench: ${message}\n`);
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const cloud = JSON.parse(fs.readFileSync(process.env.COFFER_OSLOOP_CLOUD, "utf8"));
  const requests = { count: 0 };
  const deps = os.cloudDeps({ onRequest: () => requests.count++ });
  const user = cloud.demo;
  const config = os.cloudConfig({
    authUrl: cloud.authUrl,
    region: cloud.region,
    userName: user.username,
    password: user.password,
    projectName: user.projectName,
    userDomainName: user.userDomainName,
    projectDomainName: user.projectDomainName,
  });
  const session = os.openCloud(config, deps);
  const { cinder } = session;
  const waits = { timeoutMs: 600_000, deps };
  const prefix = `coffer-bench-${Date.now()}`;
  const volumes = [];
  const backups = [];
  try {
    say(`making ${VOLUMES} volumes and ${POINTS} backups of them`);
    for (let i = 0; i < VOLUMES; i++) volumes.push((await cinder.createVolume({ size: 1, name: `${prefix}-${i}` })).id);
    for (const id of volumes) await os.waitForVolume(cinder, id, waits);
    const started = Date.now();
    await Promise.all(
      volumes.map(async (volumeId, v) => {
        for (let n = v; n < POINTS; n += VOLUMES) {
          const { id } = await cinder.createBackup({ volumeId, name: `${prefix}-${n}` });
          await os.waitForBackup(cinder, id, waits);
          backups.push(id);
          if (backups.length % 25 === 0)
            say(`${backups.length} backups (${Math.round((Date.now() - started) / 1000)} s)`);
        }
      }),
    );
    const refs = backups.map((id, n) => ({ source: `vol-${n % VOLUMES}`, kind: "cinder-backup", id }));
    const ctx = {
      cloud: session,
      project: { authUrl: cloud.authUrl, projectId: await session.session.projectId() },
      waits: deps,
      subject: "bench",
      progress: () => undefined,
    };
    const measure = async (work) => {
      const before = requests.count;
      const start = process.hrtime.bigint();
      await work();
      return { seconds: Number(process.hrtime.bigint() - start) / 1e9, requests: requests.count - before };
    };
    const listing = [];
    const perBackup = [];
    for (let run = 0; run < RUNS; run++) {
      // Alternate, so that a busy moment of the shared machine does not land on one side only.
      listing.push(
        await measure(async () => {
          const problems = await cinderBackups.check(refs, ctx);
          if (problems.length > 0) throw new Error(`unexpected problems: ${JSON.stringify(problems[0])}`);
        }),
      );
      perBackup.push(await measure(() => Promise.all(refs.map((ref) => cinder.getBackup(ref.id)))));
    }
    const report = (name, runs) =>
      `${name}: ${median(runs.map((r) => r.seconds)).toFixed(2)} s, ${median(runs.map((r) => r.requests))} requests`;
    console.log(`refresh check of ${POINTS} Cinder-backed points, medians of ${RUNS} runs`);
    console.log(report("  one listing (Coffer's refresh)", listing));
    console.log(report("  one GET per backup (baseline)", perBackup));
    const ratio = median(listing.map((r) => r.requests)) / median(perBackup.map((r) => r.requests));
    console.log(`  requests: ${(ratio * 100).toFixed(1)} % of the baseline`);
    const time = median(listing.map((r) => r.seconds)) / median(perBackup.map((r) => r.seconds));
    console.log(`  wall time: ${time.toFixed(2)}x the baseline`);
  } finally {
    say("deleting the bench's backups and volumes");
    for (const id of backups) await cinder.deleteBackup(id).catch(() => undefined);
    for (const id of backups) await os.waitForBackupDeleted(cinder, id, waits).catch(() => undefined);
    for (const id of volumes) await cinder.deleteVolume(id).catch(() => undefined);
    await sleep(1000);
  }
}

main().catch((error) => {
  process.stderr.write(`bench: ${error.stack ?? error}\n`);
  process.exit(1);
});
