'use strict';
// Test harness: the real server and the fault proxy, as child processes on loopback.
// Both print one JSON line on stdout once listening; we read it to learn their ports.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.TETHER_BIN_DIR || path.join(ROOT, 'target', 'debug');

/** A failure guard for awaiting events: never a way to wait for something to happen. */
const GUARD_MS = 20000;

const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Spawns `binary` and resolves with its first stdout line, parsed as JSON. */
function spawnJson(binary, args) {
  const file = path.join(BIN, binary);
  if (!fs.existsSync(file)) {
    throw new Error(`${file} is missing: run cargo build -p tether-server -p tether-testkit`);
  }
  const child = spawn(file, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  child.once('exit', (code, signal) => {
    if (children.has(child)) {
      // Not stopped by us: say so, or the failures that follow are a riddle.
      console.error(`${binary} exited unexpectedly (code ${code}, signal ${signal}): ${stderr.slice(-2000)}`);
    }
  });
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`${binary} did not start: ${stderr}`)), GUARD_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${binary} exited (${code}) before it was ready: ${stderr}`));
    });
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve({ child, info: JSON.parse(line) });
      } catch (err) {
        reject(new Error(`${binary} printed ${line}: ${err.message}`));
      }
    });
  });
}

function stop(child) {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', resolve);
    child.stdin.end();
    child.kill('SIGTERM');
  });
}

let hashCache = null;
function hash(password) {
  hashCache ??= new Map();
  if (!hashCache.has(password)) {
    const out = execFileSync(path.join(BIN, 'tether-server'), ['hash-password'], { input: password });
    hashCache.set(password, out.toString().trim());
  }
  return hashCache.get(password);
}

/**
 * Starts a server: `--dev` (principal control / password) by default, or from a config with
 * the given fields (an object value is a table: `{ recovery: { max_frames: 5 } }`) plus principals `control` (everything) and `reader` / `secret` (may only
 * subscribe to `public/**` and publish nothing).
 *
 * `restart()` is `systemctl restart`: SIGTERM (the server drains: its sessions are sent away
 * with reason `server_draining` and its retry-after hint, and saved if it has a `state_dir`),
 * then the same server again on the same address once the first has exited.
 */
async function startServer(config) {
  let args = ['--dev', '--listen', '127.0.0.1:0'];
  let dir = null;
  if (config) {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-node-'));
    const file = path.join(dir, 'server.toml');
    const lines = ['listen = "127.0.0.1:0"'];
    const tables = Object.entries(config).filter(([, v]) => v !== null && typeof v === 'object');
    for (const [key, value] of Object.entries(config)) {
      if (!tables.some(([k]) => k === key)) lines.push(`${key} = ${JSON.stringify(value)}`);
    }
    for (const [table, fields] of tables) {
      lines.push(`[${table}]`);
      for (const [key, value] of Object.entries(fields)) lines.push(`${key} = ${JSON.stringify(value)}`);
    }
    lines.push(
      '[[principals]]',
      'name = "control"',
      `password_hash = ${JSON.stringify(hash('password'))}`,
      'subscribe = ["**"]',
      'publish = ["**"]',
      '[[principals]]',
      'name = "reader"',
      `password_hash = ${JSON.stringify(hash('secret'))}`,
      'subscribe = ["public/**"]',
      'publish = []',
    );
    fs.writeFileSync(file, `${lines.join('\n')}\n`);
    args = ['--config', file, '--listen', '127.0.0.1:0'];
  }
  let { child, info } = await spawnJson('tether-server', args);
  return {
    address: info.listen,
    url: `ws://${info.listen}`,
    restart: async () => {
      await stop(child);
      const listen = args.indexOf('--listen');
      const again = [...args.slice(0, listen), '--listen', info.listen, ...args.slice(listen + 2)];
      ({ child, info } = await spawnJson('tether-server', again));
    },
    /** The sessions the server keeps, by state (`{ connected, disconnected }`); needs `metrics_listen`. */
    sessions: async () => {
      if (!info.metrics) throw new Error('start the server with { metrics_listen: "127.0.0.1:0" }');
      const text = await request(info.metrics, 'GET', '/metrics', (body) => body);
      const kept = { connected: 0, disconnected: 0 };
      for (const [, state, n] of text.matchAll(/^tether_sessions\{state="(\w+)"\} (\d+)$/gm)) kept[state] = Number(n);
      return kept;
    },
    stop: async () => {
      await stop(child);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function request(control, method, pathAndQuery, parse = JSON.parse) {
  return new Promise((resolve, reject) => {
    const req = http.request(`http://${control}${pathAndQuery}`, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        body += chunk;
      });
      res.on('end', () => {
        if (res.statusCode !== 200) {
          reject(new Error(`${method} ${pathAndQuery}: ${res.statusCode} ${body}`));
        } else {
          resolve(parse(body));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** Starts a fault proxy in front of `server`; see crates/tether-testkit/README.md. */
async function startProxy(server) {
  const { child, info } = await spawnJson('tether-faultproxy', [
    '--upstream',
    server.address,
    '--exit-on-stdin-close',
  ]);
  const [host, port] = info.proxy.split(':');
  return {
    host,
    port: Number(port),
    url: `ws://${info.proxy}`,
    controlAddress: info.control,
    cut: (mode = 'rst') => request(info.control, 'POST', `/cut?mode=${mode}`),
    stall: () => request(info.control, 'POST', '/stall'),
    refuse: (ms = 0) => request(info.control, 'POST', `/refuse?ms=${ms}`),
    heal: () => request(info.control, 'POST', '/heal'),
    status: () => request(info.control, 'GET', '/status'),
    waitForwarded: (n) => request(info.control, 'GET', `/wait?forwarded=${n}&timeout_ms=${GUARD_MS}`),
    stop: () => stop(child),
  };
}

/** Resolves with the arguments of the next `event` (rejects after the guard). */
function next(emitter, event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`no ${event} event within ${GUARD_MS} ms`));
    }, GUARD_MS);
    function listener(...args) {
      clearTimeout(timer);
      resolve(args);
    }
    emitter.once(event, listener);
  });
}

/** Records every event of a session, in order. */
function record(session) {
  const log = [];
  for (const name of ['state', 'disconnect', 'reconnect', 'close', 'error']) {
    session.on(name, (...args) => log.push([name, ...args]));
  }
  return log;
}

/** A promise with its resolve/reject, for callbacks that must be awaited. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Bounds a promise with the guard. */
function guard(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing within ${GUARD_MS} ms`)), GUARD_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

module.exports = {
  ROOT,
  GUARD_MS,
  startServer,
  startProxy,
  next,
  record,
  deferred,
  guard,
  credentials: { principal: 'control', credentials: 'password' },
};
