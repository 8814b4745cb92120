#!/usr/bin/env node
// The host agent; see provider/agent/cli.ts.
require("../dist/provider/agent/cli.js").main(process.argv.slice(2));
