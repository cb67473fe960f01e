"""The asyncio session: data flow, state changes, recovery across cuts, cancellation, errors."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any, List

import pytest

import tether
from conftest import PASSWORD, Manual, Proxy, Recorder, Server, wait_until, within

pytestmark = pytest.mark.asyncio

S = tether.SessionState
R = tether.CloseReason


async def connect(url: str, reconnect: Any = True, principal: str = "control") -> tether.Session:
    return await within(
        tether.connect(url, principal=principal, credentials=PASSWORD, reconnect=reconnect),
        "connect",
    )


async def test_publish_and_subscribe(server: Server, proxy: Proxy, topic: str) -> None:
    session = await connect(proxy.url)
    assert session.state is S.CONNECTED_ACTIVE
    assert re.fullmatch(r"[0-9a-f]{32}", session.session_id)
    assert session.session_id in repr(session)
    assert session.close_reason is None

    await session.publish(f"{topic}/a", "first")
    sub = await session.subscribe(f"{topic}/*")
    assert sub.selector == f"{topic}/*"
    snapshot = await within(sub.__anext__(), "the snapshot")
    assert (snapshot.topic, snapshot.value, snapshot.snapshot) == (f"{topic}/a", b"first", True)

    values: List[Any] = ["text", b"\x00\xffbytes", bytearray(b"array"), memoryview(b"view")]
    for v in values:
        await session.publish(f"{topic}/a", v)
    updates = [await within(sub.__anext__(), "an update") for _ in values]
    assert [u.value for u in updates] == [b"text", b"\x00\xffbytes", b"array", b"view"]
    assert updates[0].text == "text"
    assert not any(u.snapshot for u in updates)
    offsets = [u.offset for u in updates]
    assert offsets == sorted(offsets) and offsets[0] > snapshot.offset
    with pytest.raises(UnicodeDecodeError):
        updates[1].text
    with pytest.raises(TypeError):
        session.publish(f"{topic}/a", 42)  # type: ignore[arg-type]

    async with tether.connect(server.url, principal="control", credentials=PASSWORD) as other:
        await other.publish(f"{topic}/b", b"from another session")
    assert other.state is S.CLOSED_BY_CLIENT, "async with closes the session"
    update = await within(sub.__anext__(), "the other session's update")
    assert (update.topic, update.value) == (f"{topic}/b", b"from another session")

    await session.close()
    assert session.state is S.CLOSED_BY_CLIENT
    assert session.close_reason is R.CLOSED_BY_CLIENT
    with pytest.raises(StopAsyncIteration):
        await within(sub.__anext__(), "the end of the subscription")
    await session.close()  # a second close does nothing


async def test_state_changes_in_order(proxy: Proxy) -> None:
    session = await connect(proxy.url, reconnect=tether.ConstantDelay(0))
    stream = session.state_changes()
    rec = Recorder()
    session.on_state_change(rec)
    removed: List[tether.StateChange] = []
    remove = session.on_state_change(removed.append)
    remove()
    from_coroutine: List[tether.StateChange] = []
    all_five = asyncio.get_running_loop().create_future()

    async def async_callback(change: tether.StateChange) -> None:
        await asyncio.sleep(0)
        from_coroutine.append(change)
        if len(from_coroutine) == 5:
            all_five.set_result(None)

    session.on_state_change(async_callback)

    proxy.cut()
    await rec.until(S.CONNECTED_ACTIVE)
    proxy.cut("fin")
    await rec.until(S.CONNECTED_ACTIVE, count=2)
    await session.close()
    await rec.until(S.CLOSED_BY_CLIENT)

    expected = [
        (S.CONNECTED_ACTIVE, S.RECOVERING_RECONNECT, R.TRANSPORT_ERROR),
        (S.RECOVERING_RECONNECT, S.CONNECTED_ACTIVE, None),
        (S.CONNECTED_ACTIVE, S.RECOVERING_RECONNECT, R.TRANSPORT_ERROR),
        (S.RECOVERING_RECONNECT, S.CONNECTED_ACTIVE, None),
        (S.CONNECTED_ACTIVE, S.CLOSED_BY_CLIENT, R.CLOSED_BY_CLIENT),
    ]
    assert rec.pairs() == expected
    iterated = await within(_collect(stream), "the end of the state changes")
    assert [(c.old, c.new, c.reason) for c in iterated] == expected, "the iterator ends after close"
    assert iterated == rec.changes
    assert removed == [], "a removed callback is not called"
    await within(all_five, "the coroutine callbacks")
    assert from_coroutine == rec.changes
    assert await session.wait_for_state(S.CONNECTED_ACTIVE) is S.CLOSED_BY_CLIENT


async def test_failing_callback_is_reported_and_others_still_run(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    session = await connect(proxy.url)
    errors: List[BaseException] = []
    session.on_error(errors.append)

    def broken(change: tether.StateChange) -> None:
        raise KeyError("callback bug")

    session.on_state_change(broken)
    rec = Recorder()
    session.on_state_change(rec)
    with caplog.at_level(logging.ERROR, logger="tether"):
        await session.close()
        await rec.until(S.CLOSED_BY_CLIENT)
    assert len(errors) == 1 and isinstance(errors[0], KeyError)
    assert any(r.name == "tether" and r.exc_info for r in caplog.records)


async def test_resume_keeps_the_session_and_its_subscriptions(
    server: Server, proxy: Proxy, topic: str
) -> None:
    session = await connect(proxy.url, reconnect=tether.ConstantDelay(0.01))
    session_id = session.session_id
    sub = await session.subscribe(f"{topic}/**")
    rec = Recorder()
    session.on_state_change(rec)
    for round_ in range(3):
        assert proxy.cut("rst" if round_ % 2 == 0 else "fin") == 1
        await rec.until(S.CONNECTED_ACTIVE, count=round_ + 1)
        assert session.session_id == session_id, "the same session after every resume"
        await session.publish(f"{topic}/x", str(round_))
        update = await within(sub.__anext__(), "an update after the resume")
        assert (update.value, update.snapshot) == (str(round_).encode(), False)
    await session.close()


async def test_nothing_lost_in_either_direction_across_a_cut(
    server: Server, proxy: Proxy, topic: str
) -> None:
    manual = Manual()
    away = await connect(proxy.url, reconnect=manual)  # through the proxy
    home = await connect(server.url)  # direct to the server
    to_away = await away.subscribe(f"{topic}/to-away")
    to_home = await home.subscribe(f"{topic}/to-home")
    rec = Recorder()
    away.on_state_change(rec)

    for i in range(20):
        await home.publish(f"{topic}/to-away", str(i))
    proxy.refuse()
    assert proxy.cut() == 1
    attempt = await manual.next()  # `away` is disconnected now
    assert away.state is S.RECOVERING_RECONNECT

    for i in range(20, 40):
        await home.publish(f"{topic}/to-away", str(i))
    queued = [away.publish(f"{topic}/to-home", str(i)) for i in range(30)]
    assert not any(p.done() for p in queued), "nothing is applied while disconnected"

    proxy.heal()
    assert attempt.start()
    await rec.until(S.CONNECTED_ACTIVE)
    await within(asyncio.gather(*queued), "the queued publishes")

    received = [await within(to_away.__anext__(), f"update {i}") for i in range(40)]
    assert [u.value.decode() for u in received] == [str(i) for i in range(40)]
    assert not any(u.snapshot for u in received)
    got_home = [await within(to_home.__anext__(), f"update {i}") for i in range(30)]
    assert [u.value.decode() for u in got_home] == [str(i) for i in range(30)]

    # Exactly once: the next update after the last one is a fresh sentinel, no duplicate.
    await home.publish(f"{topic}/to-away", "end")
    await away.publish(f"{topic}/to-home", "end")
    assert (await within(to_away.__anext__(), "sentinel")).value == b"end"
    assert (await within(to_home.__anext__(), "sentinel")).value == b"end"
    await away.close()
    await home.close()


async def test_cancelling_connect_leaves_no_session(proxy: Proxy) -> None:
    proxy.delay(300)  # the upgrade takes at least 600 ms
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            tether.connect(proxy.url, principal="control", credentials=PASSWORD), 0.1
        )
    await proxy.await_(forwarded=1)
    # The session opens on the server after the caller gave up; the binding closes it.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(
        None,
        lambda: wait_until(lambda: proxy.status()["active"] == 0, "the orphan session to close"),
    )
    proxy.heal()
    session = await connect(proxy.url)
    assert session.state is S.CONNECTED_ACTIVE, "connecting afterwards works"
    await session.close()


async def test_cancelling_a_wait_for_an_update_loses_nothing(server: Server, topic: str) -> None:
    session = await connect(server.url)
    sub = await session.subscribe(f"{topic}/c")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(sub.__anext__(), 0.05)
    # Race cancellations against deliveries: every value still arrives exactly once.
    received: List[bytes] = []
    for i in range(40):
        step = asyncio.ensure_future(sub.__anext__())
        await session.publish(f"{topic}/c", str(i))
        if i % 2:
            await asyncio.sleep(0)
        step.cancel()
        try:
            received.append((await step).value)
        except asyncio.CancelledError:
            received.append((await within(sub.__anext__(), f"update {i}")).value)
    assert received == [str(i).encode() for i in range(40)]
    await session.close()


async def test_a_burst_settles_and_arrives_in_order_with_cancelled_waits(
    server: Server, topic: str
) -> None:
    """2,000 publishes at once all settle; their updates come in batches across the native
    boundary and are handed out one by one, in order, each once, even when waits for them are
    cancelled in the middle of a batch."""
    session = await connect(server.url)
    sub = await session.subscribe(f"{topic}/*")
    n = 2000
    published = [session.publish(f"{topic}/{'odd' if i % 2 else 'even'}", str(i)) for i in range(n)]
    outcomes = await within(asyncio.gather(*published, return_exceptions=True), "the publishes")
    assert [o for o in outcomes if o is not None] == []
    received: List[Any] = []
    while len(received) < n:
        if len(received) % 97 == 1:
            # A wait cancelled mid-batch, before or after it ran: nothing is lost.
            step = asyncio.ensure_future(sub.__anext__())
            if len(received) % 2:
                await asyncio.sleep(0)
            step.cancel()
            try:
                received.append(await step)
            except asyncio.CancelledError:
                pass
        received.append(await within(sub.__anext__(), f"update {len(received)}"))
    assert [(u.topic, u.value) for u in received] == [
        (f"{topic}/{'odd' if i % 2 else 'even'}", str(i).encode()) for i in range(n)
    ]
    assert not any(u.snapshot for u in received)
    await session.close()


async def test_cancelled_publish_is_still_delivered_and_the_session_goes_on(
    server: Server, proxy: Proxy, topic: str
) -> None:
    manual = Manual()
    session = await connect(proxy.url, reconnect=manual)
    watcher = await connect(server.url)
    sub = await watcher.subscribe(f"{topic}/p")
    proxy.refuse()
    proxy.cut()
    attempt = await manual.next()
    pending = asyncio.create_task(session.publish(f"{topic}/p", "queued"))
    await asyncio.sleep(0)  # the task now waits for the outcome
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    proxy.heal()
    attempt.start()
    await session.wait_for_state(S.CONNECTED_ACTIVE)
    await within(session.publish(f"{topic}/p", "after"), "a publish after the cancel")
    values = [(await within(sub.__anext__(), "update")).value for _ in range(2)]
    assert values == [b"queued", b"after"]
    assert session.state is S.CONNECTED_ACTIVE
    await session.close()
    await watcher.close()


async def test_subscription_context_unsubscribes(server: Server, topic: str) -> None:
    session = await connect(server.url)
    async with session.subscribe(f"{topic}/s") as sub:
        await session.publish(f"{topic}/s", "1")
        assert (await within(sub.__anext__(), "update")).value == b"1"
    with pytest.raises(StopAsyncIteration):
        await within(sub.__anext__(), "the end after unsubscribe")
    with pytest.raises(tether.RequestRejectedError) as err:
        await session.unsubscribe(f"{topic}/s")
    assert err.value.kind == "not_subscribed"
    collected = []
    async for update in session.subscribe(f"{topic}/s"):  # iterating subscribes
        collected.append(update)
        break
    assert [u.value for u in collected] == [b"1"] and collected[0].snapshot
    await session.close()


async def test_open_errors_are_typed(server: Server) -> None:
    with pytest.raises(tether.AuthenticationError) as auth:
        await tether.connect(server.url, principal="control", credentials="wrong")
    assert isinstance(auth.value, tether.OpenError) and isinstance(auth.value, tether.TetherError)
    assert auth.value.reason is R.AUTHENTICATION_FAILED

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(tether.ConnectionFailedError) as refused:
        await tether.connect(f"ws://127.0.0.1:{port}", reconnect=False)
    assert isinstance(refused.value, ConnectionError)
    assert refused.value.reason is R.CONNECTION_ERROR

    with pytest.raises(tether.InvalidArgumentError) as bad_url:
        await tether.connect("http://127.0.0.1:1")
    assert isinstance(bad_url.value, ValueError)
    with pytest.raises(tether.InvalidArgumentError):
        await tether.connect(server.url, credentials="password-without-principal")
    with pytest.raises(tether.InvalidArgumentError):
        await tether.connect(server.url, principal="control", credentials=PASSWORD, connect_timeout=-1)


async def test_request_errors_are_typed_and_the_session_stays_open(server: Server, topic: str) -> None:
    session = await connect(server.url, principal="reader")
    with pytest.raises(tether.AccessDeniedError) as denied:
        await session.publish(f"{topic}/private", "x")
    assert isinstance(denied.value, tether.RequestRejectedError)
    assert isinstance(denied.value, PermissionError)
    assert denied.value.kind == "access_denied"
    with pytest.raises(tether.AccessDeniedError):
        await session.subscribe(f"{topic}/**")
    with pytest.raises(tether.InvalidArgumentError):
        await session.publish("bad//topic", "x")
    assert session.state is S.CONNECTED_ACTIVE
    sub = await session.subscribe(f"public/{topic}")
    await session.publish(f"public/{topic}", "allowed")
    assert (await within(sub.__anext__(), "update")).value == b"allowed"
    await session.close()
    with pytest.raises(tether.SessionClosedError) as closed:
        await session.publish(f"public/{topic}", "late")
    assert closed.value.reason is R.CLOSED_BY_CLIENT


async def _collect(stream: tether.StateChanges) -> List[tether.StateChange]:
    return [change async for change in stream]

