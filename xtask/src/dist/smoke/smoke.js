'use strict';
// Installed-package check (cargo xtask dist): a session through the fault proxy survives a cut.
// Arguments: the server's URL (through the proxy) and a topic of its own. Prints `ready <id>`
// after the first round trip; the caller then cuts the connection; prints `ok <id>` once the
// session resumed and a second message made the round trip.
const tether = require('tether-session');

const GUARD_MS = 60000;
const url = process.argv[2];
const topic = process.argv[3];

function within(promise, what) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${GUARD_MS} ms`)), GUARD_MS);
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

async function main() {
  const session = await tether.connect({ url, principal: 'control', credentials: 'password' });
  const id = session.sessionId;
  const received = [];
  const waiters = [];
  await session.subscribe(topic, (update) => {
    received.push(update.value.toString());
    for (const w of waiters.splice(0)) w();
  });
  const receivedCount = (n) =>
    new Promise((resolve) => {
      const check = () => (received.length >= n ? resolve() : waiters.push(check));
      check();
    });
  const reconnected = new Promise((resolve) => session.once('reconnect', resolve));

  await session.publish(topic, 'one');
  await within(receivedCount(1), 'first update');
  console.log(`ready ${id}`);

  await within(reconnected, 'reconnection');
  if (session.sessionId !== id) throw new Error(`session id changed: ${id} -> ${session.sessionId}`);
  await session.publish(topic, 'two');
  await within(receivedCount(2), 'second update');
  if (received.join(',') !== 'one,two') throw new Error(`received ${JSON.stringify(received)}`);
  await session.close();
  console.log(`ok ${id}`);
}

main().catch((err) => {
  console.error(`FAIL: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
