#!/usr/bin/env node
// Bundles coffer-agent (tsc's output in dist/) and its dependencies into one file that runs with
// `node` alone: what remote hosts get (provider/backupSet/remoteAgent.ts). `npm run build` runs it after tsc.
const esbuild = require("esbuild");
const fs = require("node:fs");
const path = require("node:path");
const root = path.resolve(__dirname, "..");
const { AGENT_BUNDLE_PATH } = require(path.join(root, "dist/provider/backupSet/agentBundle.js"));
const { MIN_NODE_VERSION } = require(path.join(root, "dist/provider/agent/agentVersion.js"));

const { metafile } = esbuild.buildSync({
  absWorkingDir: root,
  entryPoints: ["bin/coffer-agent.js"],
  outfile: AGENT_BUNDLE_PATH,
  bundle: true,
  platform: "node",
  format: "cjs",
  target: `node${MIN_NODE_VERSION}`,
  // Half the size to upload; no file paths of this machine end up in it, so its hash is the same on every build.
  minify: true,
  // License notices of the bundled packages, kept at the end.
  legalComments: "eof",
  logLevel: "warning",
  metafile: true,
});

// The bundle travels alone: it carries the license of every package in it.
const packageDirs = new Set(
  Object.keys(metafile.inputs).flatMap((input) => {
    const match = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    return match ? [match[1]] : [];
  }),
);
const notices = [...packageDirs].sort().map((dir) => {
  const { name, version, license } = JSON.parse(fs.readFileSync(path.join(root, dir, "package.json"), "utf8"));
  const licenseFile = fs.readdirSync(path.join(root, dir)).find((f) => /^(licen[cs]e|copying)/i.test(f));
  const text = licenseFile ? fs.readFileSync(path.join(root, dir, licenseFile), "utf8").trim() : "";
  return `${name} ${version} (${license})\n${text}`.replaceAll("*/", "* /");
});
fs.appendFileSync(path.join(root, AGENT_BUNDLE_PATH), `/*! Bundled packages:\n\n${notices.join("\n\n")}\n*/\n`);
