'use strict';
// The Node.js runner of the conformance scenarios (conformance/scenarios.txt): every scenario
// against the real server behind the fault proxy (both from the fixture,
// tether-conformance-fixture), through this package's API. A scenario whose step the package
// cannot do yet is skipped as "not supported: <reason>", never passed. Results go to
// target/conformance/node.txt for `cargo xtask conformance`.

const { test, after } = require('node:test');
const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const readline = require('node:readline');

const tether = require('..');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.TETHER_BIN_DIR || path.join(ROOT, 'target', 'debug');
const RESULTS = process.env.TETHER_CONFORMANCE_OUT || path.join(ROOT, 'target', 'conformance');
const GUARD_MS = 20000;
const PASSWORD = 'password';

function load() {
  const scenarios = [];
  const text = fs.readFileSync(path.join(ROOT, 'conformance', 'scenarios.txt'), 'utf8');
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const [verb, ...words] = line.split(/\s+/);
    if (verb === 'scenario') scenarios.push({ name: words[0], steps: [] });
    else if (verb !== 'about') {
      const args = {};
      for (const w of words) {
        const at = w.indexOf('=');
        args[w.slice(0, at)] = w.slice(at + 1);
      }
      scenarios[scenarios.length - 1].steps.push({ verb, args, line: i + 1 });
    }
  });
  return scenarios;
}

class Unsupported extends Error {}
class Failed extends Error {}

/** The fixture process and its HTTP API. */
class Fixture {
  static async start() {
    const file = path.join(BIN, 'tether-conformance-fixture');
    if (!fs.existsSync(file)) throw new Error(`${file} is missing: cargo build -p tether-conformance`);
    const child = spawn(file, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    const line = await new Promise((resolve, reject) => {
      readline.createInterface({ input: child.stdout }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`the fixture exited (${code})`)));
    });
    if (!line.startsWith('control=')) throw new Error(`the fixture said ${line}`);
    const f = new Fixture();
    f.child = child;
    f.control = line.slice('control='.length);
    return f;
  }

  call(what, query = {}) {
    const q = new URLSearchParams(query).toString();
    const url = `http://${this.control}/${what}${q ? `?${q}` : ''}`;
    return new Promise((resolve, reject) => {
      http
        .get(url, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c) => {
            body += c;
          });
          res.on('end', () => {
            const [word, ...rest] = body.trim().split(' ');
            if (word !== 'ok') return reject(new Failed(`fixture /${what}: ${body.trim()}`));
            const out = {};
            for (const w of rest) {
              const at = w.indexOf('=');
              if (at > 0) out[w.slice(0, at)] = w.slice(at + 1);
            }
            resolve(out);
          });
        })
        .on('error', reject);
    });
  }

  stop() {
    this.child.stdin.end();
  }
}

function errorName(err) {
  if (!(err instanceof tether.TetherError)) return `other (${err && err.message})`;
  if (err.code === 'session_closed') return 'closed';
  return err.code;
}

const CHILD = `
const tether = require(${JSON.stringify(path.resolve(__dirname, '..'))});
(async () => {
  const session = await tether.connect({ url: process.argv[1], principal: 'control', credentials: 'password' });
  const got = new Promise((resolve) => session.subscribe('exit/t', (u) => resolve(u.value.toString())));
  await got.ready;
  await session.publish('exit/t', 'bye');
  if ((await got) !== 'bye') throw new Error('wrong update');
  console.log('done');
  session.unref(); // left open: no close, no shutdown
})();
`;

function bounded(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failed(`timed out waiting for ${what}`)), GUARD_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

class Runner {
  constructor(fixture) {
    this.fixture = fixture;
    this.env = {};
    this.session = null;
    this.changes = [];
    this.gaps = [];
    this.attempts = [];
    this.hooks = { success: 0, failure: 0 };
    this.updates = new Map();
    this.cursor = 0;
    this.timeout = 60000;
    this.lastElapsed = 0;
    this.sends = new Map();
    this.gates = new Map();
    this.waiters = new Set();
  }

  touch() {
    for (const w of [...this.waiters]) w();
  }

  /** Waits until `check()` returns something other than undefined/false. */
  wait(what, check) {
    return new Promise((resolve, reject) => {
      const poll = () => {
        const got = check();
        if (got !== undefined && got !== false) {
          this.waiters.delete(poll);
          clearTimeout(timer);
          resolve(got);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.delete(poll);
        reject(new Failed(`timed out waiting for ${what}`));
      }, GUARD_MS);
      this.waiters.add(poll);
      poll();
    });
  }

  needSession() {
    if (!this.session) throw new Failed('no session: `open` first');
    return this.session;
  }

  async finish() {
    for (const gate of this.gates.values()) gate.open();
    if (this.session) await bounded(this.session.close(), 'the session to close');
  }

  expect(a, got) {
    const want = a.expect || 'ok';
    if (got !== want) throw new Failed(`outcome ${got}, expected ${want}`);
  }

  async outcome(promise) {
    try {
      await bounded(promise, 'a publish');
      return 'ok';
    } catch (err) {
      if (err instanceof Failed) throw err;
      return errorName(err);
    }
  }

  async step(verb, a) {
    const ms = (k, d) => Number(a[k] ?? d);
    switch (verb) {
      case 'env':
        this.env = await this.fixture.call('env', a);
        return;
      case 'open': {
        if ('timeout_ms' in a) this.timeout = ms('timeout_ms');
        let strategy;
        switch (a.strategy) {
          case undefined:
            break;
          case 'manual':
            strategy = (start, abort, reason, info) => {
              this.attempts.push({ start, abort, info });
              this.touch();
            };
            break;
          case 'default':
            strategy = tether.defaultStrategy;
            break;
          case 'constant':
            strategy = tether.constant(ms('delay_ms', 0), a.max_attempts ? { maxAttempts: Number(a.max_attempts) } : {});
            break;
          case 'backoff':
            strategy = tether.exponentialBackoff({
              initialDelay: ms('initial_ms', 250),
              multiplier: 2,
              maxDelay: ms('max_ms', 10000),
              jitter: a.jitter || 'full',
              ...(a.max_attempts ? { maxAttempts: Number(a.max_attempts) } : {}),
            });
            break;
          case 'abort':
            strategy = tether.abortImmediately;
            break;
          default:
            throw new Failed(`strategy=${a.strategy}`);
        }
        const options = {
          url: this.env.url,
          principal: a.principal || 'control',
          credentials: PASSWORD,
          reconnect: strategy ? { timeout: this.timeout, strategy } : this.timeout,
        };
        if (a.strategy === 'manual') {
          options.reconnect.onSuccess = () => {
            this.hooks.success += 1;
            this.touch();
          };
          options.reconnect.onFailure = () => {
            this.hooks.failure += 1;
            this.touch();
          };
        }
        if ('close_timeout_ms' in a) options.closeTimeout = ms('close_timeout_ms');
        if (a.ca === 'fixture') options.tlsRootCertificates = fs.readFileSync(this.env.ca, 'utf8');
        if ('queue' in a) options.maxQueuedRequests = Number(a.queue);
        if ('ping_ms' in a) options.pingPeriod = ms('ping_ms');
        if ('delivery_limit' in a) options.deliveryLimit = Number(a.delivery_limit);
        if (a.strict === '1') options.strict = true;
        let session;
        try {
          session = await bounded(tether.connect(options), 'opening');
        } catch (err) {
          if (err instanceof tether.TetherError && a.expect === 'error') return;
          throw new Failed(`cannot open: ${err.message}`);
        }
        if (a.expect === 'error') {
          await session.close();
          throw new Failed('opened, but it should have failed');
        }
        session.on('state', (old, state, reason) => {
          if (old !== 'CONNECTING') {
            this.changes.push({ old, state, reason });
            this.touch();
          }
        });
        session.on('gap', (report) => {
          this.gaps.push(report);
          this.touch();
        });
        session.on('error', () => {});
        if (this.session) await this.session.close();
        this.session = session;
        return;
      }
      case 'subscribe': {
        const topic = a.topic;
        const record = (u) => {
          const list = this.updates.get(u.topic) || [];
          list.push(u.value.toString());
          this.updates.set(u.topic, list);
          this.touch();
        };
        if (a.consumer === 'paused') {
          // A stream nobody reads until resume_consumer.
          const sub = this.needSession().subscribe(topic);
          await bounded(sub.ready, 'the subscription');
          let open;
          const opened = new Promise((resolve) => {
            open = resolve;
          });
          this.gates.set(topic, { open });
          (async () => {
            await opened;
            for await (const u of sub) record(u);
          })().catch(() => {});
        } else {
          await bounded(this.needSession().subscribe(topic, record), 'the subscription');
        }
        return;
      }
      case 'resume_consumer':
        this.gates.get(a.topic).open();
        return;
      case 'publish': {
        this.expect(a, await this.outcome(this.needSession().publish(a.topic, a.value)));
        return;
      }
      case 'send': {
        let pending;
        try {
          pending = this.needSession().publish(a.topic, a.value);
        } catch (err) {
          this.expect(a, errorName(err));
          return;
        }
        if ((a.expect || 'ok') !== 'ok') {
          // The call queues nothing when it cannot: its outcome comes at once.
          this.expect(a, await this.outcome(pending));
          return;
        }
        pending.catch(() => {});
        if (a.as) this.sends.set(a.as, pending);
        return;
      }
      case 'await_send':
        this.expect(a, await this.outcome(this.sends.get(a.name)));
        return;
      case 'server_publish':
        await this.fixture.call('publish', a);
        return;
      case 'expect_received': {
        const count = Number(a.count || 1);
        await this.wait(`${count} update(s) of ${a.topic}, the last ${a.last}`, () => {
          const got = this.updates.get(a.topic) || [];
          return got.length >= count && (a.last === undefined || got[got.length - 1] === a.last);
        });
        return;
      }
      case 'cut':
        await this.fixture.call('cut', { mode: a.mode || 'rst' });
        return;
      case 'stall':
      case 'refuse':
      case 'heal':
      case 'drain':
        await this.fixture.call(verb);
        return;
      case 'expect_state': {
        const at = await this.wait(`the session to enter ${a.state}`, () => {
          for (let i = this.cursor; i < this.changes.length; i++) if (this.changes[i].state === a.state) return i;
          return undefined;
        });
        this.cursor = at + 1;
        const reason = this.changes[at].reason;
        if (a.reason && reason !== a.reason) throw new Failed(`entered ${a.state} with reason ${reason}, not ${a.reason}`);
        return;
      }
      case 'wait_state': {
        // The state as the session reports it (JavaScript's callbacks are never held back).
        await this.wait(`the session to be ${a.state}`, () => this.needSession().state === a.state);
        return;
      }
      case 'expect_attempt': {
        const n = Number(a.number || 1);
        const { info } = await this.wait(`reconnection attempt ${n}`, () => this.attempts[n - 1]);
        const wrong = [];
        if (info.number !== n) wrong.push(`number ${info.number}`);
        if (a.last_reason && info.reason !== a.last_reason) wrong.push(`last reason ${info.reason}`);
        if (a.retry_after === 'none' && info.retryAfter !== null) wrong.push(`retry-after ${info.retryAfter}, expected none`);
        if (a.retry_after && a.retry_after !== 'none' && info.retryAfter !== Number(a.retry_after)) {
          wrong.push(`retry-after ${info.retryAfter}, expected ${a.retry_after}`);
        }
        if (!(info.remaining > 0 && info.remaining <= this.timeout)) wrong.push(`remaining ${info.remaining} (timeout ${this.timeout})`);
        if (info.elapsed < this.lastElapsed) wrong.push(`elapsed ${info.elapsed} went back from ${this.lastElapsed}`);
        this.lastElapsed = info.elapsed;
        if (wrong.length) throw new Failed(`attempt ${n}: ${wrong.join(', ')}`);
        return;
      }
      case 'decide': {
        const attempt = this.attempts[this.attempts.length - 1];
        if (!attempt) throw new Failed('no attempt to decide');
        const decide = a.action === 'start' ? attempt.start : attempt.abort;
        // JavaScript has no threads of its own here: "another thread" is a later timer.
        const decided = a.from === 'thread' ? await new Promise((resolve) => setTimeout(() => resolve(decide()), 0)) : decide();
        if (!decided) throw new Failed('the attempt was already decided (or the session stopped waiting)');
        return;
      }
      case 'expect_hooks': {
        const want = { success: Number(a.success), failure: Number(a.failure) };
        await this.wait(`${want.success} success and ${want.failure} failure hook calls`, () =>
          this.hooks.success >= want.success && this.hooks.failure >= want.failure,
        );
        if (this.hooks.success !== want.success || this.hooks.failure !== want.failure) {
          throw new Failed(`hooks called ${JSON.stringify(this.hooks)}, expected ${JSON.stringify(want)}`);
        }
        return;
      }
      case 'expect_gap':
        await this.wait(`a gap report naming ${a.topic}`, () =>
          this.gaps.some((g) => g.lostCount > 0 && g.topics.includes(a.topic)),
        );
        return;
      case 'expect_ping_period': {
        const period = this.needSession().pingPeriod;
        if (period !== Number(a.ms)) throw new Failed(`ping period ${period}, expected ${a.ms} ms`);
        return;
      }
      case 'expect_proxy':
        await this.fixture.call('wait_refused', { n: a.refused });
        return;
      case 'close':
        await bounded(this.needSession().close(), 'the session to close');
        return;
      case 'expect_closed': {
        const session = this.needSession();
        const reason = await bounded(session.closed, 'the session to close');
        if (session.state !== a.state || reason !== a.reason) {
          throw new Failed(`closed in ${session.state} (${reason}), expected ${a.state} (${a.reason})`);
        }
        return;
      }
      case 'exit_child': {
        if (typeof tether.Session.prototype.unref !== 'function') {
          throw new Unsupported('Session has no unref(): an open session keeps the process alive');
        }
        const out = await new Promise((resolve) => {
          execFile(process.execPath, ['-e', CHILD, this.env.url], { timeout: GUARD_MS }, (err, stdout, stderr) =>
            resolve({ err, stdout, stderr }),
          );
        });
        if (out.err || !out.stdout.includes('done')) {
          throw new Failed(`child: ${out.err && out.err.message}, stdout ${JSON.stringify(out.stdout)}, stderr ${out.stderr.slice(-2000)}`);
        }
        return;
      }
      default:
        throw new Failed(`unknown step ${verb}`);
    }
  }
}

const scenarios = load();
const results = new Map();
let fixture;

async function runScenario(steps) {
  fixture = fixture || (await Fixture.start());
  const runner = new Runner(fixture);
  let outcome = ['pass', ''];
  for (const { verb, args, line } of steps) {
    try {
      await runner.step(verb, args);
    } catch (err) {
      const where = `line ${line}: ${verb}`;
      outcome = err instanceof Unsupported ? ['unsupported', `${where}: ${err.message}`] : ['FAIL', `${where}: ${err.message}`];
      break;
    }
  }
  try {
    await runner.finish();
  } catch (err) {
    if (outcome[0] === 'pass') outcome = ['FAIL', `closing at the end: ${err.message}`];
  }
  return outcome;
}

for (const { name, steps } of scenarios) {
  test(`conformance: ${name}`, async (t) => {
    const [word, detail] = await runScenario(steps);
    results.set(name, `${name}\t${word}\t${detail}`);
    if (word === 'unsupported') t.skip(`not supported: ${detail}`);
    else if (word === 'FAIL') throw new Error(detail);
  });
}

after(() => {
  if (fixture) fixture.stop();
  if (results.size === scenarios.length) {
    fs.mkdirSync(RESULTS, { recursive: true });
    fs.writeFileSync(path.join(RESULTS, 'node.txt'), scenarios.map(({ name }) => `${results.get(name)}\n`).join(''));
  }
});
