#!/usr/bin/env bash
# jest with the Node flags the tests need (tools/test.sh runs set-up first; this does not).
exec node --experimental-vm-modules --disable-warning=ExperimentalWarning "$(dirname "$0")/../node_modules/.bin/jest" "$@"
