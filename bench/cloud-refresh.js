// Refresh of BENCH_POINTS (200) Cinder-backed points, on the loopback cloud: the check refresh runs
// (one listing of the project's backups, page by page) against the baseline of one GET per backup,
// both through Coffer's client with one signed-in session, counted with its request observer.
// The backups are real: BENCH_VOLUMES (8) volumes, each a full then incrementals, backed up in
// parallel across volumes (Cinder backs up one volume at a time), deleted at the end. Prints medians of BENCH_RUNS (5) runs.
const path = require("node:path");
const fs = require("node:fs");
const repo = path.resolve(__dirname, "..");
const os = require(path.join(repo, "dist/provider/openstack/index.js"));
const { cinderBackups } = require(path.join(repo, "dist/provider/sources/cinderBackups.js"));
const zod = require("zod");

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
  const configOf = (who) =>
    os.cloudConfig({
      authUrl: cloud.authUrl,
      region: cloud.region,
      userName: who.username,
      password: who.password,
      projectName: who.projectName,
      userDomainName: who.userDomainName,
      projectDomainName: who.projectDomainName,
    });
  const session = os.openCloud(configOf(user), deps);
  const { cinder } = session;
  // Cinder's default quota is 10 backups a project: lift it for the bench's project, and put it back after.
  const admin = os.openCloud(configOf(cloud.admin), os.cloudDeps());
  const quotaOf = await session.session.projectId();
  const setQuota = (quotaSet) =>
    admin.session.request(
      {
        service: "cinder",
        method: quotaSet ? "PUT" : "DELETE",
        path: `/os-quota-sets/${quotaOf}`,
        resource: `quota of project ${quotaOf}`,
        json: quotaSet && { quota_set: quotaSet },
      },
      zod.record(zod.string(), zod.any()),
    );
  const waits = { timeoutMs: 600_000, deps };
  const prefix = `coffer-bench-${Date.now()}`;
  const volumes = [];
  const backups = [];
  const newestOf = new Map();
  const ctx = {
    cloud: session,
    project: { authUrl: cloud.authUrl, projectId: quotaOf },
    waits: deps,
    subject: "bench",
    progress: () => undefined,
  };
  try {
    await setQuota({ backups: -1, backup_gigabytes: -1 });
    say(`making ${VOLUMES} volumes and ${POINTS} backups of them`);
    for (let i = 0; i < VOLUMES; i++) volumes.push((await cinder.createVolume({ size: 1, name: `${prefix}-${i}` })).id);
    for (const id of volumes) await os.waitForVolume(cinder, id, waits);
    const started = Date.now();
    const backUp = async (volumeId, n) => {
      // Each volume's first backup is a full, the others incrementals on it (as a daily set's points are).
      const incremental = n >= VOLUMES;
      const { id } = await cinder.createBackup({ volumeId, name: `${prefix}-${n}`, incremental });
      await os.waitForBackup(cinder, id, waits);
      const parent = newestOf.get(volumeId);
      newestOf.set(volumeId, id);
      backups.push({ source: volumeId, kind: "cinder-backup", id, ...(parent ? { parent } : {}) });
    };
    // One backup alone first: cinder-backup starts its privsep daemon on first use, and concurrent
    // first uses have left every backup in "creating" on this cloud.
    await backUp(volumes[0], 0);
    await Promise.all(
      volumes.map(async (volumeId, v) => {
        for (let n = v === 0 ? VOLUMES : v; n < POINTS; n += VOLUMES) {
          await backUp(volumeId, n);
          if (backups.length % 25 === 0)
            say(`${backups.length} backups (${Math.round((Date.now() - started) / 1000)} s)`);
        }
      }),
    );
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
          const problems = await cinderBackups.check(backups, ctx);
          if (problems.length > 0) throw new Error(`unexpected problems: ${JSON.stringify(problems[0])}`);
        }),
      );
      perBackup.push(await measure(() => Promise.all(backups.map((ref) => cinder.getBackup(ref.id)))));
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
    // Incrementals before the backups they build on, as a set's prune deletes them.
    await cinderBackups.remove(backups, ctx).catch((error) => say(`left behind: ${error.message}`));
    for (const id of volumes) await cinder.deleteVolume(id).catch(() => undefined);
    await setQuota(undefined).catch((error) => say(`could not put the quota back: ${error.message}`));
    await sleep(1000);
  }
}

main().catch((error) => {
  process.stderr.write(`bench: ${error.stack ?? error}\n`);
  process.exit(1);
});
