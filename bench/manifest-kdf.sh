#!/usr/bin/env bash
# What one passphrase guess costs an attacker who can read the backup target, against a set's
# manifest and against the backup's LUKS header: CPU seconds (user + system, so that other load
# on the shared machine counts less than in wall time), medians of BENCH_RUNS runs, same run.
#   luks          qemu-io unlocking a LUKS container made with QEMU's default iter-time (2 s of
#                 PBKDF2-SHA256 by QEMU's own benchmark) and reading a sector: one guess
#   manifest v2   deriving a manifest's HMAC key with Coffer's scrypt parameters and checking it
#   manifest v1   the same with the HKDF derivation of schema 1 manifests (the fast oracle)
#   wrapped v6    unwrapping a schema 6 point's own key (its `wrappedKey`): the only passphrase oracle of
#                 such a point, whose LUKS container is keyed by that random key
# A ratio >= 1 for v2 means a guess costs at least as much against the manifest as against the
# LUKS header, and scrypt's memory per guess also denies the speed-up GPUs give PBKDF2.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${BENCH_RUNS:-5}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
[ -f "$repo/dist/provider/agent/manifest.js" ] || (cd "$repo" && npm run --silent build)
printf '%s' "bench-passphrase-not-secret" > "$dir/key"
echo "bench: making a LUKS container with QEMU's default iter-time" >&2
# Debian's QEMU 7.2 sometimes fails its PBKDF benchmark with "Unable to get accurate CPU usage".
for attempt in 1 2 3 4 5 6 7 8; do
  qemu-img create -q -f luks --object "secret,id=k,file=$dir/key" -o key-secret=k "$dir/c.luks" 1M 2>/dev/null && break
  [ "$attempt" -lt 8 ] || { echo "bench: could not create the LUKS container" >&2; exit 1; }
done

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
# CPU seconds of one unlock, from bash's own `time` (it counts the child's user and system time).
luks_once() {
  local TIMEFORMAT="%U %S"
  { time qemu-io --object "secret,id=k,file=$dir/key" --image-opts "driver=luks,key-secret=k,file.filename=$dir/c.luks" \
    -c "read 0 512" >/dev/null 2>&1; } 2>&1 | awk '{ printf "%.3f\n", $1 + $2 }'
}
echo "bench: timing $runs unlocks and $runs manifest checks of each kind" >&2
luks=$(for _ in $(seq "$runs"); do luks_once; done | median)
read -r v2 v1 v6 < <(node -e '
  const { renderSignedManifest, openManifest } = require(process.argv[1]);
  const { wrapPointKey, unwrapPointKey } = require(process.argv[3]);
  const runs = Number(process.argv[2]);
  const median = (xs) => { xs.sort((a, b) => a - b); const m = xs.length >> 1; return xs.length % 2 ? xs[m] : (xs[m - 1] + xs[m]) / 2; };
  const base = { kind: "coffer.BackupSet", schemaVersion: 2, setId: "bench", name: "b", trigger: "b", zone: "z",
    policy: { compression: "none", encrypted: true, bandwidthLimitMiBps: 0, integrityCheck: "none" },
    keySource: "passphrase", qemuVersion: "x", createdAt: "x", items: [] };
  const cpu = async (work) => { const u = process.cpuUsage(); await work(); const d = process.cpuUsage(u); return (d.user + d.system) / 1e6; };
  (async () => {
    const v2 = await renderSignedManifest(base, "secret");
    const v1 = await renderSignedManifest({ ...base, schemaVersion: 1, mac: { kdf: "hkdf-sha256" } }, "secret");
    const wrapped = await wrapPointKey("0".repeat(64), "secret", "bench");
    const t2 = [], t1 = [], t6 = [];
    for (let i = 0; i < runs; i++) {
      t6.push(await cpu(() => unwrapPointKey(wrapped, "a guess", "bench")));
      t2.push(await cpu(() => openManifest(v2, "a guess")));
      // One HKDF guess is too short to time alone: time 1000 and divide.
      t1.push((await cpu(async () => { for (let j = 0; j < 1000; j++) await openManifest(v1, "a guess"); })) / 1000);
    }
    console.log(median(t2).toFixed(3), median(t1).toFixed(6), median(t6).toFixed(3));
  })();' "$repo/dist/provider/agent/manifest.js" "$runs" "$repo/dist/provider/agent/pointKey.js")

echo "one passphrase guess, CPU seconds, median of $runs runs:"
awk -v l="$luks" -v a="$v2" -v b="$v1" -v w="$v6" 'BEGIN {
  printf "  %-12s %10.3f s  ratio to LUKS %8.2f\n", "luks", l, 1
  printf "  %-12s %10.3f s  ratio to LUKS %8.2f\n", "manifest v2", a, a / l
  printf "  %-12s %10.3f s  ratio to LUKS %8.2f  (256 MiB of memory per guess)\n", "wrapped v6", w, w / l
  printf "  %-12s %10.6f s  ratio to LUKS %8.5f  (%d guesses per second per core)\n", "manifest v1", b, b / l, 1 / b
}'
