'use strict';
// Subscribe and publish, across cuts; typed errors.

const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const tether = require('..');
const { startServer, startProxy, next, guard, deferred, credentials } = require('./helpers.js');

let server;
test.before(async () => {
  // A config server: principals `control` (everything) and `reader` (subscribe public/** only).
  server = await startServer({ ping_period_ms: 10000 });
});
test.after(async () => {
  await server.stop();
});

async function direct(t, extra = {}) {
  const session = await tether.connect({ url: server.url, ...credentials, ...extra });
  t.after(() => session.close());
  return session;
}

async function viaProxy(t, extra = {}) {
  const proxy = await startProxy(server);
  const session = await tether.connect({ url: proxy.url, ...credentials, ...extra });
  t.after(async () => {
    await session.close();
    await proxy.stop();
  });
  return { session, proxy };
}

/** Takes `n` updates from an async iterator. */
async function take(iterator, n) {
  const out = [];
  while (out.length < n) {
    const { value, done } = await guard(iterator.next(), `update ${out.length + 1} of ${n}`);
    if (done) break;
    out.push(value);
  }
  return out;
}

test('publish a string, a Buffer and a JSON value; subscribe as an async iterator', async (t) => {
  const session = await direct(t);
  const sub = session.subscribe('values/**');
  assert.equal(sub.selector, 'values/**');
  await sub.ready;
  await session.publish('values/text', 'héllo');
  await session.publish('values/bytes', Buffer.from([0, 1, 255]));
  await session.publish('values/json', { a: [1, 2], b: 'x' });
  await session.publish('values/view', new Uint8Array([7, 8]));
  const updates = await take(sub, 4);
  assert.deepEqual(
    updates.map((u) => [u.topic, u.snapshot]),
    [
      ['values/text', false],
      ['values/bytes', false],
      ['values/json', false],
      ['values/view', false],
    ],
  );
  assert.equal(updates[0].value.toString('utf8'), 'héllo');
  assert.deepEqual([...updates[1].value], [0, 1, 255]);
  assert.deepEqual(JSON.parse(updates[2].value), { a: [1, 2], b: 'x' });
  assert.deepEqual([...updates[3].value], [7, 8]);
  assert.ok(Buffer.isBuffer(updates[0].value));
  assert.equal(typeof updates[0].position.offset, 'number');
  assert.ok(updates[1].position.offset > 0);

  // An empty value, published once the others were taken: alone in its batch, whose columns
  // are empty.
  await session.publish('values/empty', Buffer.alloc(0));
  const [empty] = await take(sub, 1);
  assert.equal(empty.topic, 'values/empty');
  assert.ok(Buffer.isBuffer(empty.value));
  assert.equal(empty.value.length, 0);
  assert.ok(empty.position.offset > 0);
});

test('requests reach the server in call order: subscribe, then publish without waiting', async (t) => {
  const session = await direct(t);
  const sub = session.subscribe('order/x'); // not awaited: queued at once
  const published = ['1', '2', '3'].map((v) => session.publish('order/x', v));
  await Promise.all(published);
  const updates = (await take(sub, 3)).map((u) => [u.value.toString(), u.snapshot]);
  // Had the subscription arrived after the publishes, only a snapshot of '3' would come.
  assert.deepEqual(updates, [
    ['1', false],
    ['2', false],
    ['3', false],
  ]);
});

test('a new subscription first receives the current value as a snapshot', async (t) => {
  const session = await direct(t);
  await session.publish('snap/one', 'current');
  const sub = session.subscribe('snap/one');
  const [first] = await take(sub, 1);
  assert.equal(first.topic, 'snap/one');
  assert.equal(first.snapshot, true);
  assert.equal(first.value.toString(), 'current');
});

test('subscribe with a handler resolves once confirmed and calls the handler for each update', async (t) => {
  const session = await direct(t);
  const seen = [];
  const three = deferred();
  const sub = await session.subscribe('handler/*', (update) => {
    seen.push(update.value.toString());
    if (seen.length === 3) three.resolve();
  });
  assert.ok(sub instanceof tether.Subscription);
  for (const v of ['a', 'b', 'c']) await session.publish('handler/x', v);
  await guard(three.promise, 'three updates');
  assert.deepEqual(seen, ['a', 'b', 'c']);
});

test('a handler that throws gives an error event; delivery goes on', async (t) => {
  const session = await direct(t);
  const boom = new Error('handler bug');
  const seen = [];
  const second = deferred();
  await session.subscribe('throwing/x', (update) => {
    seen.push(update.value.toString());
    if (seen.length === 1) throw boom;
    second.resolve();
  });
  const errored = next(session, 'error');
  await session.publish('throwing/x', '1');
  await session.publish('throwing/x', '2');
  assert.deepEqual(await errored, [boom]);
  await guard(second.promise, 'second update');
  assert.deepEqual(seen, ['1', '2']);
});

test('subscribe and publish across cuts: every message once, in order, same session', async (t) => {
  const { session: subscriber, proxy: subProxy } = await viaProxy(t, { reconnect: tether.constant(10) });
  const { session: publisher, proxy: pubProxy } = await viaProxy(t, { reconnect: tether.constant(10) });
  const ids = [subscriber.sessionId, publisher.sessionId];
  const sub = subscriber.subscribe('flow/seq');
  await sub.ready;

  const total = 300;
  const published = [];
  const reconnects = [next(subscriber, 'reconnect'), next(publisher, 'reconnect')];
  for (let i = 1; i <= total; i += 1) {
    published.push(publisher.publish('flow/seq', String(i)));
    if (i === 100) {
      await Promise.all(published);
      await subProxy.cut('rst');
    }
    if (i === 200) await pubProxy.cut('rst');
  }
  await guard(Promise.all(published), 'publishes');
  await guard(Promise.all(reconnects), 'both reconnected');
  const received = (await take(sub, total)).map((u) => Number(u.value.toString()));
  assert.deepEqual(
    received,
    Array.from({ length: total }, (_, i) => i + 1),
  );
  assert.deepEqual([subscriber.sessionId, publisher.sessionId], ids);
});

test('publishing while disconnected is queued and delivered after the reconnection', async (t) => {
  const asked = deferred();
  const { session, proxy } = await viaProxy(t, { reconnect: (start) => asked.resolve(start) });
  const sub = session.subscribe('queued/x');
  await sub.ready;
  await proxy.cut('rst');
  const start = await guard(asked.promise, 'strategy call');
  assert.equal(session.state, 'RECOVERING_RECONNECT');
  const pending = [session.publish('queued/x', 'while'), session.publish('queued/x', 'down')];
  const reconnected = next(session, 'reconnect');
  start();
  await reconnected;
  await guard(Promise.all(pending), 'queued publishes');
  const values = (await take(sub, 2)).map((u) => u.value.toString());
  assert.deepEqual(values, ['while', 'down']);
});

test('an outage the server could not buffer gives a gap event, then the current value as a snapshot', async (t) => {
  // A server of its own, with a small recovery buffer that the outage overflows.
  const small = await startServer({ recovery: { max_frames: 20 } });
  const proxy = await startProxy(small);
  const asked = deferred();
  const session = await tether.connect({
    url: proxy.url,
    ...credentials,
    reconnect: { timeout: 20000, strategy: (start) => asked.resolve(start) },
  });
  const publisher = await tether.connect({ url: small.url, ...credentials });
  t.after(async () => {
    await Promise.all([session.close(), publisher.close()]);
    await proxy.stop();
    await small.stop();
  });
  const sub = session.subscribe('gap/x');
  await sub.ready;
  await proxy.cut('rst');
  const start = await guard(asked.promise, 'strategy call');
  for (let i = 1; i <= 60; i += 1) await publisher.publish('gap/x', String(i));
  const gap = next(session, 'gap');
  const reconnected = next(session, 'reconnect');
  start();
  const [report] = await gap;
  await reconnected;
  assert.ok(report.lostCount > 0, JSON.stringify(report));
  assert.equal(report.lostTo - report.lostFrom + 1, report.lostCount);
  assert.deepEqual(report.topics, ['gap/x']);
  // Whatever was kept comes in order, then the current value as a snapshot: never a silent hole.
  const seen = [];
  for (;;) {
    const { value, done } = await guard(sub.next(), 'the snapshot after the gap');
    assert.equal(done, false);
    seen.push([Number(value.value.toString()), value.snapshot]);
    if (value.snapshot) break;
  }
  assert.deepEqual(seen[seen.length - 1], [60, true]);
  const numbers = seen.map(([n]) => n);
  assert.deepEqual(numbers, [...numbers].sort((a, b) => a - b));
});

test('the iterator ends when the session closes, and a for-await loop can be left early', async (t) => {
  const session = await tether.connect({ url: server.url, ...credentials });
  const a = session.subscribe('ending/a');
  const b = session.subscribe('ending/b');
  await Promise.all([a.ready, b.ready]);
  await session.publish('ending/b', 'one');
  for await (const update of b) {
    assert.equal(update.value.toString(), 'one');
    break; // calls b.return(): unsubscribes
  }
  assert.deepEqual(await b.next(), { value: undefined, done: true });
  await session.close();
  assert.deepEqual(await guard(a.next(), 'end of a'), { value: undefined, done: true });
});

test('wrong credentials reject with code authentication_failed', async () => {
  await assert.rejects(tether.connect({ url: server.url, principal: 'control', credentials: 'nope' }), (err) => {
    assert.ok(err instanceof tether.TetherError);
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'authentication_failed');
    assert.equal(err.reason, 'authentication_failed');
    return true;
  });
});

test('nobody listening rejects with code connection_error', async () => {
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
  await assert.rejects(tether.connect({ host: '127.0.0.1', port, ...credentials, connectTimeout: 5000 }), {
    name: 'TetherError',
    code: 'connection_error',
  });
});

test('permissions: subscribe and publish outside them reject with code access_denied; the session stays open', async (t) => {
  const session = await direct(t, { principal: 'reader', credentials: 'secret' });
  const denied = session.subscribe('private/x');
  await assert.rejects(denied.ready, { name: 'TetherError', code: 'access_denied' });
  await assert.rejects(denied.next(), { code: 'access_denied' });
  assert.deepEqual(await denied.next(), { value: undefined, done: true });
  await assert.rejects(session.subscribe('private/y', () => {}), { code: 'access_denied' });
  await assert.rejects(session.publish('public/x', 'no'), { code: 'access_denied' });
  const allowed = session.subscribe('public/**');
  await allowed.ready;
  assert.equal(session.state, 'CONNECTED_ACTIVE');
});

test('invalid topics and closed sessions give typed errors', async () => {
  const session = await tether.connect({ url: server.url, ...credentials });
  await assert.rejects(session.publish('bad//topic', 'x'), { code: 'invalid_topic' });
  await assert.rejects(session.publish(42, 'x'), (err) => err instanceof TypeError && /topic/.test(err.message));
  await assert.rejects(session.publish('ok/topic', undefined), (err) => err instanceof TypeError && /value/.test(err.message));
  await assert.rejects(session.publish('ok/topic', () => {}), TypeError);
  const cyclic = {};
  cyclic.self = cyclic;
  await assert.rejects(session.publish('ok/topic', cyclic), (err) => err instanceof TypeError && /value/.test(err.message));
  assert.throws(() => session.subscribe(7), (err) => err instanceof TypeError && /selector/.test(err.message));
  await session.close();
  assert.equal(session.state, 'CLOSED_BY_CLIENT');
  assert.equal(session.closeReason, 'closed_by_client');
  await assert.rejects(session.publish('ok/topic', 'late'), { code: 'session_closed', reason: 'closed_by_client' });
  await assert.rejects(session.subscribe('ok/topic').ready, { code: 'session_closed' });
  await session.close(); // twice is fine
});

test('a burst of 2,000 publishes all settle, and every update arrives once, in order, through a handler and an iterator (batches across the addon boundary)', async (t) => {
  const session = await direct(t);
  const n = 2000;
  const seen = [];
  const handled = deferred();
  await session.subscribe('burst/*', (update) => {
    seen.push([update.topic, update.value.toString('utf8'), update.position.offset]);
    if (seen.length === n) handled.resolve();
  });
  const iterated = session.subscribe('burst/**');
  await iterated.ready;
  // Two topics, so that a batch carries several.
  const published = [];
  for (let i = 0; i < n; i += 1) published.push(session.publish(`burst/${i % 2 ? 'odd' : 'even'}`, `m${i}`));
  assert.equal((await Promise.allSettled(published)).filter((r) => r.status !== 'fulfilled').length, 0);
  await guard(handled.promise, 'the handler received every update');
  const expected = Array.from({ length: n }, (_, i) => [`burst/${i % 2 ? 'odd' : 'even'}`, `m${i}`]);
  assert.deepEqual(seen.map(([topic, value]) => [topic, value]), expected);
  const taken = await take(iterated, n);
  assert.deepEqual(taken.map((u) => [u.topic, u.value.toString('utf8')]), expected);
  assert.ok(taken.every((u) => Buffer.isBuffer(u.value) && u.snapshot === false));
  // Offsets grow within each topic.
  for (const topic of ['burst/odd', 'burst/even']) {
    const offsets = seen.filter(([tp]) => tp === topic).map(([, , o]) => o);
    assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), topic);
  }
});
