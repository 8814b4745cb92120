#!/usr/bin/env bash
# The same whole point (EncryptedBackupSet's provider: zstd + LUKS, integrity check "full") onto a directory
# target and onto a Swift target, in one run; prints the median of each and the ratio Swift / directory
# (goal: at most 1.5). Needs the loopback Swift cluster: COFFER_SWIFTLOOP=<its swift.json>
# (tools/swift/swiftloop.sh up writes it to .work/swiftloop/swift.json).
#   BENCH_DISK_MIB   size of the generated disk (default 512): half random data, a quarter log text, a quarter zeros
#   BENCH_RUNS       runs per case (default 3)
#   BENCH_DIR        scratch folder (default .work/bench-swift); removed at the end
#   BENCH_SEGMENT_MIB  the Swift target's segment size (default 64, the target's default)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mib=${BENCH_DISK_MIB:-512}
runs=${BENCH_RUNS:-3}
dir=${BENCH_DIR:-$repo/.work/bench-swift}
swiftloop=${COFFER_SWIFTLOOP:?set COFFER_SWIFTLOOP to the swift.json of the loopback cluster (tools/swift/swiftloop.sh up)}
rm -rf "$dir" && mkdir -p "$dir/target" "$dir/spool"
trap 'rm -rf "$dir"' EXIT
[ -f "$repo/dist/provider/agent/cli.js" ] || (cd "$repo" && npm run --silent build)

echo "bench: generating a ${mib} MiB disk" >&2
node -e '
  const fs = require("fs"), crypto = require("crypto");
  const [file, mib] = [process.argv[1], Number(process.argv[2])];
  const mb = 1 << 20;
  const line = Buffer.from("2026-11-24T03:00:00Z web-1 nginx: GET /healthz 200 upstream=10.0.0.7:8080\n");
  const text = Buffer.alloc(mb); for (let o = 0; o < mb; o += line.length) line.copy(text, o);
  const fd = fs.openSync(file, "w");
  for (let i = 0; i < mib; i++) {
    const k = Math.floor(i / 4) % 4;
    fs.writeSync(fd, k === 1 ? text : k === 3 ? Buffer.alloc(mb) : crypto.randomBytes(mb));
  }
  fs.closeSync(fd);' "$dir/src.raw" "$mib"

# One point of the disk onto "directory" or "swift" (a folder of its own in the container, removed after).
point() { # kind
  node -e '
    const [repo, dir, kind, loopFile, segmentMiB] = process.argv.slice(1);
    const { provider: policies } = require(repo + "/dist/provider/backupPolicy");
    const { provider: sets } = require(repo + "/dist/provider/backupSet");
    const { SwiftStore, tempAuth } = require(repo + "/dist/provider/targets/swift");
    const { listAll } = require(repo + "/dist/provider/targets/store");
    const loop = JSON.parse(require("fs").readFileSync(loopFile, "utf8"));
    const prefix = "bench-" + require("crypto").randomBytes(6).toString("hex");
    const zone = prefix; // a policy of its own each run, on either target
    const target = kind === "swift"
      ? { kind, authUrl: loop.authUrl, user: loop.user, container: "coffer-bench", prefix,
          segmentMiB: Number(segmentMiB), scratch: { path: dir + "/spool" } }
      : { kind, path: dir + "/target" };
    const targetKey = kind === "swift" ? loop.key : undefined;
    const passphrase = "bench-passphrase-not-secret";
    (async () => {
      const policy = await policies.check({}, { zone, target, targetKey, encryption: { passphrase } });
      if (policy.failures) throw new Error(JSON.stringify(policy.failures));
      const { id, outs } = await policies.create(policy.inputs);
      const checked = await sets.check({}, {
        policy: { id, zone, target: outs.target, compression: "zstd", integrityCheck: "full",
          bandwidthLimitMiBps: 0, encrypted: true },
        keys: { passphrase, ...(targetKey ? { targetKey } : {}) },
        sources: [{ name: "disk", disk: dir + "/src.raw" }],
        trigger: "bench",
      });
      if (checked.failures) throw new Error(JSON.stringify(checked.failures));
      const started = process.hrtime.bigint();
      await sets.create(checked.inputs);
      console.log((Number(process.hrtime.bigint() - started) / 1e9).toFixed(3));
      if (kind === "swift") {
        const store = new SwiftStore({ auth: tempAuth(loop), container: "coffer-bench", prefix });
        for (const { key } of await listAll(store, "")) await store.remove(key);
      } else {
        require("fs").rmSync(dir + "/target/sets", { recursive: true, force: true });
        require("fs").rmSync(dir + "/target/.coffer/zones", { recursive: true, force: true });
      }
    })().catch((e) => { console.error("bench: the point failed: " + e.message); process.exit(1); });
  ' "$repo" "$dir" "$1" "$swiftloop" "${BENCH_SEGMENT_MIB:-64}"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# Alternated, so that a noisy moment of the shared machine falls on both cases alike.
: >"$dir/directory.times"
: >"$dir/swift.times"
for i in $(seq "$runs"); do
  for kind in directory swift; do
    t=$(point "$kind"); sync
    echo "$t" >>"$dir/$kind.times"
    echo "bench: run $i, $kind: ${t}s" >&2
  done
done
d=$(median <"$dir/directory.times")
s=$(median <"$dir/swift.times")
printf '\n%-52s %10s\n' "case (disk: ${mib} MiB, zstd+LUKS, full check)" "seconds"
printf '%-52s %10.2f\n' "point onto a directory target (median of $runs)" "$d"
printf '%-52s %10.2f\n' "point onto a Swift target, 3 replicas (median of $runs)" "$s"
awk -v s="$s" -v d="$d" 'BEGIN { printf "%-52s %10.2f  (goal: at most 1.5)\n", "ratio swift / directory", s / d }'
