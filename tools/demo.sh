#!/usr/bin/env bash
# Runs the demo program (Pulumi.yaml at the repository root) after installing what is missing.
# Everything it makes stays in one folder, .work/demo (or $COFFER_DEMO_DIR): the file:// state
# backend, PULUMI_HOME, the stack's config file, the random passphrase that encrypts the stack's
# secrets, and (by default) the backup target folder.
#   tools/demo.sh                  pulumi up (the default)
#   tools/demo.sh <pulumi args>    any pulumi command on the demo stack: preview --diff, refresh, destroy, ...
# COFFER_DEMO_DIR=<dir> puts all of it, the target included, in <dir>; COFFER_DEMO_STACK names the stack (dev).
# COFFER_SKIP_SETUP=1 skips the install/build step (the caller has done it and put pulumi on PATH).
set -euo pipefail
source "$(dirname "$0")/lib/setup.sh"
[ "${COFFER_SKIP_SETUP:-0}" = 1 ] || coffer_setup
cd "$coffer_repo"

demo=${COFFER_DEMO_DIR:-$coffer_repo/.work/demo}
mkdir -p "$demo/state" "$demo/home" "$demo/target" "$demo/disks" "$demo/escrow" "$demo/escrow-keys"
chmod 700 "$demo"
if [ ! -s "$demo/stack-passphrase" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n' > "$demo/stack-passphrase")
fi
# A VM disk for the demo to back up: 64 MiB of random data, log text and zeros, made once.
disk="$demo/disks/vm-1.raw"
if [ ! -s "$disk" ]; then
  coffer_say "generating a 64 MiB demo disk image ($disk)"
  qemu-img create -q -f raw "$disk.tmp" 64M
  dd if=/dev/urandom of="$disk.tmp" bs=1M count=16 conv=notrunc status=none
  { yes "2026-11-24T03:00:00Z vm-1 sshd: session opened for user backup" || true; } | head -c 16M | dd of="$disk.tmp" bs=1M seek=16 conv=notrunc status=none
  mv "$disk.tmp" "$disk"
fi
# The demo escrows its backup passphrase to one recipient, "demo-dr-team". In real use the
# private key is generated and kept by that team, never beside the backups; Coffer only ever
# needs the public key.
keys="$demo/escrow-keys"
if [ ! -s "$keys/demo-dr-team.pem" ]; then
  coffer_say "generating the demo escrow recipient's X25519 key pair ($keys/demo-dr-team.pem, .pub.pem)"
  (umask 077 && node -e '
    const { generateKeyPairSync } = require("node:crypto");
    const fs = require("node:fs");
    const pair = generateKeyPairSync("x25519");
    fs.writeFileSync(process.argv[1] + ".pub.pem", pair.publicKey.export({ type: "spki", format: "pem" }));
    fs.writeFileSync(process.argv[1] + ".pem", pair.privateKey.export({ type: "pkcs8", format: "pem" }));
  ' "$keys/demo-dr-team")
fi
export PULUMI_CONFIG_PASSPHRASE_FILE="$demo/stack-passphrase"
export PULUMI_BACKEND_URL="file://$demo/state"
export PULUMI_HOME="$demo/home"
stack=${COFFER_DEMO_STACK:-dev}
stack_config="$demo/Pulumi.$stack.yaml"

if ! pulumi stack select "$stack" >/dev/null 2>&1; then
  pulumi stack init "$stack" --non-interactive >/dev/null
  # Pulumi writes a new stack's config file (with its encryption salt) beside Pulumi.yaml:
  # keep it with the rest of the demo, out of the repository.
  mv "Pulumi.$stack.yaml" "$stack_config"
fi
if ! pulumi config get passphrase --config-file "$stack_config" >/dev/null 2>&1; then
  coffer_say "generating the demo policy's backup passphrase (stack config 'passphrase', kept secret)"
  # From stdin: a value given as an argument would show on pulumi's command line.
  head -c 24 /dev/urandom | base64 | tr -d '\n' | pulumi config set --secret passphrase --config-file "$stack_config"
fi
if [ -n "${COFFER_DEMO_DIR:-}" ]; then
  pulumi config set targetPath "$demo/target" --config-file "$stack_config"
  pulumi config set diskPath "$disk" --config-file "$stack_config"
  pulumi config set escrowPath "$demo/escrow" --config-file "$stack_config"
  pulumi config set escrowPublicKeyPath "$keys/demo-dr-team.pub.pem" --config-file "$stack_config"
fi

[ "$#" -gt 0 ] || set -- up --yes
case "$1" in
  up | preview | refresh | destroy | config) set -- "$@" --config-file "$stack_config" ;;
esac
pulumi "$@"
