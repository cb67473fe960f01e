// The demo page: one session through the fault proxy, numbered messages both ways, and the
// proxy's faults on buttons. `window.demo` holds the tallies (the browser tests read it).
import * as tether from '/tether/index.js';

const $ = (id) => document.getElementById(id);
const started = performance.now();

const demo = {
  state: 'LOADING',
  sessionId: null,
  disconnects: 0,
  reconnects: 0,
  attempts: [],
  down: { received: 0, distinct: 0, last: 0, duplicates: 0, reordered: 0, missing: 0 },
  up: { sent: 0, confirmed: 0, failed: 0 },
  server: { received: 0, distinct: 0, duplicates: 0, reordered: 0, last: 0 },
  error: null,
};
window.demo = demo;

function log(line) {
  const t = ((performance.now() - started) / 1000).toFixed(2).padStart(7);
  const el = $('log');
  el.textContent = `[${t}s] ${line}\n` + el.textContent.split('\n').slice(0, 60).join('\n');
}

/** Shows the tallies (every 200 ms; the tests call it before their screenshot). */
function render() {
  const s = $('state');
  s.textContent = demo.state;
  s.className = demo.state;
  $('sid').textContent = demo.sessionId ?? '–';
  $('disconnects').textContent = demo.disconnects;
  $('reconnects').textContent = demo.reconnects;
  for (const k of ['received', 'last', 'missing', 'duplicates', 'reordered']) {
    const el = $(`down-${k}`);
    el.textContent = demo.down[k];
    if (['missing', 'duplicates', 'reordered'].includes(k)) el.className = `n ${demo.down[k] ? 'bad' : 'good'}`;
  }
  $('up-sent').textContent = demo.up.sent;
  $('up-confirmed').textContent = demo.up.confirmed;
  $('up-failed').textContent = demo.up.failed;
  $('up-received').textContent = demo.server.received;
  // Holes below the highest number the subscriber has (it hears of the latest ones a moment
  // after the server confirmed them).
  const missing = demo.server.last - demo.server.distinct;
  const bad = `${missing} / ${demo.server.duplicates} / ${demo.server.reordered}`;
  $('up-bad').textContent = bad;
  $('up-bad').className = `n ${missing + demo.server.duplicates + demo.server.reordered ? 'bad' : 'good'}`;
  $('up-failed').className = `n ${demo.up.failed ? 'bad' : 'good'}`;
}

async function control(path, label) {
  const answer = await fetch(`/proxy/${path}`, { method: 'POST' }).then((r) => r.json());
  $('fault').textContent = `${label}: ${JSON.stringify(answer)}`;
  log(`fault: ${label} ${JSON.stringify(answer)}`);
}

$('cut-rst').onclick = () => control('cut?mode=rst', 'cut with RST');
$('cut-fin').onclick = () => control('cut?mode=fin', 'cut with FIN');
$('stall').onclick = () => control('stall', 'stall (nothing forwarded, nobody told)');
$('refuse').onclick = async () => {
  await control('refuse?ms=3000', 'refuse new connections for 3 s');
  await control('cut?mode=rst', 'cut with RST');
};
$('heal').onclick = () => control('heal', 'heal');

// The seed's strategy: exponential backoff from 100 ms, at most 60 s apart, written as a
// function (start, abort) that starts from a timer; narrated here.
const maximumAttemptInterval = 1000 * 60;
const maximumAttempts = 25;
let attempts = 0;
const reconnectionStrategy = (start, abort, reason, attempt) => {
  if (attempts > maximumAttempts) {
    log(`strategy: attempt ${attempt.number} (${reason}): abort`);
    abort();
    return;
  }
  const wait = attempt.retryAfter ?? Math.min(Math.pow(2, attempts++) * 100, maximumAttemptInterval);
  demo.attempts.push({ number: attempt.number, reason, wait });
  log(`strategy: attempt ${attempt.number} after ${reason} (${Math.round(attempt.remaining / 1000)} s left): start in ${wait} ms`);
  setTimeout(start, wait);
};

async function main() {
  const config = await fetch('/config.json').then((r) => r.json());
  const page = Math.random().toString(36).slice(2, 10);
  const upTopic = `demo/up/${page}`;
  const downTopic = `demo/down/${page}`;

  const session = await tether.connect({
    url: config.url,
    principal: 'control',
    credentials: 'password',
    reconnect: { timeout: 60000, strategy: reconnectionStrategy },
  });
  demo.state = session.state;
  demo.sessionId = session.sessionId;
  $('timeout').textContent = `${session.reconnectionTimeout / 1000} s`;
  log(`connected: session ${session.sessionId} via ${config.url}`);

  session.on('state', (old, state, reason) => {
    demo.state = state;
    log(`state: ${old} → ${state}${reason ? ` (${reason})` : ''}`);
    render();
  });
  session.on('disconnect', (reason) => {
    demo.disconnects++;
    log(`disconnected (${reason}); publishing goes on into the queue`);
  });
  session.on('reconnect', () => {
    demo.reconnects++;
    attempts = 0;
    log(`reconnected: same session ${session.sessionId}`);
  });
  session.on('close', (reason) => log(`closed (${reason})`));
  session.on('gap', (gap) => log(`gap: ${gap.lostCount} messages lost (${gap.topics.join(', ')})`));
  session.on('error', (err) => {
    demo.error = String(err);
    log(`error: ${err}`);
  });

  // Server → page: every value is the next number.
  const seen = new Set();
  const decoder = new TextDecoder();
  await session.subscribe(downTopic, (update) => {
    const n = Number(decoder.decode(update.value));
    const d = demo.down;
    d.received++;
    if (seen.has(n)) d.duplicates++;
    else {
      seen.add(n);
      d.distinct++;
    }
    if (n <= d.last) d.reordered++;
    d.last = Math.max(d.last, n);
    d.missing = d.last - d.distinct;
  });
  await fetch(`/api/feed?topic=${downTopic}&count=1000000&interval_ms=100`, { method: 'POST' });

  // Page → server: a counter, published every 100 ms whatever the network does.
  setInterval(() => {
    const n = ++demo.up.sent;
    session.publish(upTopic, String(n)).then(
      () => demo.up.confirmed++,
      (err) => {
        demo.up.failed++;
        log(`publish ${n} failed: ${err.code}`);
      },
    );
  }, 100);
  setInterval(async () => {
    demo.server = await fetch(`/api/tally?topic=${upTopic}`).then((r) => r.json());
  }, 500);
  window.render = render;
  setInterval(render, 200);
  render();
}

main().catch((err) => {
  demo.error = String(err);
  demo.state = 'FAILED';
  log(`failed: ${err.code ?? ''} ${err.message}`);
  render();
});
