'use strict';
// Every form of `reconnect`, and strategies written in JavaScript, through the fault proxy.

const test = require('node:test');
const assert = require('node:assert/strict');
const tether = require('..');
const { startServer, startProxy, next, record, deferred, guard, credentials } = require('./helpers.js');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(async () => {
  await server.stop();
});

/** Opens a session through a fresh proxy; `t.after` closes both. */
async function open(t, reconnect, extra = {}) {
  const proxy = await startProxy(server);
  const options = { host: proxy.host, port: proxy.port, ...credentials, ...extra };
  if (reconnect !== undefined) options.reconnect = reconnect;
  const session = await tether.connect(options);
  t.after(async () => {
    await session.close();
    await proxy.stop();
  });
  return { session, proxy };
}

/** Cuts the connection and waits for the session to come back. */
async function cutAndReconnect(session, proxy) {
  const disconnected = next(session, 'disconnect');
  const reconnected = next(session, 'reconnect');
  await proxy.cut('rst');
  const [reason] = await disconnected;
  await reconnected;
  return reason;
}

test('reconnect omitted: 60 s timeout, default strategy, a cut gives disconnect then reconnect with the same session id', async (t) => {
  const { session, proxy } = await open(t, undefined);
  assert.equal(session.state, 'CONNECTED_ACTIVE');
  assert.equal(session.reconnectionTimeout, 60000);
  const id = session.sessionId;
  assert.match(id, /^[0-9a-f]{32}$/);
  const log = record(session);
  const reason = await cutAndReconnect(session, proxy);
  assert.equal(reason, 'transport_error');
  assert.equal(session.sessionId, id);
  assert.equal(session.state, 'CONNECTED_ACTIVE');
  assert.deepEqual(log, [
    ['state', 'CONNECTED_ACTIVE', 'RECOVERING_RECONNECT', 'transport_error'],
    ['disconnect', 'transport_error'],
    ['state', 'RECOVERING_RECONNECT', 'CONNECTED_ACTIVE', undefined],
    ['reconnect'],
  ]);
});

test('reconnect: true is the same as omitted', async (t) => {
  const { session, proxy } = await open(t, true);
  assert.equal(session.reconnectionTimeout, 60000);
  const id = session.sessionId;
  await cutAndReconnect(session, proxy);
  assert.equal(session.sessionId, id);
});

test('reconnect: a number is the timeout in ms', async (t) => {
  const { session, proxy } = await open(t, 4321);
  assert.equal(session.reconnectionTimeout, 4321);
  const id = session.sessionId;
  await cutAndReconnect(session, proxy);
  assert.equal(session.sessionId, id);
});

for (const disabled of [false, 0]) {
  test(`reconnect: ${disabled} disables reconnection: a cut closes the session`, async (t) => {
    const { session, proxy } = await open(t, disabled);
    assert.equal(session.reconnectionTimeout, 0);
    const log = record(session);
    const closed = next(session, 'close');
    await proxy.cut('rst');
    const [reason] = await closed;
    assert.equal(reason, 'transport_error');
    assert.equal(session.state, 'CLOSED_FAILED');
    assert.equal(session.closeReason, 'transport_error');
    assert.equal(await session.closed, 'transport_error');
    assert.deepEqual(log, [
      ['state', 'CONNECTED_ACTIVE', 'CLOSED_FAILED', 'transport_error'],
      ['close', 'transport_error'],
    ]);
  });
}

test('reconnect: a function is the strategy, called with (start, abort, reason, attempt) on the JS thread', async (t) => {
  const calls = [];
  const strategy = (start, abort, reason, attempt) => {
    calls.push({ start, abort, reason, attempt });
    start();
  };
  const { session, proxy } = await open(t, strategy);
  assert.equal(session.reconnectionTimeout, 60000);
  const id = session.sessionId;
  await cutAndReconnect(session, proxy);
  assert.equal(session.sessionId, id);
  assert.equal(calls.length, 1);
  const [call] = calls;
  assert.equal(typeof call.start, 'function');
  assert.equal(typeof call.abort, 'function');
  assert.equal(call.reason, 'transport_error');
  assert.equal(call.attempt.number, 1);
  assert.equal(call.attempt.reason, 'transport_error');
  assert.ok(call.attempt.remaining > 0 && call.attempt.remaining <= 60000);
  assert.ok(call.attempt.elapsed >= 0);
});

test('reconnect: { timeout, strategy } sets both', async (t) => {
  let called = 0;
  const { session, proxy } = await open(t, {
    timeout: 7000,
    strategy: (start) => {
      called += 1;
      start();
    },
  });
  assert.equal(session.reconnectionTimeout, 7000);
  await cutAndReconnect(session, proxy);
  assert.equal(called, 1);
});

test('the strategy may decide later, from a timer; the first call wins', async (t) => {
  const decided = deferred();
  const strategy = (start, abort) => {
    setTimeout(() => {
      const first = start();
      const second = abort();
      const third = start();
      decided.resolve([first, second, third]);
    }, 50);
  };
  const { session, proxy } = await open(t, { timeout: 10000, strategy });
  const id = session.sessionId;
  await cutAndReconnect(session, proxy);
  assert.deepEqual(await guard(decided.promise, 'strategy timer'), [true, false, false]);
  assert.equal(session.sessionId, id);
  assert.equal(session.state, 'CONNECTED_ACTIVE');
});

test('a strategy is called again after a failed attempt, with the next attempt number', async (t) => {
  const attempts = [];
  let proxy;
  const strategy = (start, abort, reason, attempt) => {
    attempts.push([attempt.number, reason]);
    if (attempt.number === 1) {
      // The first attempt meets a refusing proxy; heal before the second.
      start();
    } else {
      proxy.heal().then(start, abort);
    }
  };
  const opened = await open(t, { timeout: 20000, strategy });
  proxy = opened.proxy;
  const { session } = opened;
  const reconnected = next(session, 'reconnect');
  await proxy.refuse(0);
  await proxy.cut('rst');
  await reconnected;
  assert.equal(attempts[0][0], 1);
  assert.equal(attempts[0][1], 'transport_error');
  assert.equal(attempts[1][0], 2);
  assert.ok(['connection_error', 'transport_error', 'handshake_error'].includes(attempts[1][1]), attempts[1][1]);
  assert.equal(attempts.length, 2);
});

test('abort() closes the session with reason reconnect_aborted', async (t) => {
  const { session, proxy } = await open(t, (start, abort) => setTimeout(abort, 10));
  const log = record(session);
  const closed = next(session, 'close');
  await proxy.cut('rst');
  const [reason] = await closed;
  assert.equal(reason, 'reconnect_aborted');
  assert.equal(session.state, 'CLOSED_FAILED');
  assert.deepEqual(
    log.filter(([name]) => name !== 'state'),
    [
      ['disconnect', 'transport_error'],
      ['close', 'reconnect_aborted'],
    ],
  );
});

test('the reconnection timeout closes the session with reason reconnect_timeout, whatever the strategy does', async (t) => {
  const { session, proxy } = await open(t, { timeout: 300, strategy: () => {} });
  const closed = next(session, 'close');
  await proxy.cut('rst');
  const [reason] = await closed;
  assert.equal(reason, 'reconnect_timeout');
  assert.equal(session.state, 'CLOSED_FAILED');
});

test('a strategy that throws gives an error event, then close (reconnect_aborted)', async (t) => {
  const boom = new Error('strategy bug');
  const { session, proxy } = await open(t, () => {
    throw boom;
  });
  const log = record(session);
  const closed = next(session, 'close');
  await proxy.cut('rst');
  await closed;
  assert.deepEqual(
    log.filter(([name]) => name !== 'state'),
    [
      ['disconnect', 'transport_error'],
      ['error', boom],
      ['close', 'reconnect_aborted'],
    ],
  );
});

test('an async strategy that rejects is handled the same way', async (t) => {
  const boom = new Error('async strategy bug');
  const { session, proxy } = await open(t, async () => {
    throw boom;
  });
  const errored = next(session, 'error');
  const closed = next(session, 'close');
  await proxy.cut('rst');
  assert.deepEqual(await errored, [boom]);
  assert.deepEqual(await closed, ['reconnect_aborted']);
});

test('a strategy that decided before throwing keeps its decision', async (t) => {
  const boom = new Error('after start');
  const { session, proxy } = await open(t, (start) => {
    start();
    throw boom;
  });
  const errored = next(session, 'error');
  await cutAndReconnect(session, proxy);
  assert.deepEqual(await errored, [boom]);
  assert.equal(session.state, 'CONNECTED_ACTIVE');
});

test('a throwing event listener becomes an error event, and the session carries on', async (t) => {
  const { session, proxy } = await open(t, true);
  const boom = new Error('listener bug');
  session.on('disconnect', () => {
    throw boom;
  });
  const errored = next(session, 'error');
  const reconnected = next(session, 'reconnect');
  await proxy.cut('rst');
  assert.deepEqual(await errored, [boom]);
  await reconnected;
  assert.equal(session.state, 'CONNECTED_ACTIVE');
});

test('built-in constant(ms) reconnects', async (t) => {
  const strategy = tether.constant(20, { maxAttempts: 5 });
  assert.equal(strategy.kind, 'constant');
  const { session, proxy } = await open(t, strategy);
  const id = session.sessionId;
  await cutAndReconnect(session, proxy);
  assert.equal(session.sessionId, id);
});

test('built-in exponentialBackoff({...}) reconnects', async (t) => {
  const strategy = tether.exponentialBackoff({ initialDelay: 10, multiplier: 2, maxDelay: 100, jitter: 'equal' });
  const { session, proxy } = await open(t, { timeout: 10000, strategy });
  await cutAndReconnect(session, proxy);
  assert.equal(session.state, 'CONNECTED_ACTIVE');
});

test('built-in abortImmediately closes at the first cut', async (t) => {
  const { session, proxy } = await open(t, tether.abortImmediately);
  const closed = next(session, 'close');
  await proxy.cut('fin');
  assert.deepEqual(await closed, ['reconnect_aborted']);
});

test('built-in constant with maxAttempts gives up after that many failed attempts', async (t) => {
  const { session, proxy } = await open(t, { timeout: 20000, strategy: tether.constant(10, { maxAttempts: 2 }) });
  const closed = next(session, 'close');
  await proxy.refuse(0);
  await proxy.cut('rst');
  assert.deepEqual(await closed, ['reconnect_aborted']);
});
