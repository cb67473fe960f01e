"""An outage longer than the server's recovery buffer: a gap report then the current value,
or, for a strict session, a close with reason LOST_MESSAGES. Never a silent gap."""

from __future__ import annotations

import asyncio
from typing import Iterator, Tuple

import pytest

import tether
from conftest import PASSWORD, Manual, Proxy, Server, running_proxy, running_server, within

pytestmark = pytest.mark.asyncio

TINY_BUFFER = """
[recovery]
max_frames = 5
max_bytes = 65536
"""


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("tiny"), TINY_BUFFER) as s:
        yield s


@pytest.fixture
def tiny_proxy(tiny_server: Server) -> Iterator[Proxy]:
    with running_proxy(tiny_server) as p:
        yield p


async def overflowing_outage(
    server: Server, proxy: Proxy, topic: str, strict: bool
) -> Tuple[tether.Session, tether.Subscription, tether.ReconnectionAttempt]:
    manual = Manual()
    session = await within(
        tether.connect(
            proxy.url, principal="control", credentials=PASSWORD, reconnect=manual, strict=strict
        ),
        "connect",
    )
    sub = await session.subscribe(topic)
    async with tether.connect(server.url, principal="control", credentials=PASSWORD) as other:
        await other.publish(topic, "0")
        assert (await within(sub.__anext__(), "the first value")).value == b"0"
        proxy.cut()
        attempt = await manual.next()
        for i in range(1, 21):
            await other.publish(topic, str(i))
    return session, sub, attempt


async def test_gap_report_then_the_current_value(
    tiny_server: Server, tiny_proxy: Proxy, topic: str
) -> None:
    session, sub, attempt = await overflowing_outage(tiny_server, tiny_proxy, topic, strict=False)
    gap: "asyncio.Future[tether.GapReport]" = asyncio.get_running_loop().create_future()
    session.on_gap(gap.set_result)
    attempt.start()
    report = await within(gap, "the gap report")
    assert report.topics == [(topic, 20)]
    assert report.lost_count == 20 == report.lost_to - report.lost_from + 1
    snapshot = await within(sub.__anext__(), "the snapshot after the gap")
    assert (snapshot.value, snapshot.snapshot) == (b"20", True)
    assert session.state is tether.SessionState.CONNECTED_ACTIVE
    await session.close()


async def test_strict_session_closes_with_lost_messages(
    tiny_server: Server, tiny_proxy: Proxy, topic: str
) -> None:
    session, _sub, attempt = await overflowing_outage(tiny_server, tiny_proxy, topic, strict=True)
    attempt.start()
    assert await within(session.closed(), "close") is tether.CloseReason.LOST_MESSAGES
    assert session.state is tether.SessionState.CLOSED_FAILED
