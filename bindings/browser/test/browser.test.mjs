// Tether in a real browser: headless Chromium (Debian's, driven over the DevTools protocol by
// puppeteer-core) runs pages against the real server through the fault proxy.
//
// `cargo xtask test` runs this file (xtask/src/lang/browser.rs): it builds the package, starts
// the server, the proxy and the page server (the same as `cargo xtask demo --browser`) and sets
//   TETHER_BROWSER_BASE   the page server (http://127.0.0.1:port)
//   TETHER_CONTROL        the fault proxy's control API (127.0.0.1:port)
//   TETHER_PROXY          the proxy's WebSocket address (127.0.0.1:port)
//   TETHER_CHROMIUM       the browser; TETHER_BROWSER_PROFILE its profile directory
//   TETHER_SCREENSHOT     where the demo page's screenshot goes
// Waits are on events and states; the timeouts are failure guards only.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import puppeteer from 'puppeteer-core';

const BASE = process.env.TETHER_BROWSER_BASE;
const CONTROL = process.env.TETHER_CONTROL;
const PROXY = process.env.TETHER_PROXY;
if (!BASE || !CONTROL || !PROXY) {
  throw new Error('run through `cargo xtask test` (it starts the server, the proxy and the page server)');
}
/** A failure guard for waits: never a way to wait for something to happen. */
const GUARD_MS = 20000;

let browser;

before(async () => {
  const profile = process.env.TETHER_BROWSER_PROFILE;
  browser = await puppeteer.launch({
    executablePath: process.env.TETHER_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Chromium's crash handlers start a session of their own; with its configuration in the
    // profile, their command lines name the profile too, so the xtask finds every process of
    // this browser by it.
    env: { ...process.env, XDG_CONFIG_HOME: `${profile}/config` },
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${profile}`],
  });
  // Whatever happens to this process, the browser goes with it: puppeteer starts Chromium as a
  // process group leader, so its whole group (zygotes, renderers, GPU and utility processes).
  process.on('exit', () => {
    const pid = browser?.process()?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  });
});

after(async () => {
  await browser?.close();
});

/** A request to the fault proxy's control API (or the page server). */
function call(host, method, path) {
  return new Promise((resolve, reject) => {
    const req = http.request(`http://${host}${path}`, { method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${path}: ${res.statusCode} ${body}`))));
    });
    req.on('error', reject);
    req.end();
  });
}
const control = (path) => call(CONTROL, 'POST', path);
const pageServer = (method, path) => call(new URL(BASE).host, method, path);

/** A fresh page with the module loaded as `window.tether` and the stage's config as `window.config`. */
async function open(t, path = '/blank.html') {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  t.after(async () => {
    await page.close();
    await control('/heal');
  });
  await page.goto(`${BASE}${path}`);
  await page.evaluate(async () => {
    window.tether = await import('/tether/index.js');
    window.config = await fetch('/config.json').then((r) => r.json());
  });
  page.errors = errors;
  return page;
}

/** Waits until `fn` (run in the page) is truthy. */
function until(page, fn, ...args) {
  return page.waitForFunction(fn, { timeout: GUARD_MS, polling: 20 }, ...args);
}

function unique(name) {
  return `browser/${name}/${Math.random().toString(36).slice(2, 10)}`;
}

test('cuts lose nothing either way: every publish applied once, in order, every update received once, in order', async (t) => {
  const page = await open(t);
  const topic = unique('cuts');
  const N = 300;
  await page.evaluate(
    async (topic, N) => {
      const r = (window.run = { received: [], confirmed: 0, failed: [], reconnects: 0, disconnects: [], ids: [] });
      const s = (window.session = await tether.connect({
        url: config.url,
        principal: 'control',
        credentials: 'password',
        reconnect: { timeout: 30000, strategy: tether.constant(50) },
      }));
      r.ids.push(s.sessionId);
      s.on('disconnect', (reason) => r.disconnects.push(reason));
      s.on('reconnect', () => {
        r.reconnects++;
        r.ids.push(s.sessionId);
      });
      const decoder = new TextDecoder();
      await s.subscribe(`${topic}/down`, (u) => r.received.push(Number(decoder.decode(u.value))));
      let n = 0;
      const timer = setInterval(() => {
        if (n === N) return clearInterval(timer);
        const k = ++n;
        s.publish(`${topic}/up`, String(k)).then(
          () => r.confirmed++,
          (e) => r.failed.push(`${k}: ${e.code}`),
        );
      }, 5);
    },
    topic,
    N,
  );
  await pageServer('POST', `/api/feed?topic=${topic}/down&count=${N}&interval_ms=5`);
  const cuts = [
    ['rst', 60],
    ['fin', 140],
    ['rst', 220],
  ];
  for (const [i, [mode, at]] of cuts.entries()) {
    await until(page, (at) => run.received.length >= at && session.state === 'CONNECTED_ACTIVE', at);
    const { cut } = await control(`/cut?mode=${mode}`);
    assert.equal(cut, 1, `cut ${i + 1} found the page's connection`);
    await until(page, (n) => run.reconnects === n, i + 1);
  }
  await until(page, (N) => run.received.length >= N && run.confirmed + run.failed.length === N, N);
  const run = await page.evaluate(() => window.run);
  assert.deepEqual(run.failed, []);
  assert.deepEqual(run.received, Array.from({ length: N }, (_, i) => i + 1), 'server → page: each once, in order');
  const tally = await pageServer('GET', `/api/tally?topic=${topic}/up`);
  assert.deepEqual(tally, { received: N, distinct: N, duplicates: 0, reordered: 0, last: N }, 'page → server');
  assert.deepEqual(run.disconnects, ['transport_error', 'transport_error', 'transport_error']);
  assert.equal(new Set(run.ids).size, 1, 'the same session throughout');
  await page.evaluate(() => session.close());
  assert.deepEqual(page.errors, []);
});

test('the reconnection timeout closes the session; a request made meanwhile fails as never sent', async (t) => {
  const page = await open(t);
  await page.evaluate(async () => {
    const r = (window.run = { attempts: [], closed: null, publish: null });
    const s = (window.session = await tether.connect({
      url: config.url,
      principal: 'control',
      credentials: 'password',
      reconnect: {
        timeout: 1500,
        strategy: (start, _abort, reason, attempt) => {
          r.attempts.push({ reason, number: attempt.number, remaining: attempt.remaining });
          setTimeout(start, 100);
        },
      },
    }));
    s.on('disconnect', () => {
      s.publish('browser/timeout', 'queued').then(
        () => (r.publish = 'applied'),
        (e) => (r.publish = e.code),
      );
    });
    s.on('close', (reason) => (r.closed = { reason, state: s.state }));
  });
  await control('/refuse');
  await control('/cut?mode=rst');
  await until(page, () => run.closed !== null && run.publish !== null);
  const run = await page.evaluate(() => window.run);
  assert.deepEqual(run.closed, { reason: 'reconnect_timeout', state: 'CLOSED_FAILED' });
  assert.equal(run.publish, 'session_closed');
  assert.ok(run.attempts.length >= 2, `attempts: ${JSON.stringify(run.attempts)}`);
  assert.equal(run.attempts[0].reason, 'transport_error');
  assert.equal(run.attempts[1].reason, 'connection_error');
  assert.ok(run.attempts.every((a) => a.remaining <= 1500));
});

test('a strategy that aborts closes the session (the first decision wins); so does abortImmediately', async (t) => {
  const page = await open(t);
  await page.evaluate(async () => {
    const r = (window.run = { calls: [], closed: [] });
    const strategies = [
      (start, abort, reason, attempt) => {
        const aborted = abort();
        r.calls.push({ reason, number: attempt.number, aborted, startedAfter: start(), abortedAgain: abort() });
      },
      tether.abortImmediately,
    ];
    for (const strategy of strategies) {
      const s = await tether.connect({ url: config.url, principal: 'control', credentials: 'password', reconnect: strategy });
      s.on('close', (reason) => r.closed.push({ reason, state: s.state }));
    }
  });
  await control('/cut?mode=rst');
  await until(page, () => run.closed.length === 2);
  const run = await page.evaluate(() => window.run);
  assert.deepEqual(run.calls, [{ reason: 'transport_error', number: 1, aborted: true, startedAfter: false, abortedAgain: false }]);
  assert.deepEqual(run.closed, [
    { reason: 'reconnect_aborted', state: 'CLOSED_FAILED' },
    { reason: 'reconnect_aborted', state: 'CLOSED_FAILED' },
  ]);
});

test('a strategy that starts later from a timer: the session waits in RECOVERING_RECONNECT, then resumes with what was queued', async (t) => {
  const page = await open(t);
  const topic = unique('timer');
  await page.evaluate(async (topic) => {
    const r = (window.run = { events: [], received: [] });
    const s = (window.session = await tether.connect({
      url: config.url,
      principal: 'control',
      credentials: 'password',
      reconnect: (start, _abort, reason) => {
        r.events.push(`strategy ${reason}`);
        // Published while waiting: queued, sent once the session is back.
        s.publish(topic, 'while waiting').then(() => r.events.push('publish applied'));
        setTimeout(() => {
          r.events.push(`timer fired in ${s.state}`);
          r.events.push(`start() ${start()}`);
        }, 300);
      },
    }));
    await s.subscribe(topic, (u) => r.received.push(new TextDecoder().decode(u.value)));
    s.on('reconnect', () => r.events.push('reconnect'));
  }, topic);
  await control('/cut?mode=rst');
  await until(page, () => run.events.includes('publish applied') && run.received.length === 1);
  const run = await page.evaluate(() => window.run);
  assert.deepEqual(run.events, [
    'strategy transport_error',
    'timer fired in RECOVERING_RECONNECT',
    'start() true',
    'reconnect',
    'publish applied',
  ]);
  assert.deepEqual(run.received, ['while waiting']);
  await page.evaluate(() => session.close());
});

test('a strategy function can hand its attempt to a built-in (decide)', async (t) => {
  const page = await open(t);
  await page.evaluate(async () => {
    const r = (window.run = { attempts: [], reconnected: false });
    const s = await tether.connect({
      url: config.url,
      principal: 'control',
      credentials: 'password',
      reconnect: (_start, _abort, reason, attempt) => {
        r.attempts.push({ reason, number: attempt.number, retryAfter: attempt.retryAfter });
        tether.constant(20).decide(attempt);
      },
    });
    s.on('reconnect', () => (r.reconnected = true));
    window.session = s;
  });
  await control('/cut?mode=fin');
  await until(page, () => run.reconnected);
  const run = await page.evaluate(() => window.run);
  assert.deepEqual(run.attempts, [{ reason: 'transport_error', number: 1, retryAfter: null }]);
  await assert.rejects(
    page.evaluate(() => tether.defaultStrategy.decide({ number: 1 })),
    /the attempt a strategy function was given/,
  );
  await page.evaluate(() => session.close());
});

test('a subscription as an async iterator: the current value first, then updates; leaving the loop ends it', async (t) => {
  const page = await open(t);
  const topic = unique('iterate');
  const seen = await page.evaluate(async (topic) => {
    const s = await tether.connect({ url: config.url, principal: 'control', credentials: 'password' });
    await s.publish(topic, 'before');
    const sub = s.subscribe(topic);
    await sub.ready;
    const seen = [];
    for await (const update of sub) {
      seen.push(`${new TextDecoder().decode(update.value)} ${update.snapshot}`);
      if (seen.length === 1) await s.publish(topic, { after: true });
      else break;
    }
    seen.push(JSON.stringify(await sub.next()));
    await s.close();
    seen.push(s.state);
    return seen;
  }, topic);
  assert.deepEqual(seen, ['before true', '{"after":true} false', '{"done":true}', 'CLOSED_BY_CLIENT']);
});

test('refusals reach the page in band (a page cannot read an HTTP refusal), and options are checked', async (t) => {
  const page = await open(t);
  const outcome = await page.evaluate(async () => {
    const codes = [];
    for (const options of [
      { url: config.url, principal: 'control', credentials: 'wrong' },
      { url: 'http://127.0.0.1:1/' },
    ]) {
      try {
        await tether.connect(options);
        codes.push('connected');
      } catch (e) {
        codes.push(`${e.name} ${e.code} ${e.reason}`);
      }
    }
    try {
      await tether.connect({ url: config.url, credentials: 'x' });
    } catch (e) {
      codes.push(`${e.name}: ${e.message}`);
    }
    return codes;
  });
  assert.deepEqual(outcome, [
    'TetherError authentication_failed authentication_failed',
    'TetherError invalid_url undefined',
    'TypeError: options.credentials needs options.principal',
  ]);
});

test("the seed's JavaScript example runs in a page, apart from the import, and rides a cut", async (t) => {
  const port = PROXY.split(':').pop();
  const page = await open(t, `/examples/reconnect.html?port=${port}`);
  await until(page, () => document.getElementById('out').textContent.includes('connected: session'));
  const id = await page.evaluate(() => document.getElementById('out').textContent.match(/session (\w+)/)[1]);
  await control('/cut?mode=rst');
  await until(page, (id) => document.getElementById('out').textContent.includes(`reconnected: session ${id}`), id);
  const out = await page.evaluate(() => document.getElementById('out').textContent);
  assert.deepEqual(out.trim().split('\n'), [`connected: session ${id}`, `disconnected: session ${id}`, `reconnected: session ${id}`]);
});

test('the demo page after a few cuts, a stall and a refusal: nothing lost; a screenshot for a person', async (t) => {
  const page = await open(t, '/');
  await page.setViewport({ width: 1000, height: 1000 });
  await until(page, () => demo.state === 'CONNECTED_ACTIVE' && demo.down.received >= 3);
  for (const [i, button] of ['#cut-rst', '#stall', '#cut-fin', '#refuse'].entries()) {
    await until(page, () => demo.state === 'CONNECTED_ACTIVE');
    await page.click(button);
    await until(page, (n) => demo.reconnects === n && demo.state === 'CONNECTED_ACTIVE', i + 1);
  }
  // Traffic after the last fault, and the subscriber caught up with what the server confirmed.
  const confirmed = await page.evaluate(() => demo.up.confirmed);
  await until(page, (c) => demo.server.distinct >= c + 5 && demo.down.received >= demo.down.last, confirmed);
  const shown = await page.evaluate(() => window.demo);
  assert.equal(shown.error, null);
  assert.deepEqual(
    [shown.down.missing, shown.down.duplicates, shown.down.reordered],
    [0, 0, 0],
    `server → page: ${JSON.stringify(shown.down)}`,
  );
  assert.equal(shown.up.failed, 0);
  assert.deepEqual(
    [shown.server.last - shown.server.distinct, shown.server.duplicates, shown.server.reordered],
    [0, 0, 0],
    `page → server: ${JSON.stringify(shown.server)}`,
  );
  assert.deepEqual(
    shown.attempts.filter((a) => a.number === 1).map((a) => a.reason),
    ['transport_error', 'idle_connection', 'transport_error', 'transport_error'],
  );
  assert.ok(shown.attempts.some((a) => a.reason === 'connection_error'), 'attempts refused by the proxy');
  // The last tallies on screen, then a picture of it.
  await page.evaluate(() => render());
  await page.screenshot({ path: process.env.TETHER_SCREENSHOT, fullPage: true });
});
