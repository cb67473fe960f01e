"""The Python runner of the conformance scenarios (``conformance/scenarios.txt``): every
scenario against the real server behind the fault proxy (both from the fixture,
``tether-conformance-fixture``), through this package's asyncio API. A scenario whose step
the package cannot do yet is skipped as "not supported: <reason>", never passed. Results go
to ``target/conformance/python.txt`` for ``cargo xtask conformance``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import tether

ROOT = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("TETHER_BIN_DIR", ROOT / "target" / "debug"))
SCENARIOS = ROOT / "conformance" / "scenarios.txt"
RESULTS = Path(os.environ.get("TETHER_CONFORMANCE_OUT", ROOT / "target" / "conformance"))
GUARD = 20.0
PASSWORD = "password"

Step = Tuple[str, Dict[str, str], int]


def load() -> List[Tuple[str, List[Step]]]:
    """The scenarios: (name, [(verb, args, line)])."""
    scenarios: List[Tuple[str, List[Step]]] = []
    for number, raw in enumerate(SCENARIOS.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        verb, _, rest = line.partition(" ")
        if verb == "scenario":
            scenarios.append((rest.strip(), []))
        elif verb == "about":
            continue
        else:
            args = dict(word.split("=", 1) for word in rest.split())
            scenarios[-1][1].append((verb, args, number))
    return scenarios


class Unsupported(Exception):
    """The package cannot do this step yet."""


class Failed(Exception):
    pass


class Fixture:
    """The fixture process and its HTTP API."""

    def __init__(self) -> None:
        exe = BIN_DIR / "tether-conformance-fixture"
        if not exe.exists():
            pytest.fail(f"{exe} is missing: cargo build -p tether-conformance")
        self.proc = subprocess.Popen(
            [str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if not first.startswith("control="):
            pytest.fail(f"the fixture said {first!r}")
        self.control = first.split("=", 1)[1]

    def call(self, path: str, **query: str) -> Dict[str, str]:
        q = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in query.items())
        url = f"http://{self.control}/{path}" + (f"?{q}" if q else "")
        try:
            with urllib.request.urlopen(url, timeout=GUARD + 10) as resp:
                body: str = resp.read().decode().strip()
        except urllib.error.HTTPError as e:
            body = e.read().decode().strip()
        word, _, rest = body.partition(" ")
        if word != "ok":
            raise Failed(f"fixture /{path}: {body}")
        return dict(w.split("=", 1) for w in rest.split() if "=" in w)

    async def acall(self, path: str, **query: str) -> Dict[str, str]:
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.call(path, **query)
        )

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def error_name(exc: BaseException) -> str:
    if isinstance(exc, tether.OutcomeUnknownError):
        return "outcome_unknown"
    if isinstance(exc, tether.SessionClosedError):
        return "closed"
    if isinstance(exc, tether.QueueFullError):
        return "queue_full"
    if isinstance(exc, tether.TetherError) and exc.kind is not None:
        return exc.kind
    return f"other ({type(exc).__name__}: {exc})"


CHILD = """
import asyncio, sys, tether
async def main():
    session = await tether.connect(sys.argv[1], principal="control", credentials="password")
    sub = await session.subscribe("exit/t")
    await session.publish("exit/t", "bye")
    update = await asyncio.wait_for(sub.__anext__(), 20)
    assert update.text == "bye"
    print("done", flush=True)
    globals()["kept"] = session  # left open: no close, no shutdown
asyncio.run(main())
"""


class Runner:
    def __init__(self, fixture: Fixture) -> None:
        self.fixture = fixture
        self.env: Dict[str, str] = {}
        self.session: Optional[tether.Session] = None
        self.changes: List[tether.StateChange] = []
        self.gaps: List[tether.GapReport] = []
        self.attempts: List[tether.ReconnectionAttempt] = []
        self.hooks: List[int] = [0, 0]
        self.updates: Dict[str, List[str]] = {}
        self.cursor = 0
        self.timeout = 60.0
        self.last_elapsed = 0.0
        self.sends: Dict[str, Any] = {}
        self.gates: Dict[str, asyncio.Event] = {}
        self.tasks: List["asyncio.Task[None]"] = []
        self.changed = asyncio.Event()

    def touch(self) -> None:
        self.changed.set()

    async def wait(self, what: str, check: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GUARD
        while True:
            self.changed.clear()
            got = check()
            if got is not None and got is not False:
                return got
            left = deadline - loop.time()
            if left <= 0:
                raise Failed(f"timed out waiting for {what}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def need_session(self) -> tether.Session:
        if self.session is None:
            raise Failed("no session: `open` first")
        return self.session

    async def finish(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.session is not None:
            await asyncio.wait_for(self.session.close(), GUARD)

    # ── steps ───────────────────────────────────────────────────────────────────────────

    async def step(self, verb: str, a: Dict[str, str]) -> None:
        handler = getattr(self, "do_" + verb, None)
        if handler is None:
            raise Failed(f"unknown step {verb}")
        await handler(a)

    async def do_env(self, a: Dict[str, str]) -> None:
        self.env = await self.fixture.acall("env", **a)

    async def do_open(self, a: Dict[str, str]) -> None:
        known = {"principal", "timeout_ms", "strategy", "delay_ms", "max_attempts", "initial_ms",
                 "max_ms", "jitter", "strict", "queue", "close_timeout_ms", "ping_ms",
                 "delivery_limit", "ca", "expect"}
        unknown = set(a) - known
        if unknown:
            raise Failed(f"open: unknown keys {unknown}")
        options: Dict[str, Any] = {}
        if a.get("ca") == "fixture":
            with open(self.env["ca"], encoding="utf-8") as f:
                options["tls_root_certificates"] = f.read()
        if "queue" in a:
            options["max_queued_requests"] = int(a["queue"])
        if "close_timeout_ms" in a:
            options["close_timeout"] = int(a["close_timeout_ms"]) / 1000
        if "ping_ms" in a:
            options["ping_period"] = int(a["ping_ms"]) / 1000
        if "delivery_limit" in a:
            options["delivery_limit"] = int(a["delivery_limit"])
        if "timeout_ms" in a:
            self.timeout = int(a["timeout_ms"]) / 1000
        strategy: Any = None
        kind = a.get("strategy")
        ms = lambda k, d: int(a.get(k, d)) / 1000  # noqa: E731
        if kind == "manual":
            runner = self

            class Manual:
                def __call__(self, attempt: tether.ReconnectionAttempt) -> None:
                    runner.attempts.append(attempt)
                    runner.touch()

                def on_success(self, info: tether.AttemptInfo) -> None:
                    runner.hooks[0] += 1
                    runner.touch()

                def on_failure(self, info: tether.AttemptInfo, reason: tether.CloseReason) -> None:
                    runner.hooks[1] += 1
                    runner.touch()

            strategy = Manual()
        elif kind == "default":
            strategy = tether.DefaultStrategy()
        elif kind == "constant":
            max_attempts = int(a["max_attempts"]) if "max_attempts" in a else None
            strategy = tether.ConstantDelay(ms("delay_ms", 0), max_attempts)
        elif kind == "backoff":
            strategy = tether.ExponentialBackoff(
                initial=ms("initial_ms", 250), multiplier=2.0, max_delay=ms("max_ms", 10000),
                jitter=a.get("jitter", "full"),
                max_attempts=int(a["max_attempts"]) if "max_attempts" in a else None)
        elif kind == "abort":
            strategy = tether.AbortImmediately()
        elif kind is not None:
            raise Failed(f"strategy={kind}")
        reconnect = tether.Reconnect(self.timeout, strategy) if strategy is not None else self.timeout
        try:
            session = await asyncio.wait_for(
                tether.connect(self.env["url"], principal=a.get("principal", "control"),
                               credentials=PASSWORD, reconnect=reconnect,
                               strict=a.get("strict") == "1", **options),
                GUARD)
        except tether.TetherError as e:
            if a.get("expect") == "error":
                return
            raise Failed(f"cannot open: {e}") from e
        if a.get("expect") == "error":
            await session.close()
            raise Failed("opened, but it should have failed")

        def on_state(change: tether.StateChange) -> None:
            if change.old is not tether.SessionState.CONNECTING:
                self.changes.append(change)
                self.touch()

        def on_gap(report: tether.GapReport) -> None:
            self.gaps.append(report)
            self.touch()

        session.on_state_change(on_state)
        session.on_gap(on_gap)
        if self.session is not None:
            await self.session.close()
        self.session = session

    async def do_subscribe(self, a: Dict[str, str]) -> None:
        topic = a["topic"]
        sub = await asyncio.wait_for(self.need_session().subscribe(topic), GUARD)
        gate: Optional[asyncio.Event] = None
        if a.get("consumer") == "paused":
            gate = asyncio.Event()
            self.gates[topic] = gate

        async def read() -> None:
            if gate is not None:
                await gate.wait()
            async for update in sub:
                self.updates.setdefault(update.topic, []).append(update.value.decode(errors="replace"))
                self.touch()

        self.tasks.append(asyncio.get_running_loop().create_task(read()))

    async def do_resume_consumer(self, a: Dict[str, str]) -> None:
        self.gates[a["topic"]].set()

    async def outcome(self, awaitable: Any) -> str:
        try:
            await asyncio.wait_for(awaitable, GUARD)
            return "ok"
        except asyncio.TimeoutError:
            raise Failed("timed out waiting for a publish") from None
        except tether.TetherError as e:
            return error_name(e)

    @staticmethod
    def expect(a: Dict[str, str], got: str) -> None:
        want = a.get("expect", "ok")
        if got != want:
            raise Failed(f"outcome {got}, expected {want}")

    async def do_publish(self, a: Dict[str, str]) -> None:
        try:
            pending = self.need_session().publish(a["topic"], a["value"])
        except tether.TetherError as e:
            return self.expect(a, error_name(e))
        self.expect(a, await self.outcome(pending))

    async def do_send(self, a: Dict[str, str]) -> None:
        try:
            pending = self.need_session().publish(a["topic"], a["value"])
        except tether.TetherError as e:
            return self.expect(a, error_name(e))
        if a.get("expect", "ok") != "ok":
            # The call queues nothing when it cannot: its outcome comes at once.
            return self.expect(a, await self.outcome(pending))
        if "as" in a:
            self.sends[a["as"]] = pending

    async def do_await_send(self, a: Dict[str, str]) -> None:
        self.expect(a, await self.outcome(self.sends.pop(a["name"])))

    async def do_server_publish(self, a: Dict[str, str]) -> None:
        await self.fixture.acall("publish", **a)

    async def do_expect_received(self, a: Dict[str, str]) -> None:
        topic, count, last = a["topic"], int(a.get("count", "1")), a.get("last")

        def check() -> bool:
            got = self.updates.get(topic, [])
            return len(got) >= count and (last is None or got[-1] == last)

        await self.wait(f"{count} update(s) of {topic}, the last {last}", check)

    async def do_cut(self, a: Dict[str, str]) -> None:
        await self.fixture.acall("cut", mode=a.get("mode", "rst"))

    async def do_stall(self, a: Dict[str, str]) -> None:
        await self.fixture.acall("stall")

    async def do_refuse(self, a: Dict[str, str]) -> None:
        await self.fixture.acall("refuse")

    async def do_heal(self, a: Dict[str, str]) -> None:
        await self.fixture.acall("heal")

    async def do_drain(self, a: Dict[str, str]) -> None:
        await self.fixture.acall("drain")

    async def do_expect_state(self, a: Dict[str, str]) -> None:
        want = a["state"]

        def check() -> Optional[int]:
            for i in range(self.cursor, len(self.changes)):
                if self.changes[i].new.value == want:
                    return i
            return None

        at: int = await self.wait(f"the session to enter {want}", check)
        self.cursor = at + 1
        reason = self.changes[at].reason
        if "reason" in a and (reason is None or reason.value != a["reason"]):
            raise Failed(f"entered {want} with reason {reason}, not {a['reason']}")

    async def do_wait_state(self, a: Dict[str, str]) -> None:
        want = tether.SessionState(a["state"])
        got = await asyncio.wait_for(self.need_session().wait_for_state(want), GUARD)
        if got is not want:
            raise Failed(f"reached {got}, not {want}")

    async def do_expect_attempt(self, a: Dict[str, str]) -> None:
        n = int(a.get("number", "1"))
        attempt: tether.ReconnectionAttempt = await self.wait(
            f"reconnection attempt {n}", lambda: self.attempts[n - 1] if len(self.attempts) >= n else None)
        wrong = []
        if attempt.number != n:
            wrong.append(f"number {attempt.number}")
        if "last_reason" in a and attempt.reason.value != a["last_reason"]:
            wrong.append(f"last reason {attempt.reason.value}")
        retry = a.get("retry_after")
        if retry == "none" and attempt.retry_after is not None:
            wrong.append(f"retry-after {attempt.retry_after}, expected none")
        elif retry not in (None, "none") and (
            attempt.retry_after is None or round(attempt.retry_after * 1000) != int(retry)
        ):
            wrong.append(f"retry-after {attempt.retry_after}, expected {retry} ms")
        if not 0 < attempt.remaining <= self.timeout:
            wrong.append(f"remaining {attempt.remaining} (timeout {self.timeout})")
        if attempt.elapsed < self.last_elapsed:
            wrong.append(f"elapsed {attempt.elapsed} went back from {self.last_elapsed}")
        self.last_elapsed = attempt.elapsed
        if wrong:
            raise Failed(f"attempt {n}: {', '.join(wrong)}")

    async def do_decide(self, a: Dict[str, str]) -> None:
        if not self.attempts:
            raise Failed("no attempt to decide")
        attempt = self.attempts[-1]
        decide = attempt.start if a["action"] == "start" else attempt.abort
        if a.get("from") == "thread":
            decided = await asyncio.get_running_loop().run_in_executor(None, decide)
        else:
            decided = decide()
        if not decided:
            raise Failed("the attempt was already decided (or the session stopped waiting)")

    async def do_expect_hooks(self, a: Dict[str, str]) -> None:
        want = [int(a["success"]), int(a["failure"])]
        await self.wait(f"{want[0]} success and {want[1]} failure hook calls",
                        lambda: self.hooks[0] >= want[0] and self.hooks[1] >= want[1])
        if self.hooks != want:
            raise Failed(f"hooks called {self.hooks} (success, failure), expected {want}")

    async def do_expect_gap(self, a: Dict[str, str]) -> None:
        topic = a["topic"]
        await self.wait(
            f"a gap report naming {topic}",
            lambda: any(g.lost_count > 0 and any(t == topic for t, _ in g.topics) for g in self.gaps))

    async def do_expect_ping_period(self, a: Dict[str, str]) -> None:
        period = self.need_session().ping_period
        want = int(a["ms"]) / 1000
        if period is None or abs(period - want) > 1e-9:
            raise Failed(f"ping period {period}, expected {want} s")

    async def do_expect_proxy(self, a: Dict[str, str]) -> None:
        await self.fixture.acall("wait_refused", n=a["refused"])

    async def do_close(self, a: Dict[str, str]) -> None:
        await asyncio.wait_for(self.need_session().close(), GUARD)

    async def do_expect_closed(self, a: Dict[str, str]) -> None:
        session = self.need_session()
        reason = await asyncio.wait_for(session.closed(), GUARD)
        if session.state.value != a["state"] or reason.value != a["reason"]:
            raise Failed(f"closed in {session.state} ({reason}), expected {a['state']} ({a['reason']})")

    async def do_exit_child(self, a: Dict[str, str]) -> None:
        def run() -> "subprocess.CompletedProcess[str]":
            return subprocess.run([sys.executable, "-c", CHILD, self.env["url"]],
                                  capture_output=True, text=True, timeout=GUARD)
        try:
            proc = await asyncio.get_running_loop().run_in_executor(None, run)
        except subprocess.TimeoutExpired:
            raise Failed("the child did not exit") from None
        if proc.returncode != 0 or "done" not in proc.stdout or "Traceback" in proc.stderr:
            raise Failed(f"child: status {proc.returncode}, stdout {proc.stdout!r}, stderr {proc.stderr[-2000:]!r}")


SCENARIO_LIST = load()
RESULT_LINES: Dict[str, str] = {}


@pytest.fixture(scope="module")
def fixture() -> Iterator[Fixture]:
    f = Fixture()
    yield f
    f.stop()
    if len(RESULT_LINES) == len(SCENARIO_LIST):
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "python.txt").write_text(
            "".join(RESULT_LINES[name] + "\n" for name, _ in SCENARIO_LIST))


async def run_scenario(fixture: Fixture, steps: List[Step]) -> Tuple[str, str]:
    runner = Runner(fixture)
    outcome = ("pass", "")
    for verb, args, line in steps:
        where = f"line {line}: {verb}"
        try:
            await runner.step(verb, args)
        except Unsupported as e:
            outcome = ("unsupported", f"{where}: {e}")
            break
        except (Failed, asyncio.TimeoutError, tether.TetherError, KeyError, ValueError) as e:
            outcome = ("FAIL", f"{where}: {type(e).__name__}: {e}")
            break
    try:
        await runner.finish()
    except (tether.TetherError, asyncio.TimeoutError) as e:
        if outcome[0] == "pass":
            outcome = ("FAIL", f"closing at the end: {e}")
    return outcome


@pytest.mark.parametrize("name,steps", SCENARIO_LIST, ids=[n for n, _ in SCENARIO_LIST])
def test_scenario(fixture: Fixture, name: str, steps: List[Step]) -> None:
    word, detail = asyncio.run(run_scenario(fixture, steps))
    RESULT_LINES[name] = f"{name}\t{word}\t{detail}"
    if word == "unsupported":
        pytest.skip(f"not supported: {detail}")
    if word == "FAIL":
        pytest.fail(detail)
