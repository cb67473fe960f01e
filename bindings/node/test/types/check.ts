// Compiled by `tsc -p test/types` (never run): every declaration of index.d.ts used as the
// README and the tests use it, and misuses that must not compile (@ts-expect-error).
import {
  connect,
  constant,
  exponentialBackoff,
  abortImmediately,
  defaultStrategy,
  TetherError,
  Session,
  Subscription,
  CLOSE_REASONS,
  type AttemptInfo,
  type CloseReason,
  type SessionState,
  type StrategyFunction,
  type TopicUpdate,
  type GapReport,
} from 'tether-session';

async function main(): Promise<void> {
  const strategy: StrategyFunction = (start, abort, reason, attempt: AttemptInfo) => {
    const r: CloseReason = reason;
    const n: number = attempt.number + attempt.elapsed + attempt.remaining;
    const hint: number | null = attempt.retryAfter;
    if (n > 25 || r === 'idle_connection') {
      const decided: boolean = abort();
      void decided;
    } else if (r === 'server_draining' || r === 'server_busy') {
      setTimeout(start, hint ?? 1000);
    } else {
      setTimeout(start, 100);
    }
  };
  const logged: StrategyFunction = (_start, _abort, _reason, attempt) => {
    defaultStrategy.decide(attempt);
  };
  const session: Session = await connect({
    host: 'localhost',
    port: 8080,
    secure: false,
    path: '/',
    principal: 'control',
    credentials: 'password',
    reconnect: { timeout: 600000, strategy },
  });
  await connect({ url: 'ws://localhost:8080' });
  await connect({ url: ['ws://a:8080', 'ws://b:8080'], reconnect: logged });
  await connect({ url: 'ws://localhost:8080', reconnect: true });
  await connect({ url: 'ws://localhost:8080', reconnect: false });
  await connect({ url: 'ws://localhost:8080', reconnect: 30000 });
  await connect({ url: 'ws://localhost:8080', reconnect: (start) => start() });
  await connect({ url: 'ws://localhost:8080', reconnect: async (_start, abort) => void abort() });
  await connect({ url: 'ws://localhost:8080', reconnect: constant(500, { maxAttempts: 3 }) });
  await connect({
    url: 'ws://localhost:8080',
    connectTimeout: 5000,
    closeTimeout: 2000,
    reconnect: {
      strategy: exponentialBackoff({
        initialDelay: 100,
        multiplier: 2,
        maxDelay: 5000,
        jitter: 'decorrelated',
        maxAttempts: 10,
        quickFirstAttempt: 50,
      }),
    },
  });
  await connect({ url: 'ws://localhost:8080', reconnect: abortImmediately });
  await connect({ url: 'ws://localhost:8080', reconnect: { strategy: defaultStrategy } });

  const id: string = session.sessionId;
  const state: SessionState = session.state;
  const reason: CloseReason | null = session.closeReason;
  const timeout: number = session.reconnectionTimeout;
  const closed: Promise<CloseReason> = session.closed;
  void [id, state, reason, timeout, closed, CLOSE_REASONS.length];

  session.on('disconnect', (why: CloseReason) => void why);
  session.on('reconnect', () => {});
  session.once('close', (why: CloseReason) => void why);
  session.on('error', (err: unknown) => void err);
  session.on('state', (oldState: SessionState, newState: SessionState, why: CloseReason | undefined) => {
    void [oldState, newState, why];
  });
  session.on('gap', (report: GapReport) => void report.lostCount);
  session.off('reconnect', () => {});

  await session.publish('a/b', 'text');
  await session.publish('a/b', Buffer.from('bytes'));
  await session.publish('a/b', new Uint8Array([1]));
  await session.publish('a/b', { json: [1, 2, 3] });

  const sub: Subscription = session.subscribe('a/**');
  await sub.ready;
  for await (const update of sub) {
    const u: TopicUpdate = update;
    const text: string = u.value.toString('utf8');
    const where: number = u.position.partition + u.position.offset;
    void [text, where, u.topic, u.snapshot];
    break;
  }
  const first: IteratorResult<TopicUpdate, undefined> = await sub.next();
  void first;
  const handled: Subscription = await session.subscribe('a/*', (update) => {
    void update.topic;
  });
  await handled.close();

  try {
    await session.publish('x', 'y');
  } catch (err) {
    if (err instanceof TetherError) {
      const code: string = err.code;
      const closeReason: CloseReason | undefined = err.reason;
      if (err.code === 'access_denied' || err.code === 'session_closed' || err.code === 'outcome_unknown') {
        void [code, closeReason];
      }
    }
  }
  await session.close();

  // @ts-expect-error: reconnect is not a string
  await connect({ url: 'ws://x', reconnect: 'always' });
  // @ts-expect-error: unknown option
  await connect({ url: 'ws://x', hots: 'typo' });
  // @ts-expect-error: unknown event
  session.on('reconnected', () => {});
  // @ts-expect-error: disconnect gives a close reason, not a number
  session.on('disconnect', (why: number) => void why);
  // @ts-expect-error: unknown jitter
  exponentialBackoff({ jitter: 'lots' });
  // @ts-expect-error: not constructible
  new Session();
  // @ts-expect-error: a strategy is not a number
  await connect({ url: 'ws://x', reconnect: { strategy: 5 } });
  // @ts-expect-error: URLs are strings
  await connect({ url: ['ws://x', 8080] });
  // @ts-expect-error: decide takes the attempt a strategy function was given
  defaultStrategy.decide();
}

void main;
