#!/usr/bin/env node
'use strict';
// Builds the addon from source with cargo and copies it next to the package's entry points.
// Run by `npm install` (also when the package is installed with `npm install <path>` from
// another project, where none of our devDependencies exist: hence plain cargo and no npm tool).
//
// `--debug` / `--release`, or TETHER_NODE_PROFILE=debug|release (default release), picks the
// cargo profile. The build goes to the cargo workspace's own target/ directory, shared with
// every other crate.

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { fileName } = require('../native.js');

const packageDir = path.resolve(__dirname, '..');
const flag = process.argv.find((a) => a === '--debug' || a === '--release');
const profile = flag ? flag.slice(2) : process.env.TETHER_NODE_PROFILE || 'release';
if (profile !== 'debug' && profile !== 'release') {
  console.error(`tether-session: TETHER_NODE_PROFILE must be debug or release, not ${profile}`);
  process.exit(1);
}

const cargo = process.env.CARGO || 'cargo';
const args = ['build', '-p', 'tether-node', '--lib', '--message-format=json-render-diagnostics'];
if (profile === 'release') args.push('--release');
console.error(`tether-session: ${cargo} ${args.join(' ')}`);
const run = spawnSync(cargo, args, {
  cwd: packageDir,
  stdio: ['ignore', 'pipe', 'inherit'],
  encoding: 'utf8',
  maxBuffer: 256 * 1024 * 1024,
});
if (run.error) {
  console.error(`tether-session: cannot run ${cargo} (${run.error.message}); a Rust toolchain is needed to build the addon`);
  process.exit(1);
}
if (run.status !== 0) {
  console.error(`tether-session: cargo failed with status ${run.status}`);
  process.exit(run.status || 1);
}

let library = null;
for (const line of run.stdout.split('\n')) {
  if (!line.startsWith('{')) continue;
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    continue;
  }
  if (message.reason === 'compiler-artifact' && message.target?.name === 'tether_node') {
    library = message.filenames.find((f) => /\.(so|dylib|dll)$/.test(f)) ?? library;
  }
}
if (!library) {
  console.error('tether-session: cargo built no tether_node library');
  process.exit(1);
}

// Copy then rename: a process that has the previous addon loaded keeps its mapping intact.
const destination = path.join(packageDir, fileName);
const temporary = `${destination}.${process.pid}.tmp`;
fs.copyFileSync(library, temporary);
fs.renameSync(temporary, destination);
console.error(`tether-session: ${path.relative(packageDir, library)} -> ${fileName}`);
