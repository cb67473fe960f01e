// tether-browser: Tether sessions in a web page, with the API of the Node package
// (tether-session).
//
// This file is the thin shell around the WebAssembly core (bindings/browser/src, Rust): it owns
// the browser's WebSocket, the timer (setTimeout) and the clock (performance.now()), tells the
// core what happened and carries out what the core asks for. Every behaviour (the protocol,
// recovery, reconnection, strategies and their built-ins, timeouts) is the core's; here there
// is only option checking, an event emitter, async iterators and typed errors.

import init, { Core, Schedule } from './wasm/tether_wasm.js';

/** The states of a session. The three closed states are terminal. */
export type SessionState =
  | 'CONNECTING'
  | 'CONNECTED_ACTIVE'
  | 'RECOVERING_RECONNECT'
  | 'CLOSED_BY_CLIENT'
  | 'CLOSED_BY_SERVER'
  | 'CLOSED_FAILED';

/** Why a session was disconnected or closed. */
export type CloseReason =
  | 'closed_by_client'
  | 'closed_by_server'
  | 'reconnect_aborted'
  | 'reconnect_timeout'
  | 'authentication_failed'
  | 'handshake_error'
  | 'protocol_version_mismatch'
  | 'transport_error'
  | 'connection_error'
  | 'idle_connection'
  | 'lost_messages'
  | 'unknown_session'
  | 'access_denied'
  | 'limit_exceeded'
  | 'server_draining'
  | 'server_busy';

/** Every close reason, in a stable order. */
export const CLOSE_REASONS: readonly CloseReason[] = Object.freeze([
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
] as const);

/**
 * The `code` of a {@link TetherError}:
 * - a close reason: `connect()` failed for that reason (`authentication_failed`,
 *   `connection_error`, ...);
 * - `session_closed`: the session is closed (`reason` says why); the request was never sent
 *   and certainly not applied;
 * - `outcome_unknown`: the session closed (`reason` says why) after the request was sent and
 *   before the server confirmed it: it may or may not have been applied;
 * - a refusal by the server, the session staying open: `access_denied`, `invalid_selector`,
 *   `invalid_topic`, `not_subscribed`, `too_large` (`rejected` for a kind this version does not
 *   know);
 * - refused before anything was sent: `invalid_url`, `invalid_argument`, `invalid_topic`;
 * - `queue_full`: the send queue is full; nothing was queued.
 */
export type ErrorCode =
  | CloseReason
  | 'session_closed'
  | 'outcome_unknown'
  | 'invalid_selector'
  | 'invalid_topic'
  | 'not_subscribed'
  | 'too_large'
  | 'rejected'
  | 'invalid_url'
  | 'invalid_argument'
  | 'queue_full'
  | 'error';

/** An operation failed. Branch on `code` (and `reason`), not on the message. */
export class TetherError extends Error {
  /** What went wrong; see {@link ErrorCode}. */
  readonly code: ErrorCode;
  /** The close reason, for errors that carry one. */
  readonly reason: CloseReason | undefined;

  /** @internal */
  constructor(message: string, code: ErrorCode, reason?: CloseReason | null) {
    super(message);
    this.name = 'TetherError';
    this.code = code;
    this.reason = reason ?? undefined;
  }
}

interface FailureInfo {
  code: ErrorCode;
  reason: CloseReason | null;
  message: string;
}

function toError(info: unknown): Error {
  if (info instanceof Error) return info;
  const f = info as FailureInfo;
  return new TetherError(f.message, f.code, f.reason);
}

// ---------------------------------------------------------------------------------------------
// Option checking: invalid options are TypeErrors whose message names the option.

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

function fail(name: string, expected: string, value: unknown): TypeError {
  return new TypeError(`${name} must be ${expected} (got ${describe(value)})`);
}

function checkKeys(object: object, allowed: readonly string[], name: string): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) {
      throw new TypeError(
        `${name} has an unknown property ${JSON.stringify(key)} (expected one of ${allowed.join(', ')})`,
      );
    }
  }
}

function optionalString(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw fail(name, 'a string', value);
  return value;
}

function milliseconds(value: unknown, name: string, { positive = false } = {}): number {
  const ok = typeof value === 'number' && Number.isFinite(value) && (positive ? value > 0 : value >= 0);
  if (!ok) throw fail(name, `a${positive ? ' positive' : ' non-negative'} number of milliseconds`, value);
  return value;
}

function maxAttempts(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw fail(name, 'a non-negative integer', value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Strategies

/** Facts about the attempt a strategy is asked to decide. */
export interface AttemptInfo {
  /** 1 for the first attempt after a disconnection, then 2, 3, ... */
  readonly number: number;
  /** Time since the connection was lost, ms. */
  readonly elapsed: number;
  /** Time left before the reconnection timeout closes the session, ms. */
  readonly remaining: number;
  /** Why the connection was lost (first attempt) or why the previous attempt failed. */
  readonly reason: CloseReason;
  /**
   * How long the server asked the session to wait before trying again, ms (with
   * `server_draining` or `server_busy`); `null` when it did not. The built-in strategies wait
   * at least that long, spread over `[retryAfter, 2 × retryAfter)`.
   */
  readonly retryAfter: number | null;
}

/**
 * A reconnection strategy: called on entering `RECOVERING_RECONNECT` and after each failed
 * attempt while time remains. Call `start()` (try now) or `abort()` (close the session, reason
 * `reconnect_aborted`), now or later (e.g. from a timer). The first call wins and returns
 * `true`; later calls return `false`. A strategy that throws, or returns a promise that
 * rejects, aborts, and the error becomes an `error` event.
 */
export type StrategyFunction = (
  start: () => boolean,
  abort: () => boolean,
  reason: CloseReason,
  attempt: AttemptInfo,
) => unknown;

interface StrategySpec {
  kind: 'default' | 'constant' | 'exponentialBackoff' | 'abortImmediately';
  delayMs?: number;
  maxAttempts?: number;
  initialMs?: number;
  multiplier?: number;
  maxDelayMs?: number;
  jitter?: 'none' | 'full' | 'equal' | 'decorrelated';
  quickFirstAttemptMs?: number;
}

const kSpec = Symbol('tether.strategySpec');
const kAttempt = Symbol('tether.attempt');
/** The schedule of each built-in a strategy function hands attempts to (made on first use). */
const delegates = new WeakMap<BuiltinStrategy, Schedule>();

interface AttemptHandle {
  start(): boolean;
  abort(): boolean;
}

function schedule(spec: StrategySpec): Schedule {
  switch (spec.kind) {
    case 'constant':
      return Schedule.constant(spec.delayMs ?? 0, spec.maxAttempts);
    case 'exponentialBackoff':
      return Schedule.backoff(
        spec.initialMs,
        spec.multiplier,
        spec.maxDelayMs,
        spec.jitter,
        spec.maxAttempts,
        spec.quickFirstAttemptMs,
      );
    case 'abortImmediately':
      return Schedule.abortImmediately();
    default:
      return Schedule.recommended();
  }
}

/** A built-in reconnection strategy, carried out by the Tether core. */
export class BuiltinStrategy {
  /** @internal */
  readonly [kSpec]: Readonly<StrategySpec>;

  /** @internal */
  constructor(token: symbol, spec: StrategySpec) {
    if (token !== kSpec) throw new TypeError('use constant(), exponentialBackoff(), abortImmediately or defaultStrategy');
    this[kSpec] = Object.freeze({ ...spec });
    Object.freeze(this);
  }

  /** `default`, `constant`, `exponentialBackoff` or `abortImmediately`. */
  get kind(): StrategySpec['kind'] {
    return this[kSpec].kind;
  }

  /**
   * Lets this built-in decide an attempt a strategy function was given (its fourth argument):
   * start it after the built-in's delay (at least the server's `retryAfter`), or abort. For a
   * strategy function that logs or counts attempts and leaves the decision to a built-in.
   * Throws a `TypeError` for anything else.
   */
  decide(attempt: AttemptInfo): void {
    const handle =
      attempt !== null && typeof attempt === 'object'
        ? (attempt as unknown as { [kAttempt]?: AttemptHandle })[kAttempt]
        : undefined;
    if (handle === undefined) {
      throw fail('decide(attempt)', 'the attempt a strategy function was given (its fourth argument)', attempt);
    }
    let s = delegates.get(this);
    if (s === undefined) {
      s = schedule(this[kSpec]);
      delegates.set(this, s);
    }
    const delay = s.nextDelay(attempt.number, attempt.retryAfter ?? undefined);
    if (delay === undefined) handle.abort();
    else if (delay <= 0) handle.start();
    else setTimeout(() => handle.start(), delay);
  }
}

/** Try again after `delay` ms every time; abort instead of attempt `maxAttempts + 1`. */
export function constant(delay: number, options: { maxAttempts?: number } = {}): BuiltinStrategy {
  milliseconds(delay, 'constant(delay)');
  if (options === null || typeof options !== 'object') throw fail('constant(delay, options)', 'an object', options);
  checkKeys(options, ['maxAttempts'], 'constant() options');
  return new BuiltinStrategy(kSpec, {
    kind: 'constant',
    delayMs: delay,
    maxAttempts: maxAttempts(options.maxAttempts, 'constant() options.maxAttempts'),
  });
}

export interface ExponentialBackoffOptions {
  /** The first delay, ms (default 250). */
  initialDelay?: number;
  /** The factor between delays, at least 1 (default 2). */
  multiplier?: number;
  /** The largest delay, ms (default 10000). */
  maxDelay?: number;
  /** How randomness spreads the delays (default `full`). */
  jitter?: 'none' | 'full' | 'equal' | 'decorrelated';
  /** Abort instead of making attempt `maxAttempts + 1`. */
  maxAttempts?: number;
  /** Make the first attempt after a random delay up to this many ms, back off from the second. */
  quickFirstAttempt?: number;
}

const JITTERS = ['none', 'full', 'equal', 'decorrelated'] as const;

/** Exponential backoff with jitter. */
export function exponentialBackoff(options: ExponentialBackoffOptions = {}): BuiltinStrategy {
  if (options === null || typeof options !== 'object') throw fail('exponentialBackoff(options)', 'an object', options);
  checkKeys(
    options,
    ['initialDelay', 'multiplier', 'maxDelay', 'jitter', 'maxAttempts', 'quickFirstAttempt'],
    'exponentialBackoff() options',
  );
  const spec: StrategySpec = { kind: 'exponentialBackoff' };
  if (options.initialDelay !== undefined) {
    spec.initialMs = milliseconds(options.initialDelay, 'exponentialBackoff() options.initialDelay');
  }
  if (options.multiplier !== undefined) {
    const m: unknown = options.multiplier;
    if (typeof m !== 'number' || !Number.isFinite(m) || m < 1) {
      throw fail('exponentialBackoff() options.multiplier', 'a number >= 1', m);
    }
    spec.multiplier = m;
  }
  if (options.maxDelay !== undefined) spec.maxDelayMs = milliseconds(options.maxDelay, 'exponentialBackoff() options.maxDelay');
  if (options.jitter !== undefined) {
    if (!JITTERS.includes(options.jitter)) {
      throw fail('exponentialBackoff() options.jitter', `one of ${JITTERS.join(', ')}`, options.jitter);
    }
    spec.jitter = options.jitter;
  }
  spec.maxAttempts = maxAttempts(options.maxAttempts, 'exponentialBackoff() options.maxAttempts');
  if (options.quickFirstAttempt !== undefined) {
    spec.quickFirstAttemptMs = milliseconds(options.quickFirstAttempt, 'exponentialBackoff() options.quickFirstAttempt');
  }
  return new BuiltinStrategy(kSpec, spec);
}

/** Never reconnect: the first attempt aborts (the session closes, reason `reconnect_aborted`). */
export const abortImmediately: BuiltinStrategy = new BuiltinStrategy(kSpec, { kind: 'abortImmediately' });

/** The default: first attempt after a random 0–100 ms, then full-jitter backoff 250 ms × 2, up to 10 s. */
export const defaultStrategy: BuiltinStrategy = new BuiltinStrategy(kSpec, { kind: 'default' });

export type ReconnectionStrategy = StrategyFunction | BuiltinStrategy;

export interface ReconnectOptions {
  /** How long to keep trying after a disconnection, ms (default 60000; 0 disables). */
  timeout?: number;
  /** Who decides when to try (default {@link defaultStrategy}). */
  strategy?: ReconnectionStrategy;
}

const DEFAULT_RECONNECT_TIMEOUT = 60000;
const DEFAULT_CONNECT_TIMEOUT = 10000;
const DEFAULT_CLOSE_TIMEOUT = 5000;

function checkStrategy(value: unknown, name: string): ReconnectionStrategy {
  if (typeof value === 'function' || value instanceof BuiltinStrategy) return value as ReconnectionStrategy;
  throw fail(name, 'a function (start, abort, reason, attempt) => void or a built-in strategy', value);
}

/** `reconnect` as the seed has it → { timeout, strategy }. */
function normalizeReconnect(reconnect: unknown): { timeout: number; strategy: ReconnectionStrategy } {
  const name = 'options.reconnect';
  if (reconnect === undefined || reconnect === true) return { timeout: DEFAULT_RECONNECT_TIMEOUT, strategy: defaultStrategy };
  if (reconnect === false) return { timeout: 0, strategy: defaultStrategy };
  if (typeof reconnect === 'number') return { timeout: milliseconds(reconnect, name), strategy: defaultStrategy };
  if (typeof reconnect === 'function' || reconnect instanceof BuiltinStrategy) {
    return { timeout: DEFAULT_RECONNECT_TIMEOUT, strategy: reconnect as ReconnectionStrategy };
  }
  if (reconnect !== null && typeof reconnect === 'object' && !Array.isArray(reconnect)) {
    checkKeys(reconnect, ['timeout', 'strategy'], name);
    const r = reconnect as ReconnectOptions;
    const timeout = r.timeout === undefined ? DEFAULT_RECONNECT_TIMEOUT : milliseconds(r.timeout, `${name}.timeout`);
    const strategy = r.strategy === undefined ? defaultStrategy : checkStrategy(r.strategy, `${name}.strategy`);
    return { timeout, strategy };
  }
  throw fail(name, 'a boolean, a timeout in milliseconds, a strategy, or { timeout, strategy }', reconnect);
}

export interface ConnectOptions {
  /**
   * `ws://host:port/path` (or `wss://`); or give `host` (and `port`, `secure`, `path`) instead.
   * An array gives several servers that serve the same sessions: `connect` tries them in order
   * until one answers, and reconnection attempts rotate through them.
   */
  url?: string | readonly string[];
  host?: string;
  /** Default 80, or 443 when `secure`. */
  port?: number;
  /** `wss://` rather than `ws://`. */
  secure?: boolean;
  /** Default `/`. */
  path?: string;
  /** The principal (anonymous when absent). */
  principal?: string;
  /** The principal's password. */
  credentials?: string;
  /**
   * Omitted or `true`: `{ timeout: 60000, strategy: defaultStrategy }`; a number: the timeout in
   * ms; a strategy; `{ timeout, strategy }`; `false` or `0`: no reconnection.
   */
  reconnect?: boolean | number | ReconnectionStrategy | ReconnectOptions;
  /** Time allowed for each connection, ms (default 10000). */
  connectTimeout?: number;
  /**
   * Time `close()` allows the requests made before it to be sent and confirmed by the server,
   * ms (default 5000). Past it the connection is dropped: a request that was sent rejects with
   * `outcome_unknown`, one that was not with `session_closed`.
   */
  closeTimeout?: number;
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
];

function checkUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new TetherError(`invalid URL ${JSON.stringify(url)}`, 'invalid_url');
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new TetherError(`invalid URL ${JSON.stringify(url)}: use ws:// or wss://`, 'invalid_url');
  }
  return url;
}

function buildUrls(options: ConnectOptions): string[] {
  if (options.url !== undefined) {
    const urls: readonly unknown[] = Array.isArray(options.url) ? options.url : [options.url];
    const expected = 'a non-empty string or a non-empty array of them';
    if (urls.length === 0) throw fail('options.url', expected, options.url);
    urls.forEach((url, i) => {
      if (typeof url !== 'string' || url === '') {
        const array = Array.isArray(options.url);
        throw fail(array ? `options.url[${i}]` : 'options.url', array ? 'a non-empty string' : expected, url);
      }
    });
    for (const key of ['host', 'port', 'secure', 'path'] as const) {
      if (options[key] !== undefined) throw new TypeError(`options.url and options.${key} cannot be used together`);
    }
    return urls as string[];
  }
  return [buildUrl(options)];
}

function buildUrl(options: ConnectOptions): string {
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

interface Settings {
  urls: string[];
  principal: string | undefined;
  credentials: string | undefined;
  reconnectTimeout: number;
  strategy: ReconnectionStrategy;
  connectTimeout: number;
  closeTimeout: number;
}

function normalizeOptions(options: ConnectOptions): Settings {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw fail('options', 'an object', options);
  checkKeys(options, OPTION_KEYS, 'options');
  const urls = buildUrls(options);
  const principal = optionalString(options.principal, 'options.principal');
  const credentials = optionalString(options.credentials, 'options.credentials');
  if (credentials !== undefined && principal === undefined) {
    throw new TypeError('options.credentials needs options.principal');
  }
  const connectTimeout =
    options.connectTimeout === undefined
      ? DEFAULT_CONNECT_TIMEOUT
      : milliseconds(options.connectTimeout, 'options.connectTimeout', { positive: true });
  const closeTimeout =
    options.closeTimeout === undefined ? DEFAULT_CLOSE_TIMEOUT : milliseconds(options.closeTimeout, 'options.closeTimeout');
  const reconnect = normalizeReconnect(options.reconnect);
  return {
    urls,
    principal,
    credentials,
    reconnectTimeout: reconnect.timeout,
    strategy: reconnect.strategy,
    connectTimeout,
    closeTimeout,
  };
}

// ---------------------------------------------------------------------------------------------
// Values

/** A topic value delivered to a subscription. */
export interface TopicUpdate {
  readonly topic: string;
  readonly value: Uint8Array;
  /** `true` for a current value sent as a snapshot (a new subscription's first value, or after a gap). */
  readonly snapshot: boolean;
  /** The update's position in the topic's log. */
  readonly position: { readonly partition: number; readonly offset: number };
}

/** Messages the server could not keep during an outage; snapshots of current values follow. */
export interface GapReport {
  readonly lostFrom: number;
  readonly lostTo: number;
  readonly lostCount: number;
  readonly topics: string[];
}

/** What a session publishes: bytes, text (UTF-8), or any JSON-serialisable value. */
export type PublishValue = Uint8Array | ArrayBuffer | ArrayBufferView | string | number | boolean | null | object;

const encoder = new TextEncoder();

function toBytes(value: PublishValue): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (typeof value === 'string') return encoder.encode(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  const expected = 'a Uint8Array, a string or a JSON-serialisable value';
  if (value === undefined || typeof value === 'function' || typeof value === 'symbol') throw fail('value', expected, value);
  let json: string | undefined;
  try {
    json = JSON.stringify(value);
  } catch (err) {
    throw new TypeError(`value must be ${expected}: ${(err as Error).message}`);
  }
  if (json === undefined) throw fail('value', expected, value);
  return encoder.encode(json);
}

/** Runs a user callback; a throw or a rejected promise goes to `onError`. */
function guarded(fn: (...args: never[]) => unknown, args: unknown[], onError: (err: unknown) => void): void {
  let result: unknown;
  try {
    result = (fn as (...a: unknown[]) => unknown)(...args);
  } catch (err) {
    onError(err);
    return;
  }
  if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
    Promise.resolve(result).then(undefined, onError);
  }
}

// ---------------------------------------------------------------------------------------------
// Events: a small emitter with the shape of Node's EventEmitter (on, once, off, emit, ...).

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Listener = (...args: any[]) => void;

/** Node's `EventEmitter` API, for the events of a session. */
export class EventEmitter<Events extends { [E in keyof Events]: unknown[] }> {
  #listeners = new Map<keyof Events, { fn: Listener; once: boolean }[]>();

  #add<E extends keyof Events>(event: E, fn: (...args: Events[E]) => void, once: boolean, prepend: boolean): this {
    if (typeof fn !== 'function') throw fail('listener', 'a function', fn);
    const list = this.#listeners.get(event) ?? [];
    const entry = { fn: fn as Listener, once };
    if (prepend) list.unshift(entry);
    else list.push(entry);
    this.#listeners.set(event, list);
    return this;
  }

  on<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): this {
    return this.#add(event, listener, false, false);
  }
  addListener<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): this {
    return this.#add(event, listener, false, false);
  }
  once<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): this {
    return this.#add(event, listener, true, false);
  }
  prependListener<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): this {
    return this.#add(event, listener, false, true);
  }
  prependOnceListener<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): this {
    return this.#add(event, listener, true, true);
  }
  off<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): this {
    const list = this.#listeners.get(event);
    if (list) {
      const i = list.findIndex((l) => l.fn === listener);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }
  removeListener<E extends keyof Events>(event: E, listener: (...args: Events[E]) => void): this {
    return this.off(event, listener);
  }
  removeAllListeners(event?: keyof Events): this {
    if (event === undefined) this.#listeners.clear();
    else this.#listeners.delete(event);
    return this;
  }
  listenerCount(event: keyof Events): number {
    return this.#listeners.get(event)?.length ?? 0;
  }
  /** Calls the listeners in order; a listener that throws stops the others (as in Node). */
  emit<E extends keyof Events>(event: E, ...args: Events[E]): boolean {
    const list = this.#listeners.get(event);
    if (!list || list.length === 0) return false;
    for (const l of [...list]) {
      if (l.once) this.off(event, l.fn);
      l.fn(...args);
    }
    return true;
  }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

const kInternal = Symbol('tether.internal');

interface Waiter {
  resolve(result: IteratorResult<TopicUpdate, undefined>): void;
  reject(err: unknown): void;
}

/** The updates of one subscription, in order; ends when the session closes or it is closed. */
export class Subscription implements AsyncIterableIterator<TopicUpdate> {
  #session: Session;
  #queue: TopicUpdate[] = [];
  #waiters: Waiter[] = [];
  #done = false;
  #error: unknown = null;
  #handler: ((update: TopicUpdate) => unknown) | undefined;
  /** The selector (`a/b`, `a/*`, `a/**`). */
  readonly selector: string;
  /** Settles when the server has confirmed (or refused, with a `TetherError`) the subscription. */
  ready!: Promise<void>;

  /** @internal */
  constructor(token: symbol, session: Session, selector: string, handler?: (update: TopicUpdate) => unknown) {
    if (token !== kInternal) throw new TypeError('use session.subscribe(selector)');
    this.#session = session;
    this.#handler = handler;
    this.selector = selector;
  }

  /** @internal */
  [kInternal] = {
    push: (update: TopicUpdate): void => {
      if (this.#done) return;
      if (this.#handler) {
        this.#session[kInternal].guard(this.#handler, [update]);
      } else if (this.#waiters.length > 0) {
        this.#waiters.shift()?.resolve({ value: update, done: false });
      } else {
        this.#queue.push(update);
      }
    },
    end: (error?: unknown): void => {
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

  /** The next update; rejects once if the subscription was refused; then `{ done: true }`. */
  next(): Promise<IteratorResult<TopicUpdate, undefined>> {
    const queued = this.#queue.shift();
    if (queued !== undefined) return Promise.resolve({ value: queued, done: false });
    if (this.#error) {
      const error = this.#error;
      this.#error = null;
      return Promise.reject(error);
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** Leaving a `for await` loop early closes the subscription. */
  async return(): Promise<IteratorResult<TopicUpdate, undefined>> {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Stops local delivery and removes the selector from the server (for every local subscription with this selector). */
  async close(): Promise<void> {
    if (this.#done) return;
    this.#queue.length = 0;
    this[kInternal].end();
    await this.#session[kInternal].unsubscribe(this.selector);
  }
}

// ---------------------------------------------------------------------------------------------
// Session

/** The events of a session and their arguments. */
export interface SessionEvents {
  /** The connection was lost; the strategy decides when to reconnect. */
  disconnect: [reason: CloseReason];
  /** The session reconnected: same session id, subscriptions and messages. */
  reconnect: [];
  /** The session closed (by `close()`, the server, a failure, the strategy or the timeout). */
  close: [reason: CloseReason];
  /**
   * A callback of yours threw (a strategy, a handler, an event listener). With no `error`
   * listener it is reported to the page (`reportError`) instead: never an uncaught exception.
   */
  error: [error: unknown];
  /** Every state transition, in order. */
  state: [oldState: SessionState, newState: SessionState, reason: CloseReason | undefined];
  /** Messages were lost during an outage (see {@link GapReport}). */
  gap: [report: GapReport];
}

const CLOSED_STATES: readonly string[] = ['CLOSED_BY_CLIENT', 'CLOSED_BY_SERVER', 'CLOSED_FAILED'];

/** The page's clock, which the core takes as `now`. */
const now = (): number => performance.now();

interface Settle {
  resolve(): void;
  reject(err: unknown): void;
}

/* The core's actions (see bindings/browser/src/lib.rs). */
type Action =
  | { type: 'connect'; conn: number; url: string; protocols: string[] }
  | { type: 'send'; conn: number; bytes: Uint8Array }
  | { type: 'disconnect'; conn: number }
  | { type: 'state'; old: SessionState; new: SessionState; reason: CloseReason | null }
  | {
      type: 'attempt';
      attempt: number;
      number: number;
      elapsed: number;
      remaining: number;
      reason: CloseReason;
      retryAfter: number | null;
    }
  | {
      type: 'update';
      subs: number[];
      topic: string;
      value: Uint8Array;
      snapshot: boolean;
      partition: number;
      offset: number;
    }
  | { type: 'completed'; request: number; error: FailureInfo | null }
  | { type: 'end'; sub: number }
  | { type: 'gap'; lostFrom: number; lostTo: number; lostCount: number; topics: string[] };

/** A session with a Tether server; made by {@link connect}. */
export class Session extends EventEmitter<SessionEvents> {
  #core: Core | null;
  #strategy: StrategyFunction | null;
  #sockets = new Map<number, WebSocket>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  #pumping = false;
  #requests = new Map<number, Settle>();
  #subs = new Map<number, Subscription>();
  #nextSub = 1;
  #state: SessionState = 'CONNECTING';
  #closeReason: CloseReason | null = null;
  #sessionId: string | undefined;
  #reconnectionTimeout = 0;
  #opened: Promise<void>;
  #settleOpened!: Settle;
  #closed: Promise<CloseReason>;
  #resolveClosed!: (reason: CloseReason) => void;

  /** @internal */
  constructor(token: symbol, settings: Settings) {
    if (token !== kInternal) throw new TypeError('use connect(options) to open a session');
    super();
    this.#opened = new Promise((resolve, reject) => {
      this.#settleOpened = { resolve, reject };
    });
    this.#closed = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    const builtin = settings.strategy instanceof BuiltinStrategy ? settings.strategy : null;
    this.#strategy = builtin ? null : (settings.strategy as StrategyFunction);
    try {
      this.#core = new Core(
        settings.urls,
        settings.principal,
        settings.credentials,
        settings.reconnectTimeout,
        settings.connectTimeout,
        settings.closeTimeout,
        builtin ? schedule(builtin[kSpec]) : undefined,
        now(),
      );
    } catch (err) {
      throw toError(err);
    }
    this.#pump();
  }

  /** @internal */
  [kInternal] = {
    opened: (): Promise<void> => this.#opened,
    guard: (fn: (...args: never[]) => unknown, args: unknown[]): void => guarded(fn, args, (err) => this.#report(err)),
    unsubscribe: async (selector: string): Promise<void> => {
      try {
        await this.#request((core, t) => core.unsubscribe(selector, t));
      } catch (err) {
        // A closed session has no subscriptions left, whether or not the server saw the request.
        const code = (err as TetherError).code;
        if (code !== 'session_closed' && code !== 'outcome_unknown') throw err;
      }
    },
  };

  /** Carries out the core's actions, in order, then arms the timer. Never re-entered. */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#core) {
        const action = this.#core.pollAction() as Action | undefined;
        if (action === undefined) break;
        try {
          this.#handle(action);
        } catch (err) {
          this.#report(err);
        }
      }
    } finally {
      this.#pumping = false;
    }
    this.#arm();
  }

  #arm(): void {
    const at = this.#core?.pollTimeout();
    if (at === this.#timerAt && this.#timer !== undefined) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = at;
    if (at === undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = undefined;
      this.#core?.onTimer(now());
      this.#pump();
    }, Math.max(0, Math.ceil(at - now())));
  }

  #handle(action: Action): void {
    const core = this.#core;
    if (!core) return;
    switch (action.type) {
      case 'connect':
        this.#open(action.conn, action.url, action.protocols);
        break;
      case 'send':
        try {
          this.#sockets.get(action.conn)?.send(action.bytes);
        } catch {
          // The socket is closing: its close event follows and ends the connection.
        }
        break;
      case 'disconnect': {
        const ws = this.#sockets.get(action.conn);
        this.#sockets.delete(action.conn);
        if (ws) {
          ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
          ws.close();
        }
        break;
      }
      case 'state':
        this.#onState(action.old, action.new, action.reason ?? undefined);
        break;
      case 'attempt':
        this.#onAttempt(action);
        break;
      case 'update': {
        const update: TopicUpdate = {
          topic: action.topic,
          value: action.value,
          snapshot: action.snapshot,
          position: { partition: action.partition, offset: action.offset },
        };
        for (const sub of action.subs) this.#subs.get(sub)?.[kInternal].push(update);
        break;
      }
      case 'completed': {
        const settle = this.#requests.get(action.request);
        this.#requests.delete(action.request);
        if (action.error) settle?.reject(toError(action.error));
        else settle?.resolve();
        break;
      }
      case 'end':
        this.#subs.get(action.sub)?.[kInternal].end();
        this.#subs.delete(action.sub);
        break;
      case 'gap':
        this.#emit('gap', {
          lostFrom: action.lostFrom,
          lostTo: action.lostTo,
          lostCount: action.lostCount,
          topics: action.topics,
        });
        break;
    }
  }

  /** Opens connection `conn`; its events go to the core (those of a replaced one are ignored). */
  #open(conn: number, url: string, protocols: string[]): void {
    const core = this.#core;
    if (!core) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, protocols);
    } catch {
      // A URL the browser refuses (a ws:// URL from an https page, say): a failed connection.
      core.onClose(conn, now());
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.#sockets.set(conn, ws);
    ws.onopen = () => {
      this.#core?.onOpen(conn, ws.protocol, now());
      this.#pump();
    };
    ws.onmessage = (event: MessageEvent) => {
      if (typeof event.data === 'string') this.#core?.onText(conn, now());
      else this.#core?.onMessage(conn, new Uint8Array(event.data as ArrayBuffer), now());
      this.#pump();
    };
    ws.onclose = () => {
      this.#sockets.delete(conn);
      this.#core?.onClose(conn, now());
      this.#pump();
    };
  }

  #onState(old: SessionState, state: SessionState, reason: CloseReason | undefined): void {
    this.#state = state;
    if (state === 'CONNECTED_ACTIVE' && this.#core) {
      this.#sessionId = this.#core.sessionId;
      this.#reconnectionTimeout = this.#core.reconnectionTimeout;
    }
    if (old === 'CONNECTING' && state === 'CONNECTED_ACTIVE') this.#settleOpened.resolve();
    if (old === 'CONNECTING' && CLOSED_STATES.includes(state)) {
      // connect() rejects; nobody has the session to hear its events.
      this.#settleOpened.reject(toError(this.#core?.openFailure ?? { code: reason, reason, message: String(reason) }));
      this.#finished(reason ?? 'closed_by_client');
      return;
    }
    this.#emit('state', old, state, reason);
    if (state === 'RECOVERING_RECONNECT') {
      this.#emit('disconnect', reason as CloseReason);
    } else if (old === 'RECOVERING_RECONNECT' && state === 'CONNECTED_ACTIVE') {
      this.#emit('reconnect');
    }
    if (CLOSED_STATES.includes(state)) {
      this.#finished(reason ?? 'closed_by_client');
      this.#emit('close', this.#closeReason as CloseReason);
    }
  }

  /** The session is closed: no timer, no socket, the core's memory released. */
  #finished(reason: CloseReason): void {
    this.#closeReason = reason;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const ws of this.#sockets.values()) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      ws.close();
    }
    this.#sockets.clear();
    // Requests and subscriptions were settled by the actions before the closed state.
    const core = this.#core;
    this.#core = null;
    queueMicrotask(() => core?.free());
    this.#resolveClosed(reason);
  }

  #onAttempt(action: Extract<Action, { type: 'attempt' }>): void {
    const id = action.attempt;
    const handle: AttemptHandle = {
      start: () => this.#decide((core, t) => core.start(id, t)),
      abort: () => this.#decide((core, t) => core.abort(id, t)),
    };
    const info: AttemptInfo = {
      number: action.number,
      elapsed: action.elapsed,
      remaining: action.remaining,
      reason: action.reason,
      retryAfter: action.retryAfter,
    };
    // For `builtin.decide(info)`: not enumerable, so logging the facts shows only the facts.
    Object.defineProperty(info, kAttempt, { value: handle });
    Object.freeze(info);
    const strategy = this.#strategy;
    if (typeof strategy !== 'function') {
      handle.abort();
      return;
    }
    // A strategy that throws (or rejects) aborts: the session closes, reason reconnect_aborted,
    // unless it had already decided.
    guarded(strategy, [handle.start, handle.abort, action.reason, info], (err) => {
      handle.abort();
      this.#report(err);
    });
  }

  #decide(decide: (core: Core, t: number) => boolean): boolean {
    const core = this.#core;
    if (!core) return false;
    const decided = decide(core, now());
    this.#pump();
    return decided;
  }

  /** Emits, turning a listener's throw into an `error` event. */
  #emit<E extends keyof SessionEvents>(name: E, ...args: SessionEvents[E]): void {
    try {
      this.emit(name, ...args);
    } catch (err) {
      this.#report(err);
    }
  }

  /** A user callback failed: an `error` event if anyone listens, else the page hears of it. */
  #report(err: unknown): void {
    if (this.listenerCount('error') > 0) {
      try {
        this.emit('error', err);
        return;
      } catch (inner) {
        err = inner;
      }
    }
    const error = err instanceof Error ? err : new Error(`a tether callback threw ${String(err)}`);
    const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
    if (typeof report === 'function') report(error);
    else console.error(error);
  }

  /** Makes a request; resolves or rejects when the core settles it. */
  #request(make: (core: Core, t: number) => number): Promise<void> {
    const core = this.#core;
    if (!core) {
      const reason = this.#closeReason ?? 'closed_by_client';
      return Promise.reject(new TetherError(`the session is closed (${reason})`, 'session_closed', reason));
    }
    let request: number;
    try {
      request = make(core, now());
    } catch (err) {
      return Promise.reject(toError(err));
    }
    const settled = new Promise<void>((resolve, reject) => this.#requests.set(request, { resolve, reject }));
    this.#pump();
    return settled;
  }

  /** The session id: 32 hex digits, the same after every reconnection. */
  get sessionId(): string {
    return this.#sessionId ?? '';
  }

  /** The state as of the last `state` event. */
  get state(): SessionState {
    return this.#state;
  }

  /** Why the session closed, once it has. */
  get closeReason(): CloseReason | null {
    return this.#closeReason;
  }

  /** The reconnection timeout in force, ms (the smaller of the requested and the server's). */
  get reconnectionTimeout(): number {
    return this.#reconnectionTimeout;
  }

  /** Resolves with the close reason once the session is closed, whatever closed it. */
  get closed(): Promise<CloseReason> {
    return this.#closed;
  }

  /**
   * Queues a publish at once, in call order (also while disconnected), and resolves when the
   * server has applied it: exactly once, in order, across reconnections. Rejects with a
   * `TetherError` (`access_denied`, `queue_full`, `session_closed`, `outcome_unknown`, ...) or
   * a `TypeError` for a value that is not bytes, a string or JSON-serialisable.
   */
  publish(topic: string, value: PublishValue): Promise<void> {
    if (typeof topic !== 'string') return Promise.reject(fail('topic', 'a string', topic));
    let bytes: Uint8Array;
    try {
      bytes = toBytes(value);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#request((core, t) => core.publish(topic, bytes, t));
  }

  /** A subscription to iterate with `for await`; queued at once, in call order. */
  subscribe(selector: string): Subscription;
  /** Calls `handler` for each update; resolves once the server confirmed the subscription. */
  subscribe(selector: string, handler: (update: TopicUpdate) => unknown): Promise<Subscription>;
  subscribe(selector: string, handler?: (update: TopicUpdate) => unknown): Subscription | Promise<Subscription> {
    if (typeof selector !== 'string') throw fail('selector', 'a string', selector);
    if (handler !== undefined && typeof handler !== 'function') throw fail('handler', 'a function', handler);
    const id = this.#nextSub++;
    const sub = new Subscription(kInternal, this, selector, handler);
    this.#subs.set(id, sub);
    sub.ready = this.#request((core, t) => core.subscribe(selector, id, t)).catch((err: unknown) => {
      this.#subs.delete(id);
      sub[kInternal].end(err);
      throw err;
    });
    if (handler !== undefined) return sub.ready.then(() => sub);
    // The error also reaches the iterator: an unobserved `ready` must not be an unhandled rejection.
    sub.ready.catch(() => {});
    return sub;
  }

  /**
   * Closes the session; resolves once it is closed and the `close` event was emitted. Requests
   * made before are sent first and the server confirms them before the session closes (within
   * `closeTimeout`, default 5 s); requests made after reject with `session_closed`.
   */
  async close(): Promise<void> {
    const core = this.#core;
    if (core) {
      core.close(now());
      this.#pump();
    }
    await this.#closed;
  }
}

let loading: Promise<unknown> | null = null;

/**
 * Loads the WebAssembly module (`connect` does it on first use). By default it is fetched from
 * beside this file (`wasm/tether_wasm_bg.wasm`); give another URL or the bytes to load it from
 * elsewhere.
 */
export function load(wasm?: URL | string | BufferSource | WebAssembly.Module): Promise<unknown> {
  loading ??= wasm === undefined ? init() : init({ module_or_path: wasm });
  return loading;
}

/**
 * Opens a session; resolves once it is connected. Rejects with a `TypeError` naming the option
 * for invalid options, or a {@link TetherError} (`authentication_failed`, `connection_error`,
 * `invalid_url`, ...).
 */
export async function connect(options: ConnectOptions): Promise<Session> {
  const settings = normalizeOptions(options);
  settings.urls.forEach(checkUrl);
  await load();
  const session = new Session(kInternal, settings);
  await session[kInternal].opened();
  return session;
}
