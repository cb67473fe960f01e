'use strict';
// Drains and restarts (SIGTERM to a real server) reach strategies with the reason and the
// server's retry-after hint; several URLs (`url: [...]`) for opening and resuming.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tether = require('..');
const { startServer, startProxy, next, guard, credentials } = require('./helpers.js');

/** The retry-after hint the draining server sends (not the server's default, 1000 ms). */
const HINT_MS = 700;

test('a drain sends sessions away: a strategy sees server_draining and the hint, a built-in is handed the same attempt, both resume on the restarted server', async (t) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tether-node-state-'));
  const server = await startServer({ state_dir: stateDir, drain: { retry_after_ms: HINT_MS } });
  t.after(async () => {
    await server.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  // A strategy of our own: waits what the server asked for (a little when it asked nothing).
  const ownAttempts = [];
  const own = (start, _abort, _reason, attempt) => {
    ownAttempts.push({ ...attempt });
    setTimeout(start, attempt.retryAfter ?? 50);
  };
  // A strategy that only looks, and leaves the decision to the default strategy.
  const delegatedAttempts = [];
  const delegating = (_start, _abort, _reason, attempt) => {
    delegatedAttempts.push({ ...attempt });
    tether.defaultStrategy.decide(attempt);
  };
  const a = await tether.connect({ url: server.url, ...credentials, reconnect: own });
  const b = await tether.connect({ url: server.url, ...credentials, reconnect: delegating });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  const ids = [a.sessionId, b.sessionId];
  const away = [next(a, 'disconnect'), next(b, 'disconnect')];
  const back = [next(a, 'reconnect'), next(b, 'reconnect')];

  await server.restart();

  assert.deepEqual(await guard(Promise.all(away), 'the disconnects'), [['server_draining'], ['server_draining']]);
  await guard(Promise.all(back), 'the reconnections');
  for (const [who, attempts] of [['own strategy', ownAttempts], ['delegating strategy', delegatedAttempts]]) {
    assert.ok(attempts.length >= 1, `${who}: called`);
    const [first] = attempts;
    assert.equal(first.number, 1, `${who}: first attempt`);
    assert.equal(first.reason, 'server_draining', `${who}: reason`);
    assert.equal(first.retryAfter, HINT_MS, `${who}: the server's hint`);
    assert.ok(first.remaining > 0 && first.remaining <= 60000, `${who}: remaining ${first.remaining}`);
  }
  assert.deepEqual([a.sessionId, b.sessionId], ids, 'same sessions after the restart');
  assert.equal(a.state, 'CONNECTED_ACTIVE');
  assert.equal(b.state, 'CONNECTED_ACTIVE');
  await a.publish('node/drain/a', 'after');
  await b.publish('node/drain/b', 'after');
});

test('a cut gives attempts without a hint (retryAfter null)', async (t) => {
  const server = await startServer();
  const proxy = await startProxy(server);
  const attempts = [];
  const session = await tether.connect({
    host: proxy.host,
    port: proxy.port,
    ...credentials,
    reconnect: (start, _abort, _reason, attempt) => {
      attempts.push({ ...attempt });
      start();
    },
  });
  t.after(async () => {
    await session.close();
    await proxy.stop();
    await server.stop();
  });
  const back = next(session, 'reconnect');
  await proxy.cut('rst');
  await guard(back, 'the reconnection');
  assert.equal(attempts.length, 1);
  assert.deepEqual(Object.keys(attempts[0]).sort(), ['elapsed', 'number', 'reason', 'remaining', 'retryAfter']);
  assert.equal(attempts[0].retryAfter, null);
  assert.equal(attempts[0].reason, 'transport_error');
});

test('url: [first, fallback]: connect uses the first URL that answers; a resume goes to the fallback when the first refuses', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());

  // Nothing listens on the first URL.
  const dead = await startProxy(server);
  await dead.stop();
  const opened = await tether.connect({ url: [dead.url, server.url], ...credentials });
  assert.equal(opened.state, 'CONNECTED_ACTIVE');
  await opened.close();

  const first = await startProxy(server);
  const second = await startProxy(server);
  t.after(async () => {
    await first.stop();
    await second.stop();
  });
  const numbers = [];
  const session = await tether.connect({
    url: [first.url, second.url],
    ...credentials,
    reconnect: (start, _abort, _reason, attempt) => {
      numbers.push(attempt.number);
      setTimeout(start, 20);
    },
  });
  t.after(() => session.close());
  const id = session.sessionId;
  assert.equal((await second.status()).forwarded_total, 0, 'opened on the first URL');
  const back = next(session, 'reconnect');
  await first.refuse();
  await first.cut('rst');
  await guard(back, 'the resume on the fallback');
  assert.deepEqual(numbers, [1, 2], 'attempt 1 went back to the first URL (refused), attempt 2 to the fallback');
  assert.equal((await second.status()).forwarded_total, 1, 'resumed through the fallback');
  assert.equal(session.sessionId, id);
  await session.publish('node/fallback', 'after');
});
