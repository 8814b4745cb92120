#!/usr/bin/env node
// Restore and verify without Pulumi; see provider/cli/coffer.ts.
// A reader that stops early (`coffer --help | head`) is no failure; any other write error still is.
process.stdout.on("error", (error) => {
  if (error.code !== "EPIPE") throw error;
});
require("../dist/provider/cli/coffer.js")
  .main(process.argv.slice(2))
  .then((code) => (process.exitCode = code));
