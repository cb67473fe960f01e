"""Daemon threads using `tether.sync` when the program ends: one publishing in a loop, one
iterating a subscription, one waiting for the session to close. The session is never closed:
the exit-time shutdown closes it. The threads must not print anything (a daemon thread is
stopped with the interpreter); the process must exit cleanly (status 0, nothing on stderr).

Usage: sync_daemon_threads.py URL TOPIC
"""

from __future__ import annotations

import sys
import threading

import tether.sync

url, topic = sys.argv[1], sys.argv[2]
session = tether.sync.connect(url, principal="control", credentials="password")
sub = session.subscribe(f"{topic}/p")
busy = threading.Event()


def publisher() -> None:
    i = 0
    while True:
        session.publish(f"{topic}/p", str(i))
        i += 1
        if i == 20:
            busy.set()


def reader() -> None:
    for _ in sub:
        pass
    print("reader: the subscription ended", flush=True)


def waiter() -> None:
    reason = session.closed()
    print(f"waiter: closed ({reason})", flush=True)


for target in (publisher, reader, waiter):
    threading.Thread(target=target, daemon=True).start()
if not busy.wait(20):
    raise SystemExit("the publisher did not get going")
print("main returns", flush=True)
