"""Requests as asyncio sees them: what awaiting them returns, tasks made of them, failures at
the call (nothing queued), and ``close()`` with requests still queued."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

import tether
from conftest import PASSWORD, Proxy, Server, within

pytestmark = pytest.mark.asyncio

S = tether.SessionState


async def connect(url: str, reconnect: Any = True) -> tether.Session:
    return await within(
        tether.connect(url, principal="control", credentials=PASSWORD, reconnect=reconnect),
        "connect",
    )


async def values(sub: tether.Subscription, count: int) -> List[bytes]:
    return [(await within(sub.__anext__(), f"update {i}")).value for i in range(count)]


async def test_requests_return_none(server: Server, topic: str) -> None:
    session = await connect(server.url)
    sub = await session.subscribe(f"{topic}/n")
    assert await session.publish(f"{topic}/n", "x") is None
    assert await session.unsubscribe(f"{topic}/n") is None
    assert await session.close() is None
    assert await session.close() is None
    assert sub.selector == f"{topic}/n"


async def test_every_request_can_be_a_task(server: Server, topic: str) -> None:
    session = await asyncio.create_task(
        tether.connect(server.url, principal="control", credentials=PASSWORD)
    )
    assert isinstance(session, tether.Session)
    sub = await asyncio.create_task(session.subscribe(f"{topic}/t"))
    assert isinstance(sub, tether.Subscription)

    publishes = [asyncio.create_task(session.publish(f"{topic}/t", str(i))) for i in range(5)]
    assert await within(asyncio.gather(*publishes), "the publishes") == [None] * 5
    assert await asyncio.gather(
        session.publish(f"{topic}/t", "gathered"),
        asyncio.wait_for(session.publish(f"{topic}/t", "waited for"), 20),
        asyncio.ensure_future(session.publish(f"{topic}/t", "ensured")),
    ) == [None, None, None]
    assert await values(sub, 8) == [
        b"0", b"1", b"2", b"3", b"4", b"gathered", b"waited for", b"ensured"
    ]

    publish = session.publish(f"{topic}/t", "awaited twice")
    assert await asyncio.create_task(publish) is None
    assert publish.done() and await publish is None, "a Publish can be awaited again"

    await asyncio.create_task(session.unsubscribe(f"{topic}/t"))
    await asyncio.create_task(session.close())
    assert session.state is S.CLOSED_BY_CLIENT


async def test_a_call_that_fails_queues_nothing(server: Server, topic: str) -> None:
    session = await connect(server.url)
    watcher = await connect(server.url)
    sub = await watcher.subscribe(f"{topic}/f")

    with pytest.raises(TypeError):
        session.publish(f"{topic}/f", 42)  # type: ignore[arg-type]
    # Without a running loop (here: an executor thread), the call raises and sends nothing.
    loop = asyncio.get_running_loop()
    with pytest.raises(RuntimeError):
        await loop.run_in_executor(None, lambda: session.publish(f"{topic}/f", "no loop"))
    await session.publish(f"{topic}/f", "sentinel")
    assert await values(sub, 1) == [b"sentinel"], "the failed calls sent nothing"
    await session.close()
    await watcher.close()


async def test_close_sends_the_requests_queued_before_it(server: Server, topic: str) -> None:
    session = await connect(server.url)
    watcher = await connect(server.url)
    sub = await watcher.subscribe(f"{topic}/q")

    as_tasks = [asyncio.create_task(session.publish(f"{topic}/q", f"task {i}")) for i in range(5)]
    plain = [session.publish(f"{topic}/q", f"plain {i}") for i in range(5)]
    await within(session.close(), "close")
    assert session.state is S.CLOSED_BY_CLIENT
    # Every one was applied: none reports a failure, and the watcher sees each once, in order.
    assert await within(asyncio.gather(*as_tasks, *plain), "the publishes") == [None] * 10
    expected = [f"task {i}".encode() for i in range(5)] + [f"plain {i}".encode() for i in range(5)]
    assert await values(sub, 10) == expected

    with pytest.raises(tether.SessionClosedError) as late:
        await session.publish(f"{topic}/q", "after close")
    assert not isinstance(late.value, tether.OutcomeUnknownError), "never sent: not applied"
    await watcher.close()


async def test_unconfirmed_requests_fail_as_outcome_unknown(proxy: Proxy, topic: str) -> None:
    assert issubclass(tether.OutcomeUnknownError, tether.SessionClosedError)
    session = await connect(proxy.url, reconnect=False)
    await session.publish(f"{topic}/u", "confirmed")
    # The connection stops forwarding: the publish and the close go out, no answer comes back,
    # and close() gives up after its close timeout (5 s).
    assert proxy.stall() == 1
    unconfirmed = session.publish(f"{topic}/u", "unconfirmed")
    await within(session.close(), "close")
    assert session.state.is_closed
    with pytest.raises(tether.OutcomeUnknownError) as unknown:
        await unconfirmed
    assert unknown.value.reason is not None
    assert "may have been applied" in str(unknown.value)


async def test_shutdown_settles_every_wait_and_tether_starts_again(
    server: Server, topic: str
) -> None:
    session = await connect(server.url)
    sub = await session.subscribe(f"{topic}/quiet")
    next_update = asyncio.ensure_future(sub.__anext__())
    closed = asyncio.ensure_future(session.closed())
    publishes = [session.publish(f"{topic}/s/{i % 10}", str(i)) for i in range(2000)]

    # Blocks this loop's thread (the results wait for the loop, not the other way round).
    assert tether.shutdown() is True
    assert session.state is S.CLOSED_BY_CLIENT
    # Queued before the shutdown: sent and confirmed, none left waiting.
    assert await within(asyncio.gather(*publishes), "the publishes") == [None] * 2000
    with pytest.raises(StopAsyncIteration):
        await within(next_update, "the end of the subscription")
    assert await within(closed, "closed()") is tether.CloseReason.CLOSED_BY_CLIENT

    again = await connect(server.url)
    assert await again.publish(f"{topic}/s/0", "after the shutdown") is None
    await again.close()
