'use strict';
// tether-session: Tether sessions for Node.js.
//
// This file only adapts the native addon (Rust, napi-rs) to Node's idioms: option checking,
// an EventEmitter, async iterators, typed errors. Every behaviour (reconnection, recovery,
// strategies and their built-ins, timeouts) is the Tether core's.

const { EventEmitter } = require('node:events');
const { load } = require('./native.js');

const native = load();

/** Every code a `TetherError` may carry (see index.d.ts for their meaning). */
const CLOSE_REASONS = Object.freeze([
  'closed_by_client',
  'closed_by_server',
  'reconnect_aborted',
  'reconnect_timeout',
  'authentication_failed',
  'handshake_error',
  'protocol_version_mismatch',
  'transport_error',
  'connection_error',
  'idle_connection',
  'lost_messages',
  'unknown_session',
  'access_denied',
  'limit_exceeded',
  'server_draining',
  'server_busy',
]);

const DEFAULT_RECONNECT_TIMEOUT = 60000;

/** An operation failed. Branch on `code` (and `reason` for closed sessions), not on text. */
class TetherError extends Error {
  constructor(message, code, reason) {
    super(message);
    this.name = 'TetherError';
    this.code = code;
    this.reason = reason ?? undefined;
  }
}

function toError(info) {
  return new TetherError(info.message, info.code, info.reason);
}

// ---------------------------------------------------------------------------------------------
// Option checking: invalid options are TypeErrors whose message names the option.

function describe(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function fail(name, expected, value) {
  return new TypeError(`${name} must be ${expected} (got ${describe(value)})`);
}

function checkKeys(object, allowed, name) {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      throw new TypeError(
        `${name} has an unknown property ${JSON.stringify(key)} (expected one of ${allowed.join(', ')})`,
      );
    }
  }
}

function optionalString(value, name) {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw fail(name, 'a string', value);
  return value;
}

function milliseconds(value, name, { integer = false, positive = false } = {}) {
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (positive ? value > 0 : value >= 0) &&
    (!integer || Number.isInteger(value));
  if (!ok) {
    throw fail(name, `a${positive ? ' positive' : ' non-negative'} ${integer ? 'integer' : 'number'} of milliseconds`, value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Built-in strategies: descriptions of the core's strategies, carried out in Rust.

const kSpec = Symbol('tether.strategySpec');
/** The native attempt behind the `attempt` a strategy function is given. */
const kAttempt = Symbol('tether.attempt');
/** The core strategy of each built-in a strategy function hands attempts to (made on first use). */
const delegates = new WeakMap();

/** A built-in reconnection strategy; make one with the functions below. */
class BuiltinStrategy {
  constructor(token, spec) {
    if (token !== kSpec) throw new TypeError('use constant(), exponentialBackoff(), abortImmediately or defaultStrategy');
    this[kSpec] = Object.freeze({ ...spec });
    Object.freeze(this);
  }

  /** `default`, `constant`, `exponentialBackoff` or `abortImmediately`. */
  get kind() {
    return this[kSpec].kind;
  }

  /**
   * Lets this built-in decide an attempt a strategy function was given (its fourth argument):
   * start it after the built-in's delay (at least the server's `retryAfter`), or abort. For a
   * strategy function that logs or counts attempts and leaves the decision to a built-in.
   */
  decide(attempt) {
    const handle = attempt !== null && typeof attempt === 'object' ? attempt[kAttempt] : undefined;
    if (handle === undefined) {
      throw fail('decide(attempt)', "the attempt a strategy function was given (its fourth argument)", attempt);
    }
    let strategy = delegates.get(this);
    if (strategy === undefined) {
      strategy = new native.NativeStrategy({ ...this[kSpec] });
      delegates.set(this, strategy);
    }
    strategy.perform(handle);
  }
}

function maxAttempts(value, name) {
  if (value === undefined) return undefined;
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw fail(name, 'a non-negative integer', value);
  }
  return value;
}

/** Try again after `delay` ms every time (optionally at most `maxAttempts` times). */
function constant(delay, options = {}) {
  milliseconds(delay, 'constant(delay)');
  if (options === null || typeof options !== 'object') throw fail('constant(delay, options)', 'an object', options);
  checkKeys(options, ['maxAttempts'], 'constant() options');
  return new BuiltinStrategy(kSpec, {
    kind: 'constant',
    delayMs: delay,
    maxAttempts: maxAttempts(options.maxAttempts, 'constant() options.maxAttempts'),
  });
}

const JITTERS = ['none', 'full', 'equal', 'decorrelated'];

/**
 * Exponential backoff: delays `initialDelay`, × `multiplier`, ... capped at `maxDelay` (ms),
 * spread by `jitter`; optionally at most `maxAttempts` attempts, and a first attempt after a
 * random delay up to `quickFirstAttempt` ms.
 */
function exponentialBackoff(options = {}) {
  if (options === null || typeof options !== 'object') throw fail('exponentialBackoff(options)', 'an object', options);
  checkKeys(
    options,
    ['initialDelay', 'multiplier', 'maxDelay', 'jitter', 'maxAttempts', 'quickFirstAttempt'],
    'exponentialBackoff() options',
  );
  const spec = { kind: 'exponentialBackoff' };
  if (options.initialDelay !== undefined) spec.initialMs = milliseconds(options.initialDelay, 'exponentialBackoff() options.initialDelay');
  if (options.multiplier !== undefined) {
    if (typeof options.multiplier !== 'number' || !Number.isFinite(options.multiplier) || options.multiplier < 1) {
      throw fail('exponentialBackoff() options.multiplier', 'a number >= 1', options.multiplier);
    }
    spec.multiplier = options.multiplier;
  }
  if (options.maxDelay !== undefined) spec.maxDelayMs = milliseconds(options.maxDelay, 'exponentialBackoff() options.maxDelay');
  if (options.jitter !== undefined) {
    if (!JITTERS.includes(options.jitter)) throw fail('exponentialBackoff() options.jitter', `one of ${JITTERS.join(', ')}`, options.jitter);
    spec.jitter = options.jitter;
  }
  spec.maxAttempts = maxAttempts(options.maxAttempts, 'exponentialBackoff() options.maxAttempts');
  if (options.quickFirstAttempt !== undefined) {
    spec.quickFirstAttemptMs = milliseconds(options.quickFirstAttempt, 'exponentialBackoff() options.quickFirstAttempt');
  }
  return new BuiltinStrategy(kSpec, spec);
}

/** Never reconnect: the first attempt aborts (the session closes, reason `reconnect_aborted`). */
const abortImmediately = new BuiltinStrategy(kSpec, { kind: 'abortImmediately' });

/** The default: first attempt after a random 0–100 ms, then full-jitter backoff 250 ms × 2 up to 10 s. */
const defaultStrategy = new BuiltinStrategy(kSpec, { kind: 'default' });

function checkStrategy(value, name) {
  if (typeof value === 'function' || value instanceof BuiltinStrategy) return value;
  throw fail(name, 'a function (start, abort, reason, attempt) => void or a built-in strategy', value);
}

function optionalHook(value, name) {
  if (value === undefined) return undefined;
  if (typeof value !== 'function') throw fail(name, 'a function', value);
  return value;
}

/** `reconnect` as the seed has it → { timeout, strategy, onSuccess, onFailure }. */
function normalizeReconnect(reconnect) {
  const name = 'options.reconnect';
  if (reconnect === undefined || reconnect === true) return { timeout: DEFAULT_RECONNECT_TIMEOUT, strategy: defaultStrategy };
  if (reconnect === false) return { timeout: 0, strategy: defaultStrategy };
  if (typeof reconnect === 'number') return { timeout: milliseconds(reconnect, name), strategy: defaultStrategy };
  if (typeof reconnect === 'function' || reconnect instanceof BuiltinStrategy) {
    return { timeout: DEFAULT_RECONNECT_TIMEOUT, strategy: reconnect };
  }
  if (reconnect !== null && typeof reconnect === 'object' && !Array.isArray(reconnect)) {
    checkKeys(reconnect, ['timeout', 'strategy', 'onSuccess', 'onFailure'], name);
    const timeout =
      reconnect.timeout === undefined ? DEFAULT_RECONNECT_TIMEOUT : milliseconds(reconnect.timeout, `${name}.timeout`);
    const strategy = reconnect.strategy === undefined ? defaultStrategy : checkStrategy(reconnect.strategy, `${name}.strategy`);
    const onSuccess = optionalHook(reconnect.onSuccess, `${name}.onSuccess`);
    const onFailure = optionalHook(reconnect.onFailure, `${name}.onFailure`);
    if ((onSuccess || onFailure) && typeof strategy !== 'function') {
      throw new TypeError(`${name}.onSuccess and .onFailure go with a strategy function (a built-in resets itself)`);
    }
    return { timeout, strategy, onSuccess, onFailure };
  }
  throw fail(name, 'a boolean, a timeout in milliseconds, a strategy, or { timeout, strategy }', reconnect);
}

const OPTION_KEYS = [
  'url',
  'host',
  'port',
  'secure',
  'path',
  'principal',
  'credentials',
  'reconnect',
  'connectTimeout',
  'closeTimeout',
  'tlsRootCertificates',
  'strict',
  'maxQueuedRequests',
  'maxQueuedBytes',
  'pingPeriod',
  'deliveryLimit',
];

function optionalCount(value, name) {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < 1 || (name.endsWith('Bytes') ? false : value > 0xffffffff)) {
    throw fail(name, 'a positive integer', value);
  }
  return value;
}

/** `tlsRootCertificates`: PEM text (string or Buffer), or an array of them → string[]. */
function pemList(value, name) {
  if (value === undefined) return undefined;
  const list = Array.isArray(value) ? value : [value];
  return list.map((pem, i) => {
    const where = Array.isArray(value) ? `${name}[${i}]` : name;
    if (typeof pem === 'string') return pem;
    if (Buffer.isBuffer(pem)) return pem.toString('utf8');
    throw fail(where, 'PEM text (a string or a Buffer)', pem);
  });
}

/** `{ url, fallbackUrls }` from the options: `url` is a string, or an array of them (the first, then fallbacks). */
function buildUrls(options) {
  if (options.url !== undefined) {
    const urls = Array.isArray(options.url) ? options.url : [options.url];
    const expected = 'a non-empty string or a non-empty array of them';
    if (urls.length === 0) throw fail('options.url', expected, options.url);
    urls.forEach((url, i) => {
      if (typeof url !== 'string' || url === '') {
        throw fail(Array.isArray(options.url) ? `options.url[${i}]` : 'options.url', Array.isArray(options.url) ? 'a non-empty string' : expected, url);
      }
    });
    for (const key of ['host', 'port', 'secure', 'path']) {
      if (options[key] !== undefined) throw new TypeError(`options.url and options.${key} cannot be used together`);
    }
    return { url: urls[0], fallbackUrls: urls.length > 1 ? urls.slice(1) : undefined };
  }
  return { url: buildUrl(options), fallbackUrls: undefined };
}

function buildUrl(options) {
  if (typeof options.host !== 'string' || options.host === '') {
    if (options.host === undefined) throw new TypeError('options.url or options.host is required');
    throw fail('options.host', 'a non-empty string', options.host);
  }
  if (options.secure !== undefined && typeof options.secure !== 'boolean') throw fail('options.secure', 'a boolean', options.secure);
  const secure = options.secure === true;
  let port = secure ? 443 : 80;
  if (options.port !== undefined) {
    if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) {
      throw fail('options.port', 'an integer from 1 to 65535', options.port);
    }
    port = options.port;
  }
  let path = '/';
  if (options.path !== undefined) {
    if (typeof options.path !== 'string') throw fail('options.path', 'a string', options.path);
    path = options.path.startsWith('/') ? options.path : `/${options.path}`;
  }
  const host = options.host.includes(':') && !options.host.startsWith('[') ? `[${options.host}]` : options.host;
  return `${secure ? 'wss' : 'ws'}://${host}:${port}${path}`;
}

function normalizeOptions(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw fail('options', 'an object', options);
  checkKeys(options, OPTION_KEYS, 'options');
  const { url, fallbackUrls } = buildUrls(options);
  const principal = optionalString(options.principal, 'options.principal');
  const credentials = optionalString(options.credentials, 'options.credentials');
  if (credentials !== undefined && principal === undefined) {
    throw new TypeError('options.credentials needs options.principal');
  }
  const connectTimeout =
    options.connectTimeout === undefined ? undefined : milliseconds(options.connectTimeout, 'options.connectTimeout', { positive: true });
  const closeTimeout =
    options.closeTimeout === undefined ? undefined : milliseconds(options.closeTimeout, 'options.closeTimeout');
  const reconnect = normalizeReconnect(options.reconnect);
  const jsStrategy = typeof reconnect.strategy === 'function';
  if (options.strict !== undefined && typeof options.strict !== 'boolean') throw fail('options.strict', 'a boolean', options.strict);
  const pingPeriod =
    options.pingPeriod === undefined ? undefined : milliseconds(options.pingPeriod, 'options.pingPeriod', { positive: true });
  return {
    strategy: jsStrategy ? reconnect.strategy : null,
    hooks: { onSuccess: reconnect.onSuccess, onFailure: reconnect.onFailure },
    native: {
      url,
      fallbackUrls,
      principal,
      credentials,
      reconnectTimeoutMs: reconnect.timeout,
      strategy: jsStrategy ? undefined : { ...reconnect.strategy[kSpec] },
      jsStrategy,
      connectTimeoutMs: connectTimeout,
      closeTimeoutMs: closeTimeout,
      tlsRootCertificates: pemList(options.tlsRootCertificates, 'options.tlsRootCertificates'),
      strict: options.strict,
      maxQueuedRequests: optionalCount(options.maxQueuedRequests, 'options.maxQueuedRequests'),
      maxQueuedBytes: optionalCount(options.maxQueuedBytes, 'options.maxQueuedBytes'),
      pingPeriodMs: pingPeriod,
      deliveryLimit: optionalCount(options.deliveryLimit, 'options.deliveryLimit'),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Values

function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  const expected = 'a Buffer, a string or a JSON-serialisable value';
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') throw fail('value', expected, value);
  let json;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new TypeError(`value must be ${expected}: ${err.message}`);
  }
  if (json === undefined) throw fail('value', expected, value);
  return Buffer.from(json, 'utf8');
}

/** Numbers per update in a batch's `meta` (see the addon's `JsUpdates`). */
const META = 5;

/**
 * The update objects of a batch the addon passed on: `topics` (distinct), `values` (every
 * value, one after the other: each update's value is a view of its bytes) and `meta` (per
 * update: topic index, end of its value, partition, offset, snapshot).
 */
function toUpdates({ topics, values, meta }) {
  const updates = new Array(meta.length / META);
  let start = 0;
  for (let i = 0, j = 0; j < meta.length; i += 1, j += META) {
    const end = meta[j + 1];
    updates[i] = {
      topic: topics[meta[j]],
      value: values.subarray(start, end),
      snapshot: meta[j + 4] === 1,
      position: { partition: meta[j + 2], offset: meta[j + 3] },
    };
    start = end;
  }
  return updates;
}

/** Runs a one-argument user callback (an update handler: once per update, so no argument
 * array and no closure per call); a throw or a rejected promise goes to `onError`. */
function guardedOne(fn, arg, onError) {
  let result;
  try {
    result = fn(arg);
  } catch (err) {
    onError(err);
    return;
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    Promise.resolve(result).then(undefined, onError);
  }
}

/** Runs a user callback with `args`, as {@link guardedOne} does. */
function guarded(fn, args, onError) {
  guardedOne((a) => fn(...a), args, onError);
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

const kInternal = Symbol('tether.internal');

/**
 * The updates of one subscription: an async iterator (`for await`), or a handler. Ends when the
 * session closes or the subscription is closed.
 */
class Subscription {
  #session;
  #queue = [];
  #waiters = [];
  #done = false;
  #error = null;
  #handler;
  #consumed;
  #unacked = 0;

  constructor(token, session, selector, handler, consumed) {
    if (token !== kInternal) throw new TypeError('use session.subscribe(selector)');
    this.#session = session;
    this.#handler = handler;
    this.#consumed = consumed;
    /** The selector (`a/b`, `a/*`, `a/**`). */
    this.selector = selector;
    /** Settles when the server has confirmed (or refused) the subscription. */
    this.ready = undefined;
  }

  [kInternal] = {
    /** A batch of updates, in order: one acknowledgement to the addon for the batch. */
    pushAll: (updates) => {
      if (this.#done) return;
      if (this.#handler) {
        const handler = this.#handler;
        const onError = this.#session[kInternal].onError;
        for (let i = 0; i < updates.length && !this.#done; i += 1) {
          guardedOne(handler, updates[i], onError);
        }
        this.#consumed(updates.length);
        return;
      }
      let taken = 0;
      for (const update of updates) {
        if (this.#waiters.length > 0) {
          this.#waiters.shift().resolve({ value: update, done: false });
          taken += 1;
        } else {
          this.#queue.push(update);
        }
      }
      if (taken > 0) this.#took(taken);
    },
    end: (error) => {
      if (this.#done) return;
      this.#done = true;
      if (error && !this.#handler) this.#error = error;
      for (const w of this.#waiters.splice(0)) {
        if (this.#error) {
          w.reject(this.#error);
          this.#error = null;
        } else {
          w.resolve({ value: undefined, done: true });
        }
      }
    },
  };

  /**
   * The application took an update: the addon may pass more on (a few at a time). Updates
   * the application has not taken stay bounded: past a window the addon stops passing them
   * on, and past the session's delivery limit the session stops reading.
   */
  #took(count = 1) {
    this.#unacked += count;
    if (this.#unacked >= 64 || this.#queue.length === 0) {
      const n = this.#unacked;
      this.#unacked = 0;
      this.#consumed(n);
    }
  }

  /** The next update; `{ done: true }` once the subscription ended. */
  next() {
    if (this.#queue.length > 0) {
      const value = this.#queue.shift();
      this.#took();
      return Promise.resolve({ value, done: false });
    }
    if (this.#error) {
      const error = this.#error;
      this.#error = null;
      return Promise.reject(error);
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Called when a `for await` loop is left early: closes the subscription. */
  async return() {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  /**
   * Stops this subscription locally and removes the selector from the server (every local
   * subscription with the same selector text ends too).
   */
  async close() {
    if (this.#done) return;
    this.#queue.length = 0;
    // Nothing more will be taken: let the addon's forwarder run to the stream's end.
    this.#consumed(0xffffffff);
    this[kInternal].end();
    await this.#session[kInternal].unsubscribe(this.selector);
  }
}

// ---------------------------------------------------------------------------------------------
// Session

const CLOSED_STATES = ['CLOSED_BY_CLIENT', 'CLOSED_BY_SERVER', 'CLOSED_FAILED'];

/**
 * A session with a Tether server. Events: `disconnect(reason)`, `reconnect()`, `close(reason)`,
 * `error(err)`, `state(old, new, reason)`, `gap(report)`.
 */
class Session extends EventEmitter {
  #native = null;
  #state = 'CONNECTING';
  #closeReason = null;
  #strategy;
  #hooks;
  #subs = new Map();
  #opened;
  #resolveOpened;
  #closed;
  #resolveClosed;
  /** Publishes awaiting their outcome, by the number the addon gave them. */
  #publishes = new Map();
  #unrefed = false;
  /** A timer that keeps the event loop alive while publishes of an unref'd session are pending. */
  #loopHold = null;

  constructor(token, strategy, hooks) {
    if (token !== kInternal) throw new TypeError('use connect(options) to open a session');
    super();
    this.#strategy = strategy;
    this.#hooks = hooks ?? {};
    this.#opened = new Promise((resolve) => {
      this.#resolveOpened = resolve;
    });
    this.#closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
  }

  [kInternal] = {
    attach: (nativeSession) => {
      this.#native = nativeSession;
      return this.#opened;
    },
    dispatch: (event) => {
      // Called by the addon on the JavaScript thread: nothing may escape from here.
      try {
        this.#dispatch(event);
      } catch (err) {
        this.#report(err);
      }
    },
    /** Where a handler's throw or rejection goes (one function for every call). */
    onError: (err) => this.#report(err),
    unsubscribe: async (selector) => {
      const outcome = await this.#native.unsubscribe(selector);
      // A closed session has no subscriptions left, whether or not the server saw the request.
      const closed = ['session_closed', 'outcome_unknown'];
      if (outcome.error && !closed.includes(outcome.error.code)) throw toError(outcome.error);
    },
  };

  #dispatch(event) {
    switch (event.type) {
      case 'state':
        this.#onState(event.old, event.new, event.reason ?? undefined);
        break;
      case 'attempt':
        this.#onAttempt(event.attempt, event.reason);
        break;
      case 'success':
        if (this.#hooks.onSuccess) guarded(this.#hooks.onSuccess, [Object.freeze(event.info)], (err) => this.#report(err));
        break;
      case 'failure':
        if (this.#hooks.onFailure) {
          guarded(this.#hooks.onFailure, [Object.freeze(event.info), event.reason], (err) => this.#report(err));
        }
        break;
      case 'updates':
        this.#subs.get(event.sub)?.[kInternal].pushAll(toUpdates(event.updates));
        break;
      case 'settled':
        this.#settle(event.settled);
        break;
      case 'end':
        this.#subs.get(event.sub)?.[kInternal].end();
        this.#subs.delete(event.sub);
        break;
      case 'gap':
        this.#emit('gap', event.gap);
        break;
      default:
        break;
    }
  }

  #onState(old, state, reason) {
    this.#state = state;
    if (old === 'CONNECTING') this.#resolveOpened();
    this.#emit('state', old, state, reason);
    if (state === 'RECOVERING_RECONNECT') {
      this.#emit('disconnect', reason);
    } else if (old === 'RECOVERING_RECONNECT' && state === 'CONNECTED_ACTIVE') {
      this.#emit('reconnect');
    }
    if (CLOSED_STATES.includes(state)) {
      this.#closeReason = reason ?? 'closed_by_client';
      this.#emit('close', this.#closeReason);
      this.#resolveClosed(this.#closeReason);
    }
  }

  #onAttempt(attempt, reason) {
    const strategy = this.#strategy;
    const start = () => attempt.start();
    const abort = () => attempt.abort();
    const info = {
      number: attempt.number,
      elapsed: attempt.elapsed,
      remaining: attempt.remaining,
      reason,
      retryAfter: attempt.retryAfter ?? null,
    };
    // For `builtin.decide(info)`: not enumerable, so logging the facts shows only the facts.
    Object.defineProperty(info, kAttempt, { value: attempt });
    Object.freeze(info);
    if (typeof strategy !== 'function') {
      attempt.abort();
      return;
    }
    // A strategy that throws (or rejects) aborts: the session closes, reason reconnect_aborted,
    // unless it had already decided.
    guarded(strategy, [start, abort, reason, info], (err) => {
      attempt.abort();
      this.#report(err);
    });
  }

  /** Emits, turning a listener's throw into an `error` event. */
  #emit(name, ...args) {
    try {
      this.emit(name, ...args);
    } catch (err) {
      this.#report(err);
    }
  }

  /** A user callback failed: an `error` event if anyone listens, else a process warning. */
  #report(err) {
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', err);
        return;
      } catch (inner) {
        err = inner;
      }
    }
    process.emitWarning(err instanceof Error ? err : new Error(`a tether-session callback threw ${String(err)}`));
  }

  /** The session id: 32 hex digits, the same after every reconnection. */
  get sessionId() {
    return this.#native ? this.#native.sessionId : undefined;
  }

  /** The state as of the last `state` event (`CONNECTED_ACTIVE`, ...). */
  get state() {
    return this.#state;
  }

  /** Why the session closed, once it has (`null` before). */
  get closeReason() {
    return this.#closeReason;
  }

  /** The reconnection timeout in force, ms (the smaller of the requested and the server's). */
  get reconnectionTimeout() {
    return this.#native ? this.#native.reconnectionTimeout : 0;
  }

  /** The ping period the server granted on the current connection, ms; `null` while not connected. */
  get pingPeriod() {
    return this.#native ? this.#native.pingPeriod ?? null : null;
  }

  /**
   * Lets the process end while the session is open (as `timer.unref()`): the session no longer
   * keeps Node's event loop alive, and is closed when the process exits. Returns the session.
   */
  unref() {
    this.#native?.unref();
    this.#unrefed = true;
    if (this.#publishes.size > 0) this.#holdLoop();
    return this;
  }

  /** Resolves with the close reason once the session is closed, whatever closed it. */
  get closed() {
    return this.#closed;
  }

  /**
   * Publishes `value` (Buffer, string, or JSON-serialisable value) on `topic`; resolves when
   * the server has applied it. Sent exactly once, in order, across reconnections.
   */
  publish(topic, value) {
    // Not `async`: one promise per publish, the one the addon's batch settles. Invalid
    // arguments still reject (they never throw), as from an async function.
    let queued;
    try {
      if (typeof topic !== 'string') throw fail('topic', 'a string', topic);
      queued = this.#native.publish(topic, toBuffer(value));
    } catch (err) {
      return Promise.reject(err);
    }
    if (typeof queued !== 'number') {
      return queued.error ? Promise.reject(toError(queued.error)) : Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this.#publishes.set(queued, { resolve, reject });
      if (this.#publishes.size === 1 && this.#unrefed) this.#holdLoop();
    });
  }

  /** Publishes the addon settled, in a batch. */
  #settle({ ok, failed }) {
    const publishes = this.#publishes;
    for (let i = 0; i < ok.length; i += 1) {
      const id = ok[i];
      const p = publishes.get(id);
      if (p !== undefined) {
        publishes.delete(id);
        p.resolve();
      }
    }
    for (const { id, error } of failed) {
      const p = publishes.get(id);
      if (p !== undefined) {
        publishes.delete(id);
        p.reject(toError(error));
      }
    }
    if (publishes.size === 0 && this.#loopHold !== null) {
      clearInterval(this.#loopHold);
      this.#loopHold = null;
    }
  }

  /**
   * After `unref()` the addon no longer keeps the event loop alive; a publish being awaited
   * still does, as a promise of its own did before publishes were settled in batches.
   */
  #holdLoop() {
    if (this.#loopHold === null) this.#loopHold = setInterval(() => {}, 0x7fffffff);
  }

  /**
   * `subscribe(selector)`: a `Subscription` to iterate with `for await`.
   * `subscribe(selector, handler)`: calls `handler(update)` for each update; resolves with the
   * `Subscription` once the server confirmed it.
   */
  subscribe(selector, handler) {
    if (typeof selector !== 'string') throw fail('selector', 'a string', selector);
    if (handler !== undefined && typeof handler !== 'function') throw fail('handler', 'a function', handler);
    const id = this.#native.nextSubscription();
    const sub = new Subscription(kInternal, this, selector, handler, (n) => this.#native.consumed(id, n));
    this.#subs.set(id, sub);
    sub.ready = this.#native.subscribe(selector, id).then((outcome) => {
      if (outcome.error) {
        const error = toError(outcome.error);
        this.#subs.delete(id);
        sub[kInternal].end(error);
        throw error;
      }
    });
    if (handler !== undefined) return sub.ready.then(() => sub);
    // The error also reaches the iterator: an unobserved `ready` must not crash the process.
    sub.ready.catch(() => {});
    return sub;
  }

  /**
   * Closes the session; resolves once it is closed and the `close` event was emitted. Requests
   * made before are sent and confirmed first; requests made after reject with `session_closed`.
   */
  async close() {
    const outcome = await this.#native.close();
    if (outcome.error) throw toError(outcome.error);
    await this.#closed;
  }
}

let exitHooked = false;

/**
 * When this thread's process (or worker) exits with sessions open, Tether closes them and stops
 * its threads. Node runs an addon's cleanup hooks when an environment is torn down (a worker
 * ending, the event loop running out), but not on `process.exit()` or an uncaught exception:
 * the `exit` event covers those (the addon lets go once per environment, whichever comes first).
 */
function releaseAtExit() {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => native.releaseEnvironment());
}

/**
 * Opens a session. Resolves with a connected `Session`; rejects with a `TypeError` for invalid
 * options, or a `TetherError` (`code`: `authentication_failed`, `connection_error`, ...).
 */
async function connect(options) {
  const { strategy, hooks, native: nativeOptions } = normalizeOptions(options);
  releaseAtExit();
  const session = new Session(kInternal, strategy, hooks);
  const outcome = await native.connect(nativeOptions, session[kInternal].dispatch);
  if (outcome.error) throw toError(outcome.error);
  await session[kInternal].attach(outcome.session);
  return session;
}

module.exports = {
  connect,
  Session,
  Subscription,
  TetherError,
  BuiltinStrategy,
  constant,
  exponentialBackoff,
  abortImmediately,
  defaultStrategy,
  CLOSE_REASONS,
};
