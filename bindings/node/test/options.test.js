'use strict';
// Invalid options are TypeErrors whose message names the option; nothing is opened for them.

const test = require('node:test');
const assert = require('node:assert/strict');
const tether = require('..');

const base = { host: '127.0.0.1', port: 1, principal: 'control', credentials: 'password' };

const cases = [
  ['options', undefined],
  ['options', null],
  ['options', 'ws://127.0.0.1:1'],
  ['options.url or options.host', {}],
  ['options.url', { url: 42 }],
  ['options.url', { url: '' }],
  ['options.url', { url: [] }],
  ['options.url[1]', { url: ['ws://127.0.0.1:1', 8080] }],
  ['options.url[0]', { url: [''] }],
  ['options.host', { url: ['ws://127.0.0.1:1'], host: 'localhost' }],
  ['options.host', { url: 'ws://127.0.0.1:1', host: 'localhost' }],
  ['options.host', { host: 12 }],
  ['options.port', { ...base, port: 'eighty' }],
  ['options.port', { ...base, port: 0 }],
  ['options.port', { ...base, port: 70000 }],
  ['options.port', { ...base, port: 1.5 }],
  ['options.secure', { ...base, secure: 'yes' }],
  ['options.path', { ...base, path: 3 }],
  ['options.principal', { ...base, principal: 7 }],
  ['options.credentials', { ...base, credentials: Buffer.from('pw') }],
  ['options.credentials', { host: '127.0.0.1', port: 1, credentials: 'password' }],
  ['options.connectTimeout', { ...base, connectTimeout: 0 }],
  ['options.closeTimeout', { ...base, closeTimeout: -1 }],
  ['options.closeTimeout', { ...base, closeTimeout: '5s' }],
  ['"hots"', { ...base, hots: 'x' }],
  ['options.reconnect', { ...base, reconnect: 'always' }],
  ['options.reconnect', { ...base, reconnect: -1 }],
  ['options.reconnect', { ...base, reconnect: Number.NaN }],
  ['options.reconnect', { ...base, reconnect: Number.POSITIVE_INFINITY }],
  ['options.reconnect', { ...base, reconnect: null }],
  ['options.reconnect', { ...base, reconnect: [] }],
  ['options.reconnect.timeout', { ...base, reconnect: { timeout: '10s' } }],
  ['options.reconnect.timeout', { ...base, reconnect: { timeout: -5 } }],
  ['options.reconnect.strategy', { ...base, reconnect: { strategy: 42 } }],
  ['options.reconnect.strategy', { ...base, reconnect: { strategy: { kind: 'constant' } } }],
  ['"timout"', { ...base, reconnect: { timout: 1000 } }],
  ['options.pingPeriod', { ...base, pingPeriod: 0 }],
  ['options.deliveryLimit', { ...base, deliveryLimit: 0 }],
  ['options.maxQueuedRequests', { ...base, maxQueuedRequests: 1.5 }],
  ['options.maxQueuedBytes', { ...base, maxQueuedBytes: -1 }],
  ['options.tlsRootCertificates', { ...base, tlsRootCertificates: 42 }],
  ['options.tlsRootCertificates[1]', { ...base, tlsRootCertificates: ['-----BEGIN', 7] }],
  ['options.strict', { ...base, strict: 'yes' }],
  ['options.reconnect.onSuccess', { ...base, reconnect: { strategy: () => {}, onSuccess: 1 } }],
  ['options.reconnect.onFailure', { ...base, reconnect: { strategy: () => {}, onFailure: 'x' } }],
  ['options.reconnect.onSuccess', { ...base, reconnect: { onSuccess: () => {} } }],
];

for (const [name, options] of cases) {
  test(`connect(${JSON.stringify(options) ?? 'undefined'}) rejects with a TypeError naming ${name}`, async () => {
    await assert.rejects(tether.connect(options), (err) => {
      assert.ok(err instanceof TypeError, `${err}`);
      assert.ok(err.message.includes(name), `"${err.message}" should name ${name}`);
      return true;
    });
  });
}

test('built-in strategy factories check their arguments', () => {
  const check = (fn, name) =>
    assert.throws(fn, (err) => err instanceof TypeError && err.message.includes(name), name);
  check(() => tether.constant(-1), 'constant(delay)');
  check(() => tether.constant('5'), 'constant(delay)');
  check(() => tether.constant(5, { maxAttempts: -1 }), 'maxAttempts');
  check(() => tether.constant(5, { tries: 3 }), '"tries"');
  check(() => tether.exponentialBackoff({ jitter: 'lots' }), 'jitter');
  check(() => tether.exponentialBackoff({ multiplier: 0.5 }), 'multiplier');
  check(() => tether.exponentialBackoff({ initialDelay: -1 }), 'initialDelay');
  check(() => tether.exponentialBackoff({ maxDelay: Number.NaN }), 'maxDelay');
  check(() => tether.exponentialBackoff({ maxAttempts: 1.5 }), 'maxAttempts');
  check(() => tether.exponentialBackoff({ initial: 100 }), '"initial"');
  check(() => tether.exponentialBackoff(null), 'exponentialBackoff(options)');
  check(() => new tether.BuiltinStrategy({ kind: 'constant' }), 'constant()');
  assert.equal(tether.exponentialBackoff().kind, 'exponentialBackoff');
  assert.equal(tether.abortImmediately.kind, 'abortImmediately');
  assert.equal(tether.defaultStrategy.kind, 'default');
  assert.ok(Object.isFrozen(tether.constant(5)));
  check(() => tether.defaultStrategy.decide(), 'decide(attempt)');
  check(() => tether.defaultStrategy.decide({ number: 1, reason: 'transport_error', retryAfter: null }), 'decide(attempt)');
});

test('sessions and subscriptions are made by connect and subscribe only', () => {
  assert.throws(() => new tether.Session(), (err) => err instanceof TypeError && /connect/.test(err.message));
  assert.throws(() => new tether.Subscription(), (err) => err instanceof TypeError && /subscribe/.test(err.message));
});
