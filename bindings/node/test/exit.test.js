'use strict';
// Processes that end with work in flight and no close(): each scenario runs in a child process
// TETHER_EXIT_RUNS times (default 3; `cargo xtask soak` sets 50). Every run must exit with the
// expected status, by itself (no hang), without a signal or a crash report on stderr; Tether
// must have closed the session at exit as close() does (the server freed it), and every publish
// queued before the exit must have been applied.

const test = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const tether = require('..');
const { startServer, guard, credentials, GUARD_MS } = require('./helpers.js');

const RUNS = Number(process.env.TETHER_EXIT_RUNS ?? '3');
/** What a crash leaves on stderr: Node's fatal errors, a signal, a Rust panic. */
const CRASH = /FATAL|Segmentation fault|Aborted|core dumped|panicked|SIGSEGV|SIGABRT/;
/** The fixture's publishes: i = 0..1999 on topic `<base>/load/<i % 16>`. */
const PUBLISHES = 2000;
const TOPICS = 16;

let server;
let observer;
test.before(async () => {
  assert.ok(Number.isInteger(RUNS) && RUNS > 0, `TETHER_EXIT_RUNS must be a positive integer, not ${process.env.TETHER_EXIT_RUNS}`);
  server = await startServer({ metrics_listen: '127.0.0.1:0' });
  observer = await tether.connect({ url: server.url, ...credentials });
});
test.after(async () => {
  await observer.close();
  await server.stop();
});

/**
 * Runs the fixture once; a child still running after the guard is killed and reported as a
 * hang. With `whileRunning`, awaits it on the child's first line, then ends the child's stdin.
 */
function runOnce(mode, whileRunning) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'fixtures', 'exit-in-flight.js'), server.url, mode], {
      stdio: [whileRunning ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let failure = null;
    child.stdout.on('data', (c) => {
      const first = stdout === '';
      stdout += c;
      if (first && whileRunning) {
        Promise.resolve()
          .then(() => whileRunning(JSON.parse(stdout.split('\n')[0])))
          .catch((err) => {
            failure = err;
          })
          .finally(() => child.stdin.end());
      }
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${mode}: the process hung (killed after ${GUARD_MS} ms); stdout: ${stdout} stderr: ${stderr}`));
    }, GUARD_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure) {
        reject(failure);
        return;
      }
      const lines = stdout.trim().split('\n').filter(Boolean);
      let json = [];
      try {
        json = lines.map((l) => JSON.parse(l));
      } catch {
        // the assertions below show stdout
      }
      resolve({ code, signal, stdout, stderr, json });
    });
  });
}

/** The last value the server holds for each load topic of a run (snapshots of a fresh subscription). */
async function lastValues(base) {
  const values = new Map();
  let done;
  const all = new Promise((resolve) => {
    done = resolve;
  });
  const sub = await observer.subscribe(`${base}/load/*`, (update) => {
    values.set(update.topic, update.value.toString());
    if (values.size === TOPICS) done();
  });
  await guard(all, `the last values of ${base}/load/*`);
  await sub.close();
  return values;
}

async function scenario(mode, expectedCode, check, whileRunning) {
  const expected = new Map();
  for (let k = 0; k < TOPICS; k += 1) expected.set(`load/${k}`, String(PUBLISHES - TOPICS + k));
  for (let run = 1; run <= RUNS; run += 1) {
    const r = await runOnce(mode, whileRunning);
    const what = `${mode}, run ${run} of ${RUNS}; status ${r.code}, signal ${r.signal}; stdout: ${r.stdout} stderr: ${r.stderr}`;
    assert.equal(r.signal, null, what);
    assert.doesNotMatch(r.stderr, CRASH, what);
    assert.equal(r.code, expectedCode, what);
    const queued = r.json.find((j) => j.queued !== undefined);
    assert.equal(queued?.queued, PUBLISHES, what);
    check(r, what);
    // Tether closed the session at exit, so the server freed it rather than keeping it for a
    // reconnection: only the observer's session is left.
    assert.deepEqual(await server.sessions(), { connected: 1, disconnected: 0 }, `${what}: the session was not closed at exit`);
    // Publishes are applied in order: the last one of each topic applied means all were.
    const last = await lastValues(queued.base);
    const got = new Map([...last].map(([topic, value]) => [topic.slice(queued.base.length + 1), value]));
    assert.deepEqual(got, expected, `${what}: not every publish queued before the exit was applied`);
  }
}

test(`process.exit() right after queuing 2,000 publishes (${RUNS} runs)`, async () => {
  await scenario('exit', 5, (r, what) => {
    assert.equal(r.json.length, 1, what);
    assert.equal(r.stderr, '', what);
  });
});

test(`an uncaught exception right after queuing 2,000 publishes (${RUNS} runs)`, async () => {
  await scenario('throw', 1, (r, what) => {
    assert.equal(r.json.length, 1, what);
    assert.match(r.stderr, /exit-in-flight: thrown on purpose/, what);
  });
});

test(`process.exit() from a subscription handler, publishes in flight (${RUNS} runs)`, async () => {
  await scenario('handler', 3, (r, what) => {
    assert.equal(r.json.length, 2, what);
    assert.ok(r.json[1].handlerSawApplied <= PUBLISHES, what);
    assert.equal(r.stderr, '', what);
  });
});

test(`a worker thread terminated with 2,000 publishes in flight, then the process ends by itself (${RUNS} runs)`, async () => {
  await scenario('worker', 0, (r, what) => {
    assert.equal(r.json.length, 1, what);
    assert.equal(r.stderr, '', what);
  });
});

test(`a worker thread terminated with 2,000 publishes in flight while the main thread goes on: its session is closed (${RUNS} runs)`, async () => {
  await scenario(
    'worker-beside-main',
    0,
    (r, what) => {
      assert.equal(r.json.length, 1, what);
      assert.equal(r.stderr, '', what);
    },
    async () => {
      // The observer's session and the main thread's: the worker's was closed when it ended.
      assert.deepEqual(await server.sessions(), { connected: 2, disconnected: 0 }, 'the worker left its session open');
    },
  );
});
