#!/usr/bin/env bash
# Makes the Pulumi CLI available and prints the folder to put on PATH, which holds:
#   pulumi                         built from Pulumi's Go modules (go.mod here), at the version of
#                                  the installed @pulumi/pulumi; cached, rebuilt only when that changes
#   pulumi-language-nodejs         tools/pulumi-language-nodejs (see its main.js for why)
#   pulumi-resource-pulumi-nodejs  the dynamic-provider plugin shipped inside @pulumi/pulumi
# An installed `pulumi` already on PATH is used as it is.
# Exit codes: 0 ready, 1 failed, 3 no Go toolchain (the caller decides whether that skips or fails).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${COFFER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer}
log() { echo "pulumi-cli: $*" >&2; }

sdk_version=$(node -p "require('$repo/node_modules/@pulumi/pulumi/package.json').version" 2>/dev/null) || {
  log "@pulumi/pulumi is not installed: run npm ci first"; exit 1; }
module_version=$(awk '$1 == "github.com/pulumi/pulumi/pkg/v3" { print $2 }' "$here/go.mod")
if [ "v$sdk_version" != "$module_version" ]; then
  log "@pulumi/pulumi is $sdk_version but tools/pulumi-cli/go.mod builds $module_version: make them equal"
  exit 1
fi

bin="$repo/.work/bin"
mkdir -p "$bin"
ln -sf "$repo/tools/pulumi-language-nodejs/pulumi-language-nodejs" "$bin/pulumi-language-nodejs"
ln -sf "$repo/node_modules/@pulumi/pulumi/pulumi-resource-pulumi-nodejs" "$bin/pulumi-resource-pulumi-nodejs"

installed=$(PATH=$(echo "$PATH" | tr ':' '\n' | grep -vxF "$bin" | paste -sd:) command -v pulumi || true)
if [ -n "$installed" ]; then
  log "using the installed $installed ($("$installed" version))"
  ln -sf "$installed" "$bin/pulumi"
  echo "$bin"; exit 0
fi

# The cache key covers everything that decides the binary.
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
cached="$cache_root/pulumi-cli/$module_version-$key/pulumi"
if [ ! -x "$cached" ]; then
  command -v go >/dev/null || { log "no Go toolchain: install Go >= $(awk '$1 == "go" { print $2 }' "$here/go.mod") to build the Pulumi CLI"; exit 3; }
  log "building pulumi $module_version from Pulumi's Go modules (a few minutes the first time; cached in $cache_root)"
  started=$(date +%s)
  mkdir -p "$(dirname "$cached")"
  # go.sum pins every module's hash. Pulumi's own modules are not in the public checksum database
  # at this version, so only they skip it; go.sum still verifies them.
  (cd "$here" && GOFLAGS=-mod=readonly GONOSUMDB=github.com/pulumi/pulumi \
    go build -trimpath -tags osusergo,grpcnotrace \
      -ldflags "-w -s -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$module_version" \
      -o "$cached.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
  mv "$cached.tmp" "$cached"
  log "built in $(( $(date +%s) - started ))s"
fi
# A hard link (or copy) rather than a symlink: the CLI looks for bundled plugins beside its real path.
ln -f "$cached" "$bin/pulumi" 2>/dev/null || cp "$cached" "$bin/pulumi"
echo "$bin"
