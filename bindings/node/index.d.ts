// Type definitions for tether-session (hand-written: the JavaScript wrapper in index.js is the
// public API; test/types/check.ts exercises every declaration with `tsc --noEmit`).

/// <reference types="node" />
import { EventEmitter } from 'node:events';

/** The states of a session (DESIGN §2). The three closed states are terminal. */
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
export declare const CLOSE_REASONS: readonly CloseReason[];

/**
 * The `code` of a {@link TetherError}:
 * - a close reason: `connect()` failed for that reason (`authentication_failed`,
 *   `connection_error`, ...);
 * - `session_closed`: the session is closed (`reason` says why); the request was never sent
 *   and certainly not applied;
 * - `outcome_unknown`: the session closed (`reason` says why) after the request was sent and
 *   before the server confirmed it: it may or may not have been applied (check before
 *   retrying it);
 * - a refusal by the server, the session staying open: `access_denied`, `invalid_selector`,
 *   `invalid_topic`, `not_subscribed`, `too_large` (the core's names, the same in every
 *   binding);
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
  | 'invalid_url'
  | 'invalid_argument'
  | 'queue_full'
  | 'error';

/** An operation failed. Branch on `code` (and `reason`), not on the message. */
export declare class TetherError extends Error {
  private constructor();
  readonly name: 'TetherError';
  /** What went wrong; see {@link ErrorCode}. */
  readonly code: ErrorCode;
  /** The close reason, for errors that carry one (`connect` failures, `session_closed`, `outcome_unknown`). */
  readonly reason: CloseReason | undefined;
}

/** Facts about the attempt a strategy is asked to decide. */
export interface AttemptInfo {
  /** 1 for the first attempt after a disconnection, then 2, 3, ... */
  readonly number: number;
  /** Time since the connection was lost, ms. */
  readonly elapsed: number;
  /** Time left before the reconnection timeout closes the session, ms. */
  readonly remaining: number;
  /**
   * Why the connection was lost (first attempt) or why the previous attempt failed:
   * `server_draining` when the server is going away, `server_busy` when it cannot take the
   * session now.
   */
  readonly reason: CloseReason;
  /**
   * How long the server asked the session to wait before trying again, ms (with
   * `server_draining` or `server_busy`); `null` when it did not. The built-in strategies wait
   * at least that long, spread over `[retryAfter, 2 × retryAfter)`; a strategy of yours should
   * too: `setTimeout(start, attempt.retryAfter ?? myDelay)`.
   */
  readonly retryAfter: number | null;
}

/**
 * A reconnection strategy written in JavaScript, called on the JavaScript thread on entering
 * `RECOVERING_RECONNECT` and after each failed attempt while time remains. Call `start()` (try
 * now) or `abort()` (close the session, reason `reconnect_aborted`), now or later (e.g. from a
 * timer). The first call wins and returns `true`; later calls return `false`. What it returns
 * is ignored, except a promise: a strategy that throws, or returns a promise that rejects,
 * aborts, and the error becomes an `error` event.
 */
export type StrategyFunction = (
  start: () => boolean,
  abort: () => boolean,
  reason: CloseReason,
  attempt: AttemptInfo,
) => unknown;

/** A built-in strategy, carried out by the Tether core. */
export declare class BuiltinStrategy {
  private constructor();
  readonly kind: 'default' | 'constant' | 'exponentialBackoff' | 'abortImmediately';
  /**
   * Lets this built-in decide an attempt a strategy function was given (its fourth argument):
   * start it after the built-in's delay (at least the server's `retryAfter`), or abort. For a
   * strategy function that logs or counts attempts and leaves the decision to a built-in.
   * Throws a `TypeError` for anything else.
   */
  decide(attempt: AttemptInfo): void;
}

export type ReconnectionStrategy = StrategyFunction | BuiltinStrategy;

/** Try again after `delay` ms every time; abort instead of attempt `maxAttempts + 1`. */
export declare function constant(delay: number, options?: { maxAttempts?: number }): BuiltinStrategy;

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

/** Exponential backoff with jitter. */
export declare function exponentialBackoff(options?: ExponentialBackoffOptions): BuiltinStrategy;

/** Never reconnect: the first attempt aborts. */
export declare const abortImmediately: BuiltinStrategy;

/** The default: first attempt after a random 0–100 ms, then full-jitter backoff 250 ms × 2, up to 10 s. */
export declare const defaultStrategy: BuiltinStrategy;

export interface ReconnectOptions {
  /** How long to keep trying after a disconnection, ms (default 60000; 0 disables). */
  timeout?: number;
  /** Who decides when to try (default {@link defaultStrategy}). */
  strategy?: ReconnectionStrategy;
  /**
   * With a strategy function: called after an attempt it started succeeded (the session is
   * `CONNECTED_ACTIVE` again; a good moment to reset a backoff), with that attempt's facts.
   */
  onSuccess?: (attempt: AttemptFacts) => unknown;
  /**
   * With a strategy function: called after an attempt it started failed, with its facts and
   * why it failed (the strategy is called again while time remains).
   */
  onFailure?: (attempt: AttemptFacts, reason: CloseReason) => unknown;
}

/** The facts of an attempt that ended (for `onSuccess` / `onFailure`). */
export interface AttemptFacts {
  readonly number: number;
  /** ms since the connection was lost, when the attempt was decided. */
  readonly elapsed: number;
  /** ms left before the reconnection timeout, when the attempt was decided. */
  readonly remaining: number;
  /** Why the connection was lost (first attempt) or why the previous attempt failed. */
  readonly reason: CloseReason;
  /** The server's retry-after hint, ms, or `null`. */
  readonly retryAfter: number | null;
}

export interface ConnectOptions {
  /**
   * `ws://host:port/path`; or give `host` (and `port`, `secure`, `path`) instead. An array
   * gives several servers that serve the same sessions (one server restarted in place, or the
   * nodes of a cluster): `connect` tries them in order until one answers, and reconnection
   * attempts rotate through them (an attempt goes back to the server the session was on, then
   * tries the next; after a server asked the session to go away, `server_draining`, the first
   * attempt tries the next).
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
  /** PEM text of certificates (a private CA) trusted for `wss://` besides the system's roots. */
  tlsRootCertificates?: string | Buffer | ReadonlyArray<string | Buffer>;
  /** Close with `lost_messages` rather than resume with a gap report (default false). */
  strict?: boolean;
  /**
   * Most requests kept until the server acknowledges them, including those made while
   * disconnected (default 10000); past it a publish while disconnected rejects with `queue_full`.
   */
  maxQueuedRequests?: number;
  /** Most bytes kept until the server acknowledges them (default 8 MiB). */
  maxQueuedBytes?: number;
  /**
   * The ping period to ask the server for, ms (granted within its bounds, by default 1 s to
   * 60 s; see `Session.pingPeriod`). A connection silent for 1.5 periods is taken as dead.
   */
  pingPeriod?: number;
  /**
   * Most updates waiting for the application (default 10000): past it the session stops
   * reading, the server's slow-consumer handling ends the connection and the resume reports
   * the gap (a `gap` event).
   */
  deliveryLimit?: number;
}

/** A topic value delivered to a subscription. */
export interface TopicUpdate {
  readonly topic: string;
  readonly value: Buffer;
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
export type PublishValue = Buffer | Uint8Array | ArrayBuffer | ArrayBufferView | string | number | boolean | null | object;

/** The updates of one subscription, in order; ends when the session closes or it is closed. */
export declare class Subscription implements AsyncIterableIterator<TopicUpdate> {
  private constructor();
  /** The selector (`a/b`, `a/*`, `a/**`). */
  readonly selector: string;
  /** Settles when the server has confirmed (or refused, with a `TetherError`) the subscription. */
  readonly ready: Promise<void>;
  /** The next update; rejects once if the subscription was refused; then `{ done: true }`. */
  next(): Promise<IteratorResult<TopicUpdate, undefined>>;
  /** Leaving a `for await` loop early closes the subscription. */
  return(): Promise<IteratorResult<TopicUpdate, undefined>>;
  [Symbol.asyncIterator](): this;
  /** Stops local delivery and removes the selector from the server (for every local subscription with this selector). */
  close(): Promise<void>;
}

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
   * listener it becomes a process warning instead: never an uncaught exception.
   */
  error: [error: unknown];
  /** Every state transition, in order. */
  state: [oldState: SessionState, newState: SessionState, reason: CloseReason | undefined];
  /** Messages were lost during an outage (see {@link GapReport}). */
  gap: [report: GapReport];
}

/** A session with a Tether server; made by {@link connect}. */
export declare class Session extends EventEmitter {
  private constructor();
  /** The session id: 32 hex digits, the same after every reconnection. */
  readonly sessionId: string;
  /** The state as of the last `state` event. */
  readonly state: SessionState;
  /** Why the session closed, once it has. */
  readonly closeReason: CloseReason | null;
  /** The reconnection timeout in force, ms (the smaller of the requested and the server's). */
  readonly reconnectionTimeout: number;
  /** The ping period the server granted on the current connection, ms; `null` while not connected. */
  readonly pingPeriod: number | null;
  /**
   * Lets the process end while the session is open (as `timer.unref()`); the session is
   * closed when the process exits. Returns the session.
   */
  unref(): this;
  /** Resolves with the close reason once the session is closed, whatever closed it. */
  readonly closed: Promise<CloseReason>;

  /**
   * Queues a publish at once, in call order (also while disconnected), and resolves when the
   * server has applied it: exactly once, in order, across reconnections. Rejects with a
   * `TetherError` (`access_denied`, `queue_full`, `session_closed`, `outcome_unknown`, ...) or
   * a `TypeError` for a value that is not a Buffer, a string or JSON-serialisable. A publish
   * made before `close()` is sent and confirmed before the session closes.
   */
  publish(topic: string, value: PublishValue): Promise<void>;

  /** A subscription to iterate with `for await`; queued at once, in call order. */
  subscribe(selector: string): Subscription;
  /** Calls `handler` for each update; resolves once the server confirmed the subscription. */
  subscribe(selector: string, handler: (update: TopicUpdate) => unknown): Promise<Subscription>;

  /**
   * Closes the session; resolves once it is closed and the `close` event was emitted. Requests
   * made before are sent first and the server confirms them before the session closes (within
   * `closeTimeout`, default 5 s); requests made after reject with `session_closed`.
   */
  close(): Promise<void>;

  on<E extends keyof SessionEvents>(event: E, listener: (...args: SessionEvents[E]) => void): this;
  once<E extends keyof SessionEvents>(event: E, listener: (...args: SessionEvents[E]) => void): this;
  off<E extends keyof SessionEvents>(event: E, listener: (...args: SessionEvents[E]) => void): this;
  addListener<E extends keyof SessionEvents>(event: E, listener: (...args: SessionEvents[E]) => void): this;
  removeListener<E extends keyof SessionEvents>(event: E, listener: (...args: SessionEvents[E]) => void): this;
  prependListener<E extends keyof SessionEvents>(event: E, listener: (...args: SessionEvents[E]) => void): this;
  prependOnceListener<E extends keyof SessionEvents>(event: E, listener: (...args: SessionEvents[E]) => void): this;
  emit<E extends keyof SessionEvents>(event: E, ...args: SessionEvents[E]): boolean;
}

/**
 * Opens a session; resolves once it is connected. Rejects with a `TypeError` naming the option
 * for invalid options, or a {@link TetherError} (`authentication_failed`, `connection_error`,
 * `invalid_url`, ...).
 */
export declare function connect(options: ConnectOptions): Promise<Session>;
