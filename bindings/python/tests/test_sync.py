"""``tether.sync``: the blocking facade, through the fault proxy."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, List

import pytest

import tether
import tether.sync
from conftest import GUARD, PASSWORD, Proxy, Server

S = tether.SessionState
R = tether.CloseReason


def connect(url: str, reconnect: Any = True) -> tether.sync.Session:
    return tether.sync.connect(url, principal="control", credentials=PASSWORD, reconnect=reconnect)


def test_sync_facade_survives_a_cut(server: Server, proxy: Proxy, topic: str) -> None:
    calls: List[Any] = []
    main = threading.get_ident()

    def strategy(attempt: tether.ReconnectionAttempt) -> None:
        # On Tether's callback thread, where blocking is fine.
        calls.append((threading.get_ident(), attempt.number, attempt.reason))
        time.sleep(0.01)
        attempt.start()

    with connect(proxy.url, reconnect=tether.Reconnect(timeout=30, strategy=strategy)) as session:
        assert session.state is S.CONNECTED_ACTIVE
        assert session.reconnection_timeout == 30
        session_id = session.session_id
        seen: "queue.Queue[tether.StateChange]" = queue.Queue()
        session.on_state_change(seen.put)
        changes = session.state_changes()
        sub = session.subscribe(f"{topic}/**", timeout=GUARD)
        session.publish(f"{topic}/a", "before", timeout=GUARD)
        update = sub.next(timeout=GUARD)
        assert update is not None and (update.topic, update.value) == (f"{topic}/a", b"before")
        with pytest.raises(TimeoutError):
            sub.next(timeout=0.05)

        assert proxy.cut() == 1
        lost = changes.next(timeout=GUARD)
        resumed = changes.next(timeout=GUARD)
        assert lost is not None and resumed is not None
        assert (lost.old, lost.new, lost.reason) == (
            S.CONNECTED_ACTIVE,
            S.RECOVERING_RECONNECT,
            R.TRANSPORT_ERROR,
        )
        assert (resumed.old, resumed.new) == (S.RECOVERING_RECONNECT, S.CONNECTED_ACTIVE)
        assert session.session_id == session_id
        assert len(calls) == 1
        thread, number, reason = calls[0]
        assert thread != main and (number, reason) == (1, R.TRANSPORT_ERROR)
        assert [seen.get(timeout=GUARD), seen.get(timeout=GUARD)] == [lost, resumed]

        session.publish(f"{topic}/a", b"after", timeout=GUARD)
        assert next(sub).value == b"after"
    assert session.state is S.CLOSED_BY_CLIENT
    assert session.closed(timeout=GUARD) is R.CLOSED_BY_CLIENT
    assert sub.next(timeout=GUARD) is None, "the subscription ended"
    assert list(sub) == []
    closing = list(changes)
    assert [(c.old, c.new) for c in closing] == [(S.CONNECTED_ACTIVE, S.CLOSED_BY_CLIENT)]
    assert seen.get(timeout=GUARD) == closing[0]


def test_sync_callbacks_may_block_on_the_session(proxy: Proxy, topic: str) -> None:
    session = connect(proxy.url, reconnect=tether.ConstantDelay(0))
    sub = session.subscribe(f"{topic}/cb", timeout=GUARD)
    errors: "queue.Queue[BaseException]" = queue.Queue()
    session.on_error(errors.put)

    def on_change(change: tether.StateChange) -> None:
        # On Tether's callback thread: a blocking call into the same session is fine.
        if change.new is S.CONNECTED_ACTIVE:
            session.publish(f"{topic}/cb", "from the callback", timeout=GUARD)

    session.on_state_change(on_change)
    proxy.cut()
    update = sub.next(timeout=GUARD)
    assert update is not None and update.value == b"from the callback"
    assert errors.empty()
    session.close(timeout=GUARD)


def test_sync_strategy_exception_is_reported_and_aborts(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    def strategy(attempt: tether.ReconnectionAttempt) -> None:
        raise ZeroDivisionError("sync boom")

    session = connect(proxy.url, reconnect=strategy)
    errors: "queue.Queue[BaseException]" = queue.Queue()
    session.on_error(errors.put)
    with caplog.at_level(logging.ERROR, logger="tether"):
        proxy.cut()
        assert session.closed(timeout=GUARD) is R.RECONNECT_ABORTED
    error = errors.get(timeout=GUARD)
    assert isinstance(error, tether.StrategyError)
    assert isinstance(error.__cause__, ZeroDivisionError)
    assert any("sync boom" in r.getMessage() for r in caplog.records if r.name == "tether")


def test_sync_strategy_hooks_ping_period_and_options(proxy: Proxy, topic: str) -> None:
    """A strategy object's on_failure / on_success hooks, after each attempt it started (here on
    Tether's callback thread), and the ping period the server granted."""
    events: "queue.Queue[Any]" = queue.Queue()

    class Strategy:
        def __call__(self, attempt: tether.ReconnectionAttempt) -> None:
            events.put(("attempt", attempt.number, attempt.reason))
            if attempt.number == 1:
                proxy.refuse()  # the first attempt fails...
            else:
                proxy.heal()  # ...the second succeeds
            attempt.start()

        def on_success(self, info: tether.AttemptInfo) -> None:
            events.put(("success", info.number, info.reason))

        def on_failure(self, info: tether.AttemptInfo, reason: tether.CloseReason) -> None:
            events.put(("failure", info.number, reason))

    with pytest.raises(tether.InvalidArgumentError):
        tether.sync.connect(proxy.url, principal="control", credentials=PASSWORD, delivery_limit=0)
    session = tether.sync.connect(
        proxy.url, principal="control", credentials=PASSWORD,
        reconnect=tether.Reconnect(timeout=30, strategy=Strategy()),
        ping_period=1.5, delivery_limit=100, max_queued_requests=10, close_timeout=2.0,
    )
    with session:
        assert session.ping_period == 1.5
        proxy.cut()
        got = [events.get(timeout=GUARD) for _ in range(4)]
        assert got == [
            ("attempt", 1, R.TRANSPORT_ERROR),
            ("failure", 1, R.CONNECTION_ERROR),
            ("attempt", 2, R.CONNECTION_ERROR),
            ("success", 2, R.CONNECTION_ERROR),
        ], got
        assert session.wait_for_state(S.CONNECTED_ACTIVE, timeout=GUARD) is S.CONNECTED_ACTIVE
        assert session.ping_period == 1.5
        with pytest.raises(tether.InvalidArgumentError) as err:
            session.publish(f"{topic}//x", "bad topic")
        assert err.value.kind == "invalid_topic"


def test_sync_facade_refuses_coroutine_strategies(proxy: Proxy) -> None:
    async def strategy(attempt: tether.ReconnectionAttempt) -> None:
        attempt.start()

    with pytest.raises(TypeError):
        connect(proxy.url, reconnect=strategy)


def test_sync_errors_and_waits(server: Server, proxy: Proxy, topic: str) -> None:
    with pytest.raises(tether.AuthenticationError):
        tether.sync.connect(server.url, principal="control", credentials="wrong")
    session = connect(proxy.url, reconnect=False)
    assert session.wait_for_state(S.CONNECTED_ACTIVE, timeout=GUARD) is S.CONNECTED_ACTIVE
    with pytest.raises(TimeoutError):
        session.closed(timeout=0.05)
    proxy.cut()
    assert session.closed(timeout=GUARD) is R.TRANSPORT_ERROR
    with pytest.raises(tether.SessionClosedError) as err:
        session.publish(f"{topic}/x", "late")
    assert err.value.reason is R.TRANSPORT_ERROR


@pytest.mark.asyncio
async def test_sync_facade_works_inside_a_running_loop(server: Server, topic: str) -> None:
    # It blocks the loop's thread like any blocking call, but never needs the loop.
    asyncio.get_running_loop()
    with connect(server.url) as session:
        sub = session.subscribe(f"{topic}/in-loop", timeout=GUARD)
        session.publish(f"{topic}/in-loop", "x", timeout=GUARD)
        update = sub.next(timeout=GUARD)
        assert update is not None and update.value == b"x"
