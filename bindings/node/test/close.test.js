'use strict';
// close() and the requests made before it: they are sent and confirmed first, so a request the
// server applied is never reported failed; requests made after close() fail at once and are
// not applied; a request the server never confirmed says its outcome is unknown.

const test = require('node:test');
const assert = require('node:assert/strict');
const tether = require('..');
const { startServer, startProxy, guard, credentials } = require('./helpers.js');

/** Rounds of the queued-publishes scenario (it failed in 30 of 30 rounds before the fix). */
const ROUNDS = 30;

let server;
let observer;
/** topic → values the observer received, and who waits for how many. */
const received = new Map();
const waiters = new Map();

function observed(topic, count) {
  const values = received.get(topic) ?? [];
  if (values.length >= count) return Promise.resolve(values.slice());
  return guard(
    new Promise((resolve) => waiters.set(topic, { count, resolve })),
    `${count} values of ${topic} at the observer`,
  );
}

test.before(async () => {
  server = await startServer();
  // A second session that sees what the server applied.
  observer = await tether.connect({ url: server.url, ...credentials });
  await observer.subscribe('close/**', (update) => {
    const values = received.get(update.topic) ?? [];
    values.push(update.value.toString());
    received.set(update.topic, values);
    const waiter = waiters.get(update.topic);
    if (waiter && values.length >= waiter.count) {
      waiters.delete(update.topic);
      waiter.resolve(values.slice());
    }
  });
});
test.after(async () => {
  await observer.close();
  await server.stop();
});

const outcome = (settled) => (settled.status === 'fulfilled' ? 'applied' : `${settled.reason.code} (${settled.reason.message})`);

test(`five publishes not awaited, then close(): every one is applied and reported applied (${ROUNDS} rounds)`, async () => {
  const values = ['1', '2', '3', '4', '5'];
  for (let round = 0; round < ROUNDS; round += 1) {
    const topic = `close/queued/${round}`;
    const session = await tether.connect({ url: server.url, ...credentials });
    const publishes = Promise.allSettled(values.map((v) => session.publish(topic, v)));
    await session.close();
    assert.equal(session.state, 'CLOSED_BY_CLIENT');
    const outcomes = (await publishes).map(outcome);
    assert.deepEqual(outcomes, values.map(() => 'applied'), `round ${round}`);
    assert.deepEqual(await observed(topic, values.length), values, `round ${round}: what the server applied`);
  }
});

test('a subscribe and an unsubscribe queued before close() complete too', async () => {
  const session = await tether.connect({ url: server.url, ...credentials });
  const sub = session.subscribe('close/sub/**');
  const published = session.publish('close/sub/x', 'v');
  const unsubscribed = sub.close();
  await session.close();
  await sub.ready;
  await published;
  await unsubscribed;
  assert.deepEqual(await observed('close/sub/x', 1), ['v']);
});

test('a publish made after close() rejects with session_closed at once and is not applied', async () => {
  const topic = 'close/after';
  const session = await tether.connect({ url: server.url, ...credentials });
  const before = session.publish(topic, 'before');
  const closing = session.close();
  await assert.rejects(session.publish(topic, 'after'), (err) => {
    assert.ok(err instanceof tether.TetherError, String(err));
    assert.equal(err.code, 'session_closed');
    assert.equal(err.reason, 'closed_by_client');
    return true;
  });
  await closing;
  await before;
  // Anything the server applied from the closed session came before this marker.
  await observer.publish(topic, 'marker');
  assert.deepEqual(await observed(topic, 2), ['before', 'marker']);
});

test('a publish sent but never confirmed before the close timeout rejects with outcome_unknown', async () => {
  const proxy = await startProxy(server);
  try {
    const session = await tether.connect({ url: proxy.url, ...credentials, reconnect: false, closeTimeout: 1000 });
    await proxy.stall(); // bytes still leave the client, nothing comes back
    const pending = session.publish('close/unknown', 'maybe');
    pending.catch(() => {}); // it rejects while close() is awaited: checked below
    await session.close();
    assert.equal(session.state, 'CLOSED_BY_CLIENT');
    await assert.rejects(pending, (err) => {
      assert.ok(err instanceof tether.TetherError, String(err));
      assert.equal(err.code, 'outcome_unknown', err.message);
      assert.equal(err.reason, 'closed_by_client');
      assert.match(err.message, /may have been applied/);
      return true;
    });
  } finally {
    await proxy.stop();
  }
});
