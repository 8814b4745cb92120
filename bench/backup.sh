#!/usr/bin/env bash
# Benchmark of the backup data path. Prints each case's time as a ratio to `cp --sparse=always`
# of the same disk, measured in the same run (machines are shared and noisy: compare ratios,
# not seconds). Every case ends with sync; with BENCH_RUNS > 1 each shows its median run.
#   BENCH_DISK_MIB   size of the generated disk (default 2048): per 4 MiB, random data, log
#                    text, random data, zeros (half random, a quarter text, a quarter zeros)
#   BENCH_RUNS       runs per case (default 1)
#   BENCH_DIR        scratch folder (default .work/bench); removed at the end
#   BENCH_ONLY       run only the cases whose name matches this extended regex (the baseline always runs)
# The coffer-agent cases include what Coffer does beyond the copy: reading the backup back to
# hash its decrypted stream, and hashing the file. LUKS cases key the container with a point's own
# random key (no key stretching) unless they say "passphrase", the way points were keyed before
# manifest schema 6 (QEMU's default 2 s of PBKDF2 at each open). "coffer point" cases take a
# whole point as EncryptedBackupSet does (the passphrase's scrypt wrap of the point key, the copy,
# a full check, the manifest); the 64 MiB one backs up the disk's first 64 MiB. "two-pass" is how a
# shell script without Coffer's one-pass path does compression + encryption: zlib `convert -c`,
# then a LUKS copy.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mib=${BENCH_DISK_MIB:-2048}
runs=${BENCH_RUNS:-1}
dir=${BENCH_DIR:-$repo/.work/bench}
rm -rf "$dir" && mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
[ -f "$repo/dist/provider/agent/cli.js" ] || (cd "$repo" && npm run --silent build)

src="$dir/src.raw"
echo "bench: generating a ${mib} MiB disk" >&2
node -e '
  const fs = require("fs"), crypto = require("crypto");
  const [file, mib] = [process.argv[1], Number(process.argv[2])];
  const mb = 1 << 20, line = Buffer.from("2026-11-24T03:00:00Z web-1 nginx: GET /healthz 200 upstream=10.0.0.7:8080\n");
  const text = Buffer.alloc(mb); for (let o = 0; o < mb; o += line.length) line.copy(text, o);
  const fd = fs.openSync(file, "w");
  for (let i = 0; i < mib; i++) { const k = Math.floor(i / 4) % 4; fs.writeSync(fd, k === 1 ? text : k === 3 ? Buffer.alloc(mb) : crypto.randomBytes(mb)); }
  fs.closeSync(fd);' "$src" "$mib"
printf '%s' "bench-passphrase-not-secret" > "$dir/key"
# The scratch folder is the backup target: it gets the identity a BackupPolicy would give it.
node -e '
  const { claimTargetIdentity } = require(process.argv[1] + "/dist/provider/common/targetIdentity.js");
  const { directoryStore } = require(process.argv[1] + "/dist/provider/targets/directory.js");
  claimTargetIdentity(directoryStore(process.argv[2]), new Date());
' "$repo" "$dir"
chmod 600 "$dir/key"

now() { date +%s.%N; }
# Runs "$@" BENCH_RUNS times with a sync, prints the median wall time in seconds.
median_run() {
  local t0 t1
  for _ in $(seq "$runs"); do
    "$cleanup"
    t0=$(now); "$@" >/dev/null; sync; t1=$(now)
    awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f\n", a - b }'
  done | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}
wanted() { [ -z "${BENCH_ONLY:-}" ] || [[ $1 =~ $BENCH_ONLY ]]; }
clean_out() { rm -rf "$dir/out" "$dir/out.raw" "$dir/tmp.qcow2" "$dir/out.luks" "$dir/sets"; mkdir -p "$dir/out"; }
cleanup=clean_out

agent_backup() { # compression encrypted randomKey; the agent's answer (the item) is kept for the verify case
  node "$repo/bin/coffer-agent.js" backup-item >"$dir/item.json" 2>/dev/null <<JSON
{"target":{"path":"$dir"},"zoneDir":"$dir/sets/bench","setId":"s","name":"disk","source":{"disk":"$src","format":"raw"},"compression":"$1","encrypted":$2,
 "bandwidthLimitMiBps":0,"integrityCheck":"none","passphrase":"bench-passphrase-not-secret","randomKey":$3}
JSON
  grep -q '"ok":true' "$dir/item.json" || { echo "bench: the backup failed: $(cat "$dir/item.json")" >&2; return 1; }
}
verify_full() {
  node "$repo/bin/coffer-agent.js" verify-set >"$dir/verify.json" 2>/dev/null <<JSON
{"target":{"path":"$dir"},"setDir":"$dir/sets/bench/s","level":"full","manifestSecret":"bench-passphrase-not-secret","passphrase":"bench-passphrase-not-secret"}
JSON
}
two_pass() {
  qemu-img convert -c -f raw -O qcow2 "$src" "$dir/tmp.qcow2"
  for _ in 1 2 3 4 5 6 7 8; do # Debian 7.2's intermittent LUKS-creation error (see provider/agent/tools.ts)
    qemu-img convert -f raw -O luks --object secret,id=k,file="$dir/key" -o key-secret=k "$dir/tmp.qcow2" "$dir/out.luks" 2>"$dir/err" && break
    grep -q 'accurate CPU' "$dir/err" || { cat "$dir/err" >&2; return 1; }
  done
  rm -f "$dir/tmp.qcow2"
}
# A whole point through EncryptedBackupSet's provider: zstd + LUKS, integrity check "full".
point() { # disk
  node -e '
    const [repo, dir, disk] = process.argv.slice(1);
    const { provider } = require(repo + "/dist/provider/backupSet");
    (async () => {
      const checked = await provider.check({}, {
        policy: { id: "bench-1", zone: "bench", target: { kind: "directory", path: dir }, compression: "zstd",
          integrityCheck: "full", bandwidthLimitMiBps: 0, encrypted: true },
        keys: { passphrase: "bench-passphrase-not-secret" },
        sources: [{ name: "disk", disk }],
        trigger: "bench",
      });
      if (checked.failures) throw new Error(JSON.stringify(checked.failures));
      await provider.create(checked.inputs);
    })().catch((e) => { console.error("bench: the point failed: " + e.message); process.exit(1); });
  ' "$repo" "$dir" "$1"
}
size_of() { du -k "$1" | cut -f1; }

declare -a names times sizes
record() { names+=("$1"); times+=("$2"); sizes+=("$3"); echo "bench: $1: ${2}s" >&2; }

t=$(median_run cp --sparse=always "$src" "$dir/out.raw"); record "cp --sparse=always (baseline)" "$t" "$(size_of "$dir/out.raw")"
for mode in "plain:none:false:false" "zstd:zstd:false:false" "LUKS:none:true:true" \
  "zstd+LUKS, passphrase-keyed:zstd:true:false" "zstd+LUKS:zstd:true:true"; do
  IFS=: read -r name compression encrypted random <<<"$mode"
  wanted "coffer-agent $name" || { [ "$name" = zstd+LUKS ] && wanted "full verify"; } || continue
  t=$(median_run agent_backup "$compression" "$encrypted" "$random")
  record "coffer-agent $name" "$t" "$(size_of "$dir/sets/bench/s")"
done
if wanted "coffer-agent full verify"; then
  # Full verify of the last (zstd+LUKS) set through the agent, with a manifest holding its item.
  node -e '
    const item = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).result;
    console.log(JSON.stringify({ target: { path: process.argv[3] }, setDir: process.argv[2], manifestSecret: "bench-passphrase-not-secret", manifest: {
      kind: "coffer.BackupSet", schemaVersion: 1, setId: "s", name: "bench", trigger: "bench", zone: "bench",
      policy: { compression: "zstd", encrypted: true, bandwidthLimitMiBps: 0, integrityCheck: "full" },
      keySource: "passphrase", qemuVersion: "bench", createdAt: new Date().toISOString(), items: [item] } }));
  ' "$dir/item.json" "$dir/sets/bench/s" "$dir" | node "$repo/bin/coffer-agent.js" write-manifest >/dev/null
  cleanup=true
  t=$(median_run verify_full)
  grep -q '"status":"ok"' "$dir/verify.json" || { echo "bench: the full verify did not pass: $(cat "$dir/verify.json")" >&2; exit 1; }
  record "coffer-agent full verify (zstd+LUKS)" "$t" "$(size_of "$dir/sets/bench/s")"
  cleanup=clean_out
fi
if wanted "two-pass"; then
  t=$(median_run two_pass); record "two-pass: zlib convert -c, then LUKS" "$t" "$(size_of "$dir/out.luks")"
fi
if wanted "coffer point zstd"; then
  t=$(median_run point "$src"); record "coffer point zstd+LUKS, full check" "$t" "$(size_of "$dir/sets")"
fi
if wanted "coffer point of 64"; then
  head -c $((64 << 20)) "$src" >"$dir/src64.raw"
  t=$(median_run point "$dir/src64.raw"); record "coffer point of 64 MiB, zstd+LUKS, full" "$t" "$(size_of "$dir/sets")"
fi

base=${times[0]}
printf '\n%-40s %10s %8s %12s\n' "case (disk: ${mib} MiB)" "seconds" "vs cp" "size (MiB)"
for i in "${!names[@]}"; do
  awk -v n="${names[$i]}" -v t="${times[$i]}" -v b="$base" -v k="${sizes[$i]}" 'BEGIN { printf "%-40s %10.2f %8.2f %12.0f\n", n, t, t / b, k / 1024 }'
done
