'use strict';
// `npm install <path>` from other projects: a fresh consumer project (its install script
// builds the addon with cargo), and examples/node, whose reconnect.js (the seed's example,
// ported) reports the reconnection after a cut.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { ROOT, GUARD_MS, startServer, startProxy } = require('./helpers.js');

const PACKAGE = path.join(__dirname, '..');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function run(file, args, options) {
  return new Promise((resolve) => {
    execFile(file, args, { maxBuffer: 64 * 1024 * 1024, ...options }, (error, stdout, stderr) =>
      resolve({ code: error ? error.code : 0, stdout, stderr }),
    );
  });
}

let server;
test.before(async () => {
  server = await startServer();
});
test.after(async () => {
  await server.stop();
});

test('npm install <path> from another project builds the addon with cargo and works', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-consumer-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true }));
  const env = { ...process.env, TETHER_NODE_PROFILE: process.env.TETHER_NODE_PROFILE || 'debug' };
  const install = await run(NPM, ['install', '--no-audit', '--no-fund', '--foreground-scripts', PACKAGE], { cwd: dir, env });
  assert.equal(install.code, 0, install.stdout + install.stderr);
  // The install script ran (it says so on stderr) and left the addon where the loader looks.
  assert.match(install.stdout + install.stderr, /tether-session: .*-> tether-session\..*\.node/);
  const script = `
    const tether = require('tether-session');
    tether.connect({ url: process.argv[1], principal: 'control', credentials: 'password' })
      .then(async (s) => { const id = s.sessionId; await s.close(); console.log(JSON.stringify({ id, state: s.state })); });
  `;
  const used = await run(process.execPath, ['-e', script, server.url], { cwd: dir });
  assert.equal(used.code, 0, used.stderr);
  const out = JSON.parse(used.stdout.trim());
  assert.match(out.id, /^[0-9a-f]{32}$/);
  assert.equal(out.state, 'CLOSED_BY_CLIENT');
});

test('examples/node/reconnect.js (the seed example) reports the reconnection after a cut', async (t) => {
  const dir = path.join(ROOT, 'examples', 'node');
  if (!fs.existsSync(path.join(dir, 'node_modules', 'tether-session'))) {
    // Link the package; its addon is already built (these tests run against it).
    const linked = await run(NPM, ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--no-package-lock'], { cwd: dir });
    assert.equal(linked.code, 0, linked.stdout + linked.stderr);
  }
  const proxy = await startProxy(server);
  const child = spawn(process.execPath, ['reconnect.js'], {
    cwd: dir,
    env: { ...process.env, TETHER_HOST: proxy.host, TETHER_PORT: String(proxy.port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c) => {
    stderr += c;
  });
  t.after(async () => {
    child.kill('SIGTERM');
    await proxy.stop();
  });
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const nextLine = async () => {
    let timer;
    const line = await Promise.race([
      lines.next(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no output within ${GUARD_MS} ms; stderr: ${stderr}`)), GUARD_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(line.done, false, `the example ended early; stderr: ${stderr}`);
    return line.value;
  };

  const connected = await nextLine();
  const match = /^connected: session ([0-9a-f]{32})$/.exec(connected);
  assert.ok(match, connected);
  const id = match[1];
  await proxy.cut('rst');
  assert.equal(await nextLine(), `disconnected: session ${id}`);
  assert.equal(await nextLine(), `reconnected: session ${id}`);
});
