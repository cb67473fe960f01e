"""Programs that end with work in flight: each scenario in ``exit_programs/`` runs in a child
interpreter (this venv's), ``TETHER_EXIT_RUNS`` times (default 3; ``cargo xtask soak`` sets
50). Every run must exit with status 0, print what the scenario prints, and write nothing
unexpected to stderr: no ``Fatal Python error``, no segfault, no traceback from a thread that
outlived its event loop or the interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from conftest import Proxy, Server

RUNS = int(os.environ.get("TETHER_EXIT_RUNS", "3"))
PROGRAMS = Path(__file__).resolve().parent / "exit_programs"
# A run that takes longer than this has hung (each normally takes about a second).
RUN_LIMIT = 60.0

Check = Callable[[str, str], Optional[str]]
"""Looks at a run's (stdout, stderr); returns what is wrong, or None."""


def _soak(program: str, args: Sequence[str], check: Check) -> None:
    """Runs ``program`` RUNS times; fails with the count and the first failure's details."""
    failures: List[str] = []
    for _ in range(RUNS):
        problem = _run_once(program, args, check)
        if problem is not None:
            failures.append(problem)
    print(f"\nexit scenario {program}: {RUNS - len(failures)}/{RUNS} runs clean")
    assert not failures, f"{len(failures)} of {RUNS} runs failed; the first:\n{failures[0]}"


def _run_once(program: str, args: Sequence[str], check: Check) -> Optional[str]:
    """Runs the program once; returns what went wrong, or None."""
    try:
        proc = subprocess.run(
            [sys.executable, str(PROGRAMS / program), *args],
            capture_output=True,
            text=True,
            timeout=RUN_LIMIT,
        )
    except subprocess.TimeoutExpired as e:
        return f"hung (killed after {RUN_LIMIT} s); stdout so far: {e.stdout!r}"
    problems = []
    if proc.returncode != 0:
        problems.append(f"exit status {proc.returncode}")
    for marker in ("Fatal Python error", "Traceback", "Segmentation fault", "panicked"):
        if marker in proc.stderr:
            problems.append(f"{marker!r} on stderr")
    wrong = check(proc.stdout, proc.stderr)
    if wrong is not None:
        problems.append(wrong)
    if not problems:
        return None
    return (
        f"{'; '.join(problems)}\n--- stdout:\n{proc.stdout}--- stderr (end):\n"
        f"{proc.stderr[-4000:]}"
    )


def _prints(*lines: str) -> Check:
    """The run printed these lines, in this order, and nothing on stderr."""

    def check(stdout: str, stderr: str) -> Optional[str]:
        out = stdout.splitlines()
        if out != list(lines):
            return f"stdout {out!r}, expected {list(lines)!r}"
        if stderr:
            return "unexpected output on stderr"
        return None

    return check


def test_exit_with_publishes_in_flight(server: Server, topic: str) -> None:
    _soak(
        "in_flight.py",
        [server.url, topic],
        _prints("queued 2000 publishes", "main returned"),
    )


def test_exit_with_tasks_in_flight(server: Server, topic: str) -> None:
    _soak(
        "tasks_in_flight.py",
        [server.url, topic],
        _prints("first publish applied", "main returned"),
    )


def test_exit_with_an_event_loop_left_open(server: Server, topic: str) -> None:
    _soak("loop_left_open.py", [server.url, topic], _prints("queued 2000 publishes"))


def test_exit_with_sync_daemon_threads(server: Server, topic: str) -> None:
    # The threads are stopped with the interpreter: neither their SessionClosedError nor the
    # end of their loops shows.
    _soak("sync_daemon_threads.py", [server.url, topic], _prints("main returns"))


def test_callbacks_of_a_closed_loop_warn_once(proxy: Proxy) -> None:
    def check(stdout: str, stderr: str) -> Optional[str]:
        out = stdout.splitlines()
        expected = [
            "change: CONNECTED_ACTIVE -> RECOVERING_RECONNECT",
            "change: RECOVERING_RECONNECT -> CONNECTED_ACTIVE",
            "shutdown: True",
        ]
        if out != expected:
            return f"stdout {out!r}, expected {expected!r} (no callback may run)"
        warnings = [line for line in stderr.splitlines() if line]
        if len(warnings) != 1 or "event loop" not in warnings[0]:
            return f"expected exactly one warning about the closed event loop, got {warnings!r}"
        return None

    _soak("closed_loop_callbacks.py", [proxy.url, proxy.control], check)
