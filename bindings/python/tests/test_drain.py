"""Drains and restarts of a real server (SIGTERM) reach strategies with the reason and the
server's retry-after hint; several URLs for opening and resuming."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, List, Tuple

import pytest

import tether
import tether.sync
from conftest import PASSWORD, Proxy, Server, running_proxy, restartable_server, within

S = tether.SessionState
R = tether.CloseReason

#: The retry-after hint the draining server sends (not the server's default, 1 s).
HINT = 0.7


def facts(attempt: tether.ReconnectionAttempt) -> Tuple[int, Any, Any]:
    return attempt.number, attempt.reason, attempt.retry_after


@pytest.mark.asyncio
async def test_a_drain_reaches_strategies_with_its_reason_and_hint(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    config = f'state_dir = "{state}"\n[drain]\nretry_after_ms = {int(HINT * 1000)}\n'
    with restartable_server(tmp_path, config) as server:
        loop = asyncio.get_running_loop()
        own: List[Tuple[int, Any, Any]] = []
        delegated: List[Tuple[int, Any, Any]] = []
        default = tether.DefaultStrategy()

        def own_strategy(attempt: tether.ReconnectionAttempt) -> None:
            # Waits what the server asked for (a little when it asked nothing).
            own.append(facts(attempt))
            attempt.start_after(attempt.retry_after or 0.05)

        def delegating(attempt: tether.ReconnectionAttempt) -> None:
            # Only looks, and leaves the decision to the default strategy.
            delegated.append(facts(attempt))
            default(attempt)

        a = await within(
            tether.connect(server.url, principal="control", credentials=PASSWORD, reconnect=own_strategy),
            "connect a",
        )
        b = await within(
            tether.connect(server.url, principal="control", credentials=PASSWORD, reconnect=delegating),
            "connect b",
        )
        ids = (a.session_id, b.session_id)
        changes: List[List[tether.StateChange]] = [[], []]
        resumed = [loop.create_future(), loop.create_future()]
        for i, s in enumerate((a, b)):

            def record(change: tether.StateChange, i: int = i) -> None:
                changes[i].append(change)
                if change.new is S.CONNECTED_ACTIVE and not resumed[i].done():
                    resumed[i].set_result(None)

            s.on_state_change(record)

        await loop.run_in_executor(None, server.restart)
        await within(asyncio.gather(*resumed), "both sessions back")

        for c in changes:
            assert [(x.old, x.new, x.reason) for x in c] == [
                (S.CONNECTED_ACTIVE, S.RECOVERING_RECONNECT, R.SERVER_DRAINING),
                (S.RECOVERING_RECONNECT, S.CONNECTED_ACTIVE, None),
            ]
        assert own[0] == (1, R.SERVER_DRAINING, pytest.approx(HINT))
        assert delegated[0] == (1, R.SERVER_DRAINING, pytest.approx(HINT))
        assert (a.session_id, b.session_id) == ids
        await within(a.publish("py/drain/a", "after"), "publish a")
        await within(b.publish("py/drain/b", "after"), "publish b")
        await a.close()
        await b.close()


@pytest.mark.asyncio
async def test_a_cut_gives_no_hint_and_builtins_decide_handed_attempts(proxy: Proxy) -> None:
    seen: List[Any] = []
    backoff = tether.ExponentialBackoff(0.01, 2.0, 0.1, jitter=tether.Jitter.NONE)

    def strategy(attempt: tether.ReconnectionAttempt) -> None:
        seen.append((attempt.number, attempt.reason, attempt.retry_after, repr(attempt)))
        backoff(attempt)

    session = await within(
        tether.connect(proxy.url, principal="control", credentials=PASSWORD, reconnect=strategy),
        "connect",
    )
    back = asyncio.get_running_loop().create_future()
    session.on_state_change(
        lambda c: back.done() or c.new is not S.CONNECTED_ACTIVE or back.set_result(None)
    )
    assert proxy.cut() == 1
    await within(back, "the resume")
    number, reason, retry_after, text = seen[0]
    assert (number, reason, retry_after) == (1, R.TRANSPORT_ERROR, None)
    assert "retry_after=None" in text
    await session.close()


@pytest.mark.asyncio
async def test_builtins_abort_handed_attempts(proxy: Proxy) -> None:
    session = await within(
        tether.connect(
            proxy.url,
            principal="control",
            credentials=PASSWORD,
            reconnect=lambda attempt: tether.AbortImmediately()(attempt),
        ),
        "connect",
    )
    assert proxy.cut() == 1
    assert await within(session.closed(), "close") is R.RECONNECT_ABORTED


def free_port_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_a_list_of_urls_opens_on_the_first_that_answers_and_resumes_on_the_fallback(
    server: Server,
) -> None:
    opened = await within(
        tether.connect([free_port_url(), server.url], principal="control", credentials=PASSWORD),
        "connect on the second URL",
    )
    assert opened.state is S.CONNECTED_ACTIVE
    await opened.close()

    with running_proxy(server) as first, running_proxy(server) as second:
        numbers: List[int] = []

        def strategy(attempt: tether.ReconnectionAttempt) -> None:
            numbers.append(attempt.number)
            attempt.start_after(0.02)

        session = await within(
            tether.connect(
                (first.url, second.url), principal="control", credentials=PASSWORD, reconnect=strategy
            ),
            "connect",
        )
        session_id = session.session_id
        assert second.status()["forwarded_total"] == 0, "opened on the first URL"
        back = asyncio.get_running_loop().create_future()
        session.on_state_change(
            lambda c: back.done() or c.new is not S.CONNECTED_ACTIVE or back.set_result(None)
        )
        first.refuse()
        assert first.cut() == 1
        await within(back, "the resume on the fallback")
        assert numbers == [1, 2], "attempt 1 went back to the first URL (refused), attempt 2 to the fallback"
        assert second.status()["forwarded_total"] == 1, "resumed through the fallback"
        assert session.session_id == session_id
        await within(session.publish("py/fallback", "after"), "publish")
        await session.close()


def test_sync_connect_takes_a_list_of_urls(server: Server) -> None:
    with tether.sync.connect(
        [free_port_url(), server.url], principal="control", credentials=PASSWORD
    ) as session:
        assert session.state is S.CONNECTED_ACTIVE


@pytest.mark.parametrize(
    "url,error",
    [
        ([], tether.InvalidArgumentError),
        ([b"ws://127.0.0.1:1"], TypeError),
        (b"ws://127.0.0.1:1", TypeError),
        (42, TypeError),
    ],
    ids=["empty", "bytes-in-list", "bytes", "int"],
)
@pytest.mark.asyncio
async def test_bad_url_lists_are_refused(url: Any, error: type) -> None:
    with pytest.raises(error):
        await tether.connect(url, principal="control", credentials=PASSWORD)
