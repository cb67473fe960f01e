'use strict';
// index.d.ts matches the runtime: the same exports, and test/types compiles with tsc.

const test = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const tether = require('..');

const root = path.join(__dirname, '..');

test('index.d.ts declares every runtime export, and nothing else', () => {
  const dts = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8');
  const declared = [...dts.matchAll(/^export declare (?:function|const|class) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual([...new Set(declared)].sort(), Object.keys(tether).sort());
});

test('the types compile, and misuses do not (tsc -p test/types)', async () => {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  assert.ok(fs.existsSync(tsc), 'typescript is a devDependency: run npm install');
  const result = await new Promise((resolve) => {
    execFile(process.execPath, [tsc, '-p', path.join(__dirname, 'types')], { cwd: root }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, output: stdout + stderr }),
    );
  });
  assert.equal(result.code, 0, result.output);
});
