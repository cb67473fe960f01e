"""Every ``reconnect=`` form, Python and built-in strategies, abort and timeout, and
exceptions raised in strategies — all through the fault proxy to the real server."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, List

import pytest

import tether
from conftest import PASSWORD, Manual, Proxy, Recorder, within

pytestmark = pytest.mark.asyncio

S = tether.SessionState
R = tether.CloseReason

LOST = (S.CONNECTED_ACTIVE, S.RECOVERING_RECONNECT, R.TRANSPORT_ERROR)
RESUMED = (S.RECOVERING_RECONNECT, S.CONNECTED_ACTIVE, None)


async def open_session(proxy: Proxy, reconnect: Any) -> tether.Session:
    return await within(
        tether.connect(proxy.url, principal="control", credentials=PASSWORD, reconnect=reconnect),
        "connect",
    )


async def cut_and_resume(session: tether.Session, proxy: Proxy) -> Recorder:
    rec = Recorder()
    session.on_state_change(rec)
    session_id = session.session_id
    assert proxy.cut() == 1
    await rec.until(S.CONNECTED_ACTIVE)
    assert rec.pairs() == [LOST, RESUMED]
    assert session.state is S.CONNECTED_ACTIVE
    assert session.session_id == session_id
    return rec


ENABLED = [
    pytest.param(True, 60.0, id="True"),
    pytest.param(None, 60.0, id="None"),
    pytest.param(30, 30.0, id="int-seconds"),
    pytest.param(2.5, 2.5, id="float-seconds"),
    pytest.param(tether.Reconnect(), 60.0, id="Reconnect()"),
    pytest.param(tether.Reconnect(timeout=45), 45.0, id="Reconnect(timeout)"),
    pytest.param(tether.ConstantDelay(0.02), 60.0, id="ConstantDelay"),
    pytest.param(
        tether.ExponentialBackoff(0.01, 2.0, 0.1, jitter=tether.Jitter.NONE, seed=7),
        60.0,
        id="ExponentialBackoff",
    ),
    pytest.param(tether.DefaultStrategy(), 60.0, id="DefaultStrategy"),
    pytest.param(
        tether.Reconnect(timeout=20, strategy=tether.ConstantDelay(0)),
        20.0,
        id="Reconnect(timeout, builtin)",
    ),
]


@pytest.mark.parametrize("reconnect,timeout", ENABLED)
async def test_enabled_forms_resume_after_a_cut(proxy: Proxy, reconnect: Any, timeout: float) -> None:
    session = await open_session(proxy, reconnect)
    assert session.reconnection_timeout == pytest.approx(timeout)
    await cut_and_resume(session, proxy)
    await session.close()
    assert session.state is S.CLOSED_BY_CLIENT


@pytest.mark.parametrize(
    "reconnect",
    [False, 0, 0.0, tether.Reconnect(timeout=0)],
    ids=["False", "0", "0.0", "Reconnect(timeout=0)"],
)
async def test_disabled_forms_close_on_a_cut(proxy: Proxy, reconnect: Any) -> None:
    session = await open_session(proxy, reconnect)
    assert session.reconnection_timeout == 0
    rec = Recorder()
    session.on_state_change(rec)
    assert proxy.cut() == 1
    assert await within(session.closed(), "close") is R.TRANSPORT_ERROR
    assert session.state is S.CLOSED_FAILED
    assert session.close_reason is R.TRANSPORT_ERROR
    await rec.until(S.CLOSED_FAILED)
    assert rec.pairs() == [(S.CONNECTED_ACTIVE, S.CLOSED_FAILED, R.TRANSPORT_ERROR)]


async def test_plain_function_strategy_runs_on_the_loop_and_decides_later(proxy: Proxy) -> None:
    loop = asyncio.get_running_loop()
    calls: List[Any] = []

    def strategy(attempt: tether.ReconnectionAttempt) -> None:
        calls.append((threading.get_ident(), attempt.number, attempt.reason, attempt.remaining))
        loop.call_later(0.01, attempt.start)

    session = await open_session(proxy, strategy)
    await cut_and_resume(session, proxy)
    assert len(calls) == 1
    thread, number, reason, remaining = calls[0]
    assert thread == threading.get_ident(), "the strategy runs on the event loop's thread"
    assert (number, reason) == (1, R.TRANSPORT_ERROR)
    assert 0 < remaining <= 60
    await session.close()


async def test_coroutine_strategy_is_run_as_a_task(proxy: Proxy) -> None:
    numbers: List[int] = []

    async def strategy(attempt: tether.ReconnectionAttempt) -> None:
        numbers.append(attempt.number)
        await asyncio.sleep(0.01)
        assert attempt.start()

    session = await open_session(proxy, tether.Reconnect(timeout=30, strategy=strategy))
    assert session.reconnection_timeout == 30
    await cut_and_resume(session, proxy)
    assert numbers == [1]
    await session.close()


async def test_strategy_may_decide_from_another_thread(proxy: Proxy) -> None:
    def strategy(attempt: tether.ReconnectionAttempt) -> None:
        threading.Timer(0.01, attempt.start).start()

    session = await open_session(proxy, strategy)
    await cut_and_resume(session, proxy)
    await session.close()


async def test_callable_object_strategy(proxy: Proxy) -> None:
    class Backoff:
        def __init__(self) -> None:
            self.attempts = 0

        def __call__(self, attempt: tether.ReconnectionAttempt) -> None:
            self.attempts += 1
            attempt.start_after(0.01)

    strategy = Backoff()
    session = await open_session(proxy, strategy)
    await cut_and_resume(session, proxy)
    assert strategy.attempts == 1
    await session.close()


async def test_attempt_facts_across_failed_attempts(proxy: Proxy) -> None:
    manual = Manual()
    session = await open_session(proxy, tether.Reconnect(timeout=30, strategy=manual))
    rec = Recorder()
    session.on_state_change(rec)
    proxy.refuse()
    assert proxy.cut() == 1

    first = await manual.next()
    assert (first.number, first.reason) == (1, R.TRANSPORT_ERROR)
    assert 0 < first.remaining <= 30
    assert not first.is_decided
    assert first.start() is True
    assert first.start() is False and first.abort() is False, "the first decision wins"
    assert first.is_decided

    second = await manual.next()
    assert second.number == 2
    assert second.reason is R.CONNECTION_ERROR, "the refused attempt's failure"
    assert second.elapsed >= first.elapsed
    assert second.remaining <= first.remaining
    assert session.state is S.RECOVERING_RECONNECT

    proxy.heal()
    assert second.start()
    await rec.until(S.CONNECTED_ACTIVE)
    assert rec.pairs() == [LOST, RESUMED]
    await session.close()


async def test_abort_closes_with_reconnect_aborted(proxy: Proxy) -> None:
    manual = Manual()
    session = await open_session(proxy, manual)
    rec = Recorder()
    session.on_state_change(rec)
    proxy.cut()
    attempt = await manual.next()
    assert attempt.abort() is True
    assert await within(session.closed(), "close") is R.RECONNECT_ABORTED
    assert session.state is S.CLOSED_FAILED
    await rec.until(S.CLOSED_FAILED)
    assert rec.pairs() == [LOST, (S.RECOVERING_RECONNECT, S.CLOSED_FAILED, R.RECONNECT_ABORTED)]
    with pytest.raises(tether.SessionClosedError) as err:
        await session.publish("x/y", b"late")
    assert err.value.reason is R.RECONNECT_ABORTED
    assert attempt.start() is False, "deciding after the close is harmless"


@pytest.mark.parametrize(
    "strategy",
    [tether.AbortImmediately(), tether.ConstantDelay(0, max_attempts=1)],
    ids=["AbortImmediately", "ConstantDelay(max_attempts=1)"],
)
async def test_builtin_aborts_close_with_reconnect_aborted(proxy: Proxy, strategy: Any) -> None:
    session = await open_session(proxy, strategy)
    proxy.refuse()
    proxy.cut()
    assert await within(session.closed(), "close") is R.RECONNECT_ABORTED


async def test_timeout_closes_with_reconnect_timeout(proxy: Proxy) -> None:
    undecided: List[tether.ReconnectionAttempt] = []
    session = await open_session(proxy, tether.Reconnect(timeout=0.3, strategy=undecided.append))
    rec = Recorder()
    session.on_state_change(rec)
    proxy.cut()
    assert await within(session.closed(), "close") is R.RECONNECT_TIMEOUT
    await rec.until(S.CLOSED_FAILED)
    assert rec.pairs() == [LOST, (S.RECOVERING_RECONNECT, S.CLOSED_FAILED, R.RECONNECT_TIMEOUT)]
    assert [a.number for a in undecided] == [1]


async def test_timeout_closes_while_attempts_keep_failing(proxy: Proxy) -> None:
    session = await open_session(proxy, tether.Reconnect(timeout=0.5, strategy=tether.ConstantDelay(0.05)))
    proxy.refuse()
    proxy.cut()
    assert await within(session.closed(), "close") is R.RECONNECT_TIMEOUT
    assert session.state is S.CLOSED_FAILED


async def test_exception_in_plain_strategy_is_reported_and_aborts(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    def strategy(attempt: tether.ReconnectionAttempt) -> None:
        raise ValueError("boom")

    session = await open_session(proxy, strategy)
    events: List[Any] = []
    closed = asyncio.get_running_loop().create_future()

    def on_state(change: tether.StateChange) -> None:
        events.append(change.new)
        if change.new.is_closed:
            closed.set_result(None)

    session.on_error(events.append)
    session.on_state_change(on_state)
    with caplog.at_level(logging.ERROR, logger="tether"):
        proxy.cut()
        assert await within(session.closed(), "close") is R.RECONNECT_ABORTED
        await within(closed, "the close event")
    errors = [e for e in events if isinstance(e, BaseException)]
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, tether.StrategyError) and isinstance(error, tether.TetherError)
    assert isinstance(error.__cause__, ValueError) and str(error.__cause__) == "boom"
    assert events == [S.RECOVERING_RECONNECT, error, S.CLOSED_FAILED], "reported, then aborted"
    logged = [r for r in caplog.records if r.name == "tether" and r.levelno == logging.ERROR]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[1] is error.__cause__


async def test_exception_in_coroutine_strategy_is_reported_and_aborts(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    async def strategy(attempt: tether.ReconnectionAttempt) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("async boom")

    session = await open_session(proxy, strategy)
    reported: "asyncio.Future[BaseException]" = asyncio.get_running_loop().create_future()
    session.on_error(reported.set_result)
    with caplog.at_level(logging.ERROR, logger="tether"):
        proxy.cut()
        assert await within(session.closed(), "close") is R.RECONNECT_ABORTED
    error = await within(reported, "the error event")
    assert isinstance(error, tether.StrategyError)
    assert isinstance(error.__cause__, RuntimeError)
    assert any(r.name == "tether" and "async boom" in r.getMessage() for r in caplog.records)


async def test_invalid_reconnect_values_are_refused(proxy: Proxy) -> None:
    with pytest.raises(TypeError):
        tether.connect(proxy.url, reconnect="soon")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tether.connect(proxy.url, reconnect=tether.Reconnect(timeout="1"))  # type: ignore[arg-type]
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(tether.InvalidArgumentError) as err:
            await tether.connect(proxy.url, principal="control", credentials=PASSWORD, reconnect=bad)
        assert isinstance(err.value, ValueError)
    with pytest.raises(tether.InvalidArgumentError):
        tether.ConstantDelay(-0.5)
    with pytest.raises(tether.InvalidArgumentError):
        tether.ExponentialBackoff(multiplier=0.5)
    with pytest.raises(tether.InvalidArgumentError):
        tether.ExponentialBackoff(jitter="sometimes")
    assert tether.ExponentialBackoff(jitter="equal").jitter == "equal"

