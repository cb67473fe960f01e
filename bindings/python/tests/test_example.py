"""examples/python/reconnect.py runs, survives a cut, and receives everything in order."""

from __future__ import annotations

import subprocess
import sys
from typing import List

from conftest import GUARD, ROOT, Proxy


def test_reconnect_example_survives_a_cut(proxy: Proxy, topic: str) -> None:
    count = 30
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "python" / "reconnect.py"),
            "--url", proxy.url,
            "--topic", topic,
            "--count", str(count),
            "--interval", "0.02",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: List[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("update 5"):
                assert proxy.cut() == 1
        assert proc.wait(GUARD) == 0, "\n".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "\n".join(lines)
    assert "state: CONNECTED_ACTIVE -> RECOVERING_RECONNECT (transport_error)" in lines, output
    assert "state: RECOVERING_RECONNECT -> CONNECTED_ACTIVE" in lines, output
    assert f"received {count} of {count} updates, every one exactly once, in order" in lines, output
