"""Fixtures: the real Tether server and the fault proxy, as subprocesses on loopback.

Both binaries come from the workspace's shared target directory (build them with
``cargo build -p tether-server -p tether-testkit``); ``TETHER_BIN_DIR`` overrides where they
are looked for.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Dict, Iterator, List, Optional, Tuple, TypeVar

import pytest

import tether

ROOT = Path(__file__).resolve().parents[3]
BIN_DIR = Path(os.environ.get("TETHER_BIN_DIR", ROOT / "target" / "debug"))
PASSWORD = "password"

T = TypeVar("T")

# Bounds on waits, only ever reached when a test fails.
GUARD = 20.0


async def within(aw: Awaitable[T], what: str, timeout: float = GUARD) -> T:
    """``await aw``, failing the test (not hanging) if it takes longer than ``timeout``."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


def _binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build -p tether-server -p tether-testkit`")
    return path


def _read_json_line(proc: "subprocess.Popen[str]", what: str, log: Optional[Path] = None) -> Dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        details = log.read_text() if log is not None and log.exists() else ""
        pytest.fail(f"{what} exited before printing its address: {details}")
    value: Dict[str, Any] = json.loads(line)
    return value


def _stop(proc: "subprocess.Popen[str]") -> None:
    if proc.stdin:
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Server:
    def __init__(self, addr: str, log: Path) -> None:
        self.addr = addr
        self.url = f"ws://{addr}"
        self.log = log


def _server_config(workdir: Path, extra_config: str) -> Path:
    """A configuration with principal ``control`` (every permission) and ``reader`` (only
    ``public/**``), both with password ``password``."""
    exe = _binary("tether-server")
    digest = subprocess.run(
        [str(exe), "hash-password"], input=PASSWORD, capture_output=True, text=True, check=True
    ).stdout.strip()
    config = workdir / "tether.toml"
    config.write_text(
        f"""
listen = "127.0.0.1:0"
{extra_config}
[[principals]]
name = "control"
password_hash = "{digest}"
subscribe = ["**"]
publish = ["**"]
[[principals]]
name = "reader"
password_hash = "{digest}"
subscribe = ["public/**"]
publish = ["public/**"]
"""
    )
    return config


def _start_server(config: Path, listen: str, log: Path) -> "Tuple[subprocess.Popen[str], str]":
    """The server process and the address it listens on."""
    with open(log, "a") as stderr:
        proc = subprocess.Popen(
            [str(_binary("tether-server")), "--config", str(config), "--listen", listen],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        return proc, _read_json_line(proc, "tether-server", log)["listen"]
    except BaseException:
        _stop(proc)
        raise


@contextmanager
def running_server(workdir: Path, extra_config: str = "") -> Iterator[Server]:
    """A server with principal ``control`` (every permission) and ``reader`` (only
    ``public/**``), both with password ``password``; its log goes to ``workdir``."""
    log = workdir / "server.log"
    proc, addr = _start_server(_server_config(workdir, extra_config), "127.0.0.1:0", log)
    try:
        yield Server(addr, log)
    finally:
        _stop(proc)


class RestartableServer(Server):
    """A server that :meth:`restart` restarts in place, as ``systemctl restart`` does."""

    def __init__(self, config: Path, log: Path) -> None:
        self._config = config
        self._proc, addr = _start_server(config, "127.0.0.1:0", log)
        super().__init__(addr, log)

    def restart(self) -> None:
        """SIGTERM (the server drains: every session is sent away with reason
        ``server_draining`` and the configured retry-after hint, and saved to the state
        directory), then the same server again on the same address once it has exited."""
        _stop(self._proc)
        self._proc, _ = _start_server(self._config, self.addr, self.log)

    def stop(self) -> None:
        _stop(self._proc)


@contextmanager
def restartable_server(workdir: Path, extra_config: str = "") -> Iterator[RestartableServer]:
    """As :func:`running_server`, restartable: give it a ``state_dir`` in ``extra_config`` so
    that the sessions survive the restart."""
    server = RestartableServer(_server_config(workdir, extra_config), workdir / "server.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the whole run. Tests use topics of their own."""
    with running_server(tmp_path_factory.mktemp("server")) as s:
        yield s


class Proxy:
    """The fault proxy in front of the server (see crates/tether-testkit/README.md)."""

    def __init__(self, proc: "subprocess.Popen[str]", proxy: str, control: str) -> None:
        self.proc = proc
        self.addr = proxy
        self.url = f"ws://{proxy}"
        self.control = control

    def _request(self, method: str, path: str, timeout: float = GUARD) -> Dict[str, Any]:
        req = urllib.request.Request(f"http://{self.control}{path}", method=method, data=b"")
        if method == "GET":
            req = urllib.request.Request(f"http://{self.control}{path}", method="GET")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: Dict[str, Any] = json.loads(resp.read())
            return result

    def cut(self, mode: str = "rst") -> int:
        return int(self._request("POST", f"/cut?mode={mode}")["cut"])

    def stall(self) -> int:
        return int(self._request("POST", "/stall")["stalled"])

    def refuse(self, ms: int = 0) -> None:
        self._request("POST", f"/refuse?ms={ms}")

    def delay(self, ms: int) -> None:
        self._request("POST", f"/delay?ms={ms}")

    def heal(self) -> None:
        self._request("POST", "/heal")

    def status(self) -> Dict[str, Any]:
        return self._request("GET", "/status")

    def wait(self, forwarded: Optional[int] = None, refused: Optional[int] = None) -> None:
        """Blocks until that many connections were forwarded / refused in total."""
        query = []
        if forwarded is not None:
            query.append(f"forwarded={forwarded}")
        if refused is not None:
            query.append(f"refused={refused}")
        query.append(f"timeout_ms={int(GUARD * 1000)}")
        try:
            self._request("GET", "/wait?" + "&".join(query), timeout=GUARD + 5)
        except urllib.error.HTTPError as e:
            pytest.fail(f"fault proxy /wait failed: {e.code} {e.read().decode()}")

    async def await_(self, forwarded: Optional[int] = None, refused: Optional[int] = None) -> None:
        """:meth:`wait` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: self.wait(forwarded, refused))


@contextmanager
def running_proxy(upstream: Server) -> Iterator[Proxy]:
    proc = subprocess.Popen(
        [str(_binary("tether-faultproxy")), "--upstream", upstream.addr, "--exit-on-stdin-close"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        info = _read_json_line(proc, "tether-faultproxy")
        yield Proxy(proc, info["proxy"], info["control"])
    finally:
        _stop(proc)


@pytest.fixture
def proxy(server: Server) -> Iterator[Proxy]:
    """A fresh fault proxy per test, so that a cut only affects that test's sessions."""
    with running_proxy(server) as p:
        yield p


@pytest.fixture
def topic() -> str:
    """A topic prefix no other test uses (the server keeps every topic's latest value)."""
    return f"t{uuid.uuid4().hex[:12]}"


class Recorder:
    """Collects state changes from ``on_state_change`` and lets a test wait for one."""

    def __init__(self) -> None:
        self.changes: List[tether.StateChange] = []
        self._waiters: List[Tuple[tether.SessionState, int, "asyncio.Future[None]"]] = []

    def _count(self, state: tether.SessionState) -> int:
        return sum(1 for c in self.changes if c.new is state)

    def __call__(self, change: tether.StateChange) -> None:
        self.changes.append(change)
        for waiter in list(self._waiters):
            state, count, fut = waiter
            if self._count(state) >= count:
                self._waiters.remove(waiter)
                if not fut.done():
                    fut.set_result(None)

    def pairs(self) -> List[Tuple[Any, Any, Any]]:
        return [(c.old, c.new, c.reason) for c in self.changes]

    async def until(self, state: tether.SessionState, count: int = 1) -> None:
        """Waits until ``state`` was entered ``count`` times."""
        if self._count(state) >= count:
            return
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._waiters.append((state, count, fut))
        await within(fut, f"state {state.value} x{count}; saw {self.pairs()}")


def wait_until(predicate: Any, what: str, timeout: float = GUARD) -> None:
    """Polls ``predicate`` (for facts only observable by polling, like the proxy's count of
    open connections); fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Manual:
    """A strategy (a plain function, run on the loop) that hands each attempt to the test."""

    def __init__(self) -> None:
        self.queue: "asyncio.Queue[tether.ReconnectionAttempt]" = asyncio.Queue()

    def __call__(self, attempt: tether.ReconnectionAttempt) -> None:
        self.queue.put_nowait(attempt)

    async def next(self) -> tether.ReconnectionAttempt:
        return await within(self.queue.get(), "a reconnection attempt")
