'use strict';
// Measure (h), Node.js side: one session's throughput through the `tether-session` package,
// and the same through the raw `ws` package. Started by xtask/src/bench/bindings.rs:
//
//   node h_bench.js <mode> <url> <n>
//
// modes: `tether-down` (subscribe to bench/down, count live updates; prints `ready` once the
// subscription is confirmed and `got K` every 1024 updates, so the publisher keeps a window),
// `raw-down` (count N binary messages from the raw server's /down/N), `tether-up` (publish N
// messages on bench/up, at most WINDOW awaiting completion), `raw-up` (send N messages to
// /up/N, then wait for its `done`). Prints `cpu C` (nanoseconds of CPU per message: this
// process, every thread of it, over the phase) then `rate R` (messages per second: down from
// the first message to the last, up from the first send to the last completion) and exits.
//
// TETHER_ADDON names the native addon to load (copied next to the package's index.js).

const fs = require('node:fs');
const path = require('node:path');

const [mode, url, count] = process.argv.slice(2);
const n = Number(count);
const PAYLOAD = Buffer.alloc(100, 0x5a);
const WINDOW = 4096;
const PROGRESS = 1024;

function out(line) {
  process.stdout.write(`${line}\n`);
}

/** Prints the CPU this process used since `start` (a `process.cpuUsage()`), per message. */
function outCpu(start, messages) {
  const used = process.cpuUsage(start);
  out(`cpu ${((used.user + used.system) * 1000) / messages}`);
}

function tether() {
  const dir = path.join(__dirname, 'tether-session');
  const { fileName } = require(path.join(dir, 'native.js'));
  const addon = process.env.TETHER_ADDON;
  if (addon) {
    const destination = path.join(dir, fileName);
    const temporary = `${destination}.${process.pid}.tmp`;
    fs.copyFileSync(addon, temporary);
    fs.renameSync(temporary, destination);
  }
  return require(path.join(dir, 'index.js'));
}

async function tetherDown() {
  const session = await tether().connect({ url });
  let got = 0;
  let first = 0;
  let cpu;
  let done;
  const finished = new Promise((resolve) => {
    done = resolve;
  });
  await session.subscribe('bench/down', (update) => {
    if (update.snapshot) return;
    got += 1;
    if (got === 1) {
      first = performance.now();
      cpu = process.cpuUsage();
    }
    if (got % PROGRESS === 0) out(`got ${got}`);
    if (got === n) {
      outCpu(cpu, n - 1);
      done(performance.now());
    }
  });
  out('ready');
  const last = await finished;
  out(`rate ${(n - 1) / ((last - first) / 1000)}`);
  await session.close();
}

async function tetherUp() {
  const session = await tether().connect({ url });
  const window = [];
  const t0 = performance.now();
  const cpu = process.cpuUsage();
  for (let i = 0; i < n; i += 1) {
    if (window.length >= WINDOW) await window.shift();
    window.push(session.publish('bench/up', PAYLOAD));
  }
  await Promise.all(window);
  outCpu(cpu, n);
  out(`rate ${n / ((performance.now() - t0) / 1000)}`);
  await session.close();
}

/** Connects to the raw server; `onMessage` is attached before the upgrade completes (the
 * server writes at once, and ws emits what came with the upgrade's answer in the same tick). */
function openRaw(onMessage, onClose) {
  const WebSocket = require('ws');
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('message', onMessage);
  ws.once('close', onClose);
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

async function rawDown() {
  let got = 0;
  let first = 0;
  let cpu;
  let ws;
  const last = await new Promise((resolve, reject) => {
    openRaw(
      (_data, binary) => {
        if (!binary) return;
        got += 1;
        if (got === 1) {
          first = performance.now();
          cpu = process.cpuUsage();
        }
        if (got === n) {
          outCpu(cpu, n - 1);
          resolve(performance.now());
        }
      },
      () => reject(new Error(`raw: received ${got} of ${n}`)),
    ).then((open) => {
      ws = open;
    }, reject);
  });
  out(`rate ${(n - 1) / ((last - first) / 1000)}`);
  ws?.terminate();
}

async function rawUp() {
  let answer;
  let fail;
  const answered = new Promise((resolve, reject) => {
    answer = resolve;
    fail = reject;
  });
  const ws = await openRaw(
    () => answer(),
    () => fail(new Error('raw: no answer after the upload')),
  );
  const t0 = performance.now();
  const cpu = process.cpuUsage();
  for (let i = 0; i < n; i += 1) {
    ws.send(PAYLOAD);
    // Let the socket drain rather than buffer everything in memory.
    if (i % PROGRESS === PROGRESS - 1 && ws.bufferedAmount > 1 << 20) {
      while (ws.bufferedAmount > 1 << 18) await new Promise((r) => setImmediate(r));
    }
  }
  await answered;
  outCpu(cpu, n);
  out(`rate ${n / ((performance.now() - t0) / 1000)}`);
  ws.terminate();
}

const modes = { 'tether-down': tetherDown, 'tether-up': tetherUp, 'raw-down': rawDown, 'raw-up': rawUp };
if (!modes[mode]) {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
modes[mode]().then(
  () => process.exit(0),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
