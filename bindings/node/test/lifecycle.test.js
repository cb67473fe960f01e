'use strict';
// Process lifecycle, in child processes: after close() nothing keeps Node's event loop alive,
// 200 open/close cycles, exit with sessions open, callbacks that throw with no listener, ESM.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const { startServer, startProxy, GUARD_MS } = require('./helpers.js');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(async () => {
  await server.stop();
});

/**
 * Runs a fixture and resolves with its exit code and stdout. The fixtures never call
 * process.exit() (except exit-while-open.js): they exit only if nothing keeps them alive.
 * A child still running after `guardMs` is killed and the test fails: that is a hang.
 */
function runFixture(name, args, guardMs = GUARD_MS) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', name), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout += c;
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${name} did not exit by itself within ${guardMs} ms; stdout: ${stdout} stderr: ${stderr}`));
    }, guardMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, json: parseLast(stdout) });
    });
  });
}

function parseLast(stdout) {
  const lines = stdout.trim().split('\n').filter(Boolean);
  try {
    return JSON.parse(lines[lines.length - 1]);
  } catch {
    return null;
  }
}

test('after close() the process exits by itself (events, JS strategy across a cut, both subscription forms)', async () => {
  const proxy = await startProxy(server);
  try {
    const { code, signal, json, stderr } = await runFixture('close-and-exit.js', [proxy.url, proxy.controlAddress]);
    assert.equal(signal, null, stderr);
    assert.equal(code, 0, stderr);
    assert.deepEqual(json, { closed: 'CLOSED_BY_CLIENT', value: 'x', handled: 1 });
  } finally {
    await proxy.stop();
  }
});

test('200 open/close cycles in one process, then the process exits by itself', async () => {
  const { code, signal, json, stderr } = await runFixture('cycles.js', [server.url, '200'], 240000);
  assert.equal(signal, null, stderr);
  assert.equal(code, 0, stderr);
  assert.deepEqual(json, { cycles: 200, distinctIds: 200 });
});

test('process.exit() with a session open exits with the given code', async () => {
  const { code, signal, json, stderr } = await runFixture('exit-while-open.js', [server.url]);
  assert.equal(signal, null, stderr);
  assert.equal(code, 7, stderr);
  assert.deepEqual(json, { state: 'CONNECTED_ACTIVE' });
});

test('a throwing strategy with no error listener: a process warning, the session closes, no crash', async () => {
  const proxy = await startProxy(server);
  try {
    const { code, json, stderr } = await runFixture('no-error-listener.js', [proxy.url, proxy.controlAddress]);
    assert.equal(code, 0, stderr);
    assert.equal(json.reason, 'reconnect_aborted');
    assert.deepEqual(json.warnings, ['strategy bug nobody listens for']);
  } finally {
    await proxy.stop();
  }
});

test('the ESM entry point has the same exports as the CommonJS one', async () => {
  const { code, json, stderr } = await runFixture('esm.mjs', [server.url]);
  assert.equal(code, 0, stderr);
  assert.equal(json.same, true);
  assert.match(json.id, /^[0-9a-f]{32}$/);
  assert.equal(json.state, 'CLOSED_BY_CLIENT');
});
