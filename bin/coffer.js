#!/usr/bin/env node
// Restore and verify without Pulumi; see provider/cli/coffer.ts.
require("../dist/provider/cli/coffer.js")
  .main(process.argv.slice(2))
  .then((code) => (process.exitCode = code));
