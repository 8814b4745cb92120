// Incremental points of a running VM's qcow2 disk (see bench/incremental.sh): a full point, then
// BENCH_LINKS links after the guest rewrote BENCH_CHANGE_PERCENT of the disk each time (scattered
// 64 KiB writes of random data through QEMU's monitor), then `coffer restore` of the last link and of the full
// point. Times are ratios to `cp --sparse=always` of the disk in the same run; sizes are ratios to
// the full point's. Each case runs BENCH_RUNS times (medians).
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const repo = path.resolve(__dirname, "..");
const mib = Number(process.env.BENCH_DISK_MIB ?? 2048);
const links = Number(process.env.BENCH_LINKS ?? 10);
const changePercent = Number(process.env.BENCH_CHANGE_PERCENT ?? 1);
const runs = Number(process.env.BENCH_RUNS ?? 1);
const dir = process.env.BENCH_DIR ?? path.join(repo, ".work", "bench-incremental");
const PASSPHRASE = "bench-passphrase-not-secret";
const CHUNK = 64 * 1024;

const { provider } = require(path.join(repo, "dist/provider/backupSet"));
const { QmpClient } = require(path.join(repo, "dist/provider/agent/qmp"));
const { claimTargetIdentity } = require(path.join(repo, "dist/provider/common/targetIdentity"));
const { directoryStore } = require(path.join(repo, "dist/provider/targets/directory"));

const say = (line) => process.stderr.write(`bench: ${line}\n`);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
async function timed(work) {
  const t0 = process.hrtime.bigint();
  const result = await work();
  execFileSync("sync");
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, result };
}

/** The bench's disk: per 4 MiB, random data, log text, random data, zeros (as bench/backup.sh). */
function makeDisk(raw) {
  const mb = 1 << 20;
  const line = Buffer.from("2026-11-24T03:00:00Z web-1 nginx: GET /healthz 200 upstream=10.0.0.7:8080\n");
  const text = Buffer.alloc(mb);
  for (let o = 0; o < mb; o += line.length) line.copy(text, o);
  const fd = fs.openSync(raw, "w");
  const crypto = require("node:crypto");
  for (let i = 0; i < mib; i++) {
    const k = Math.floor(i / 4) % 4;
    fs.writeSync(fd, k === 1 ? text : k === 3 ? Buffer.alloc(mb) : crypto.randomBytes(mb));
  }
  fs.closeSync(fd);
}

function startQemu(disk, socket) {
  const { spawn } = require("node:child_process");
  const child = spawn(
    "qemu-system-x86_64",
    [
      ...["-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-S", "-m", "64"],
      ...["-qmp", `unix:${socket},server=on,wait=off`],
      ...["-blockdev", `driver=file,filename=${disk},node-name=disk0-file`],
      ...["-blockdev", "driver=qcow2,file=disk0-file,node-name=disk0"],
      ...["-device", "virtio-blk-pci,drive=disk0,id=vda"],
    ],
    { stdio: "ignore" },
  );
  return child;
}

/** Rewrites `percent` of the disk in 64 KiB writes spread over it, through QEMU (as a guest would). */
async function guestWrites(socket, percent, round) {
  const count = Math.round((mib * 1024 * 1024 * percent) / 100 / CHUNK);
  const stride = Math.floor((mib * 1024 * 1024) / CHUNK / count);
  // Random data, as a guest's new data mostly is: a pattern would compress to nothing.
  const data = path.join(dir, `write-${round}.bin`);
  fs.writeFileSync(data, require("node:crypto").randomBytes(CHUNK));
  const qmp = await QmpClient.connect(socket, "bench");
  try {
    for (let i = 0; i < count; i++) {
      const offset = (i * stride + (round % stride)) * CHUNK;
      const command = `qemu-io -d vda/virtio-backend "write -s ${data} ${offset} ${CHUNK}"`;
      const said = await qmp.execute("human-monitor-command", { "command-line": command });
      if (said !== "") throw new Error(`qemu-io: ${said}`);
    }
  } finally {
    qmp.close();
  }
  return count * CHUNK;
}

function inputs(target, socket, trigger) {
  return {
    policy: {
      id: "bench-1",
      zone: "bench",
      target: { kind: "directory", path: target },
      compression: "zstd",
      integrityCheck: "full",
      bandwidthLimitMiBps: 0,
      encrypted: true,
    },
    keys: { passphrase: PASSPHRASE },
    sources: [{ name: "vm", qmpSocket: socket, device: "vda", incremental: true }],
    trigger,
  };
}

async function checked(input) {
  const result = await provider.check({}, input);
  if (result.failures) throw new Error(JSON.stringify(result.failures));
  return result.inputs;
}

function restore(manifestPath, to) {
  fs.rmSync(to, { force: true });
  const args = [path.join(repo, "bin/coffer.js"), "restore", "--manifest", manifestPath, "--item", "vm"];
  execFileSync(process.execPath, [...args, "--to", to, "--quiet", "--passphrase-file", path.join(dir, "pass")]);
}

async function main() {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "pass"), PASSPHRASE, { mode: 0o600 });
  say(`generating a ${mib} MiB disk`);
  makeDisk(path.join(dir, "src.raw"));
  execFileSync("qemu-img", [
    "convert",
    "-f",
    "raw",
    "-O",
    "qcow2",
    path.join(dir, "src.raw"),
    path.join(dir, "vm.qcow2"),
  ]);
  fs.rmSync(path.join(dir, "src.raw"));
  const results = { cp: [], full: [], link: [], fullSize: [], linkSize: [], restoreFull: [], restoreChain: [] };
  for (let round = 0; round < runs; round++) {
    const cp = await timed(() =>
      execFileSync("cp", ["--sparse=always", path.join(dir, "vm.qcow2"), path.join(dir, "cp.qcow2")]),
    );
    fs.rmSync(path.join(dir, "cp.qcow2"));
    results.cp.push(cp.seconds);
    const target = path.join(dir, `target-${round}`);
    fs.mkdirSync(target);
    claimTargetIdentity(directoryStore(target), new Date());
    const disk = path.join(dir, `vm-${round}.qcow2`);
    fs.copyFileSync(path.join(dir, "vm.qcow2"), disk);
    const socket = path.join(dir, `qmp-${round}.sock`);
    const qemu = startQemu(disk, socket);
    try {
      while (!fs.existsSync(socket)) await new Promise((r) => setTimeout(r, 50));
      const first = await checked(inputs(target, socket, "t0"));
      const full = await timed(() => provider.create(first));
      const { id } = full.result;
      let outs = full.result.outs;
      results.full.push(full.seconds);
      results.fullSize.push(outs.points[0].sizeBytes);
      const fullManifest = outs.manifestPath;
      say(
        `round ${round + 1}: full point ${full.seconds.toFixed(2)} s, ${(outs.points[0].sizeBytes / 2 ** 20).toFixed(0)} MiB`,
      );
      const linkTimes = [];
      for (let link = 1; link <= links; link++) {
        const written = await guestWrites(socket, changePercent, link);
        const news = await checked(inputs(target, socket, `t${link}`));
        const taken = await timed(() => provider.update(id, outs, news));
        outs = taken.result.outs;
        const point = outs.points.at(-1);
        linkTimes.push(taken.seconds);
        results.link.push(taken.seconds);
        results.linkSize.push(point.sizeBytes);
        say(
          `round ${round + 1}: link ${link} (${(written / 2 ** 20).toFixed(1)} MiB written): ` +
            `${taken.seconds.toFixed(2)} s, ${(point.sizeBytes / 2 ** 20).toFixed(2)} MiB`,
        );
      }
      results.restoreFull.push((await timed(() => restore(fullManifest, path.join(dir, "r-full.raw")))).seconds);
      results.restoreChain.push((await timed(() => restore(outs.manifestPath, path.join(dir, "r-chain.raw")))).seconds);
      fs.rmSync(path.join(dir, "r-full.raw"), { force: true });
      fs.rmSync(path.join(dir, "r-chain.raw"), { force: true });
    } finally {
      qemu.kill("SIGKILL");
    }
    fs.rmSync(target, { recursive: true, force: true });
    fs.rmSync(disk, { force: true });
  }
  const cp = median(results.cp);
  const full = median(results.full);
  const rows = [
    ["cp --sparse=always of the qcow2 (baseline)", cp, `${(cp / cp).toFixed(2)}x cp`],
    ["full point (zstd+LUKS, full check)", full, `${(full / cp).toFixed(2)}x cp`],
    [
      `link after ${changePercent}% rewritten`,
      median(results.link),
      `${((100 * median(results.link)) / full).toFixed(1)}% of the full point's time; size ` +
        `${((100 * median(results.linkSize)) / median(results.fullSize)).toFixed(2)}% of its size`,
    ],
    ["restore of the full point", median(results.restoreFull), "1.00x"],
    [
      `restore of the end of a ${links}-link chain`,
      median(results.restoreChain),
      `${(median(results.restoreChain) / median(results.restoreFull)).toFixed(2)}x the full point's restore`,
    ],
  ];
  console.log(`\ncase (disk: ${mib} MiB, ${runs} run(s), medians)`.padEnd(48) + "seconds".padStart(9) + "  ratio");
  for (const [name, seconds, ratio] of rows)
    console.log(name.padEnd(48) + seconds.toFixed(2).padStart(9) + "  " + ratio);
  fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((error) => {
  console.error(`bench: ${error.message}`);
  process.exit(1);
});
