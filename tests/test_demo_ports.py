"""scripts/demo and its ports: a busy port fails at once (before the set-up step, before any start) with a hint
to use --port; and whatever the demo started (the local chain, the services) is stopped when it is told to stop.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain import local_node

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on (a free one at +100 and -100 is not promised, so each test checks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CARDPROOF_")}
    env["CARDPROOF_HOME"] = str(home)
    return env


@pytest.mark.parametrize("offset", [0, 100], ids=["api-port", "redemption-port"])
def test_busy_port_fails_at_once_with_a_hint_and_starts_nothing(busy_port, offset, tmp_path):
    port = busy_port - offset  # the public API takes --port, the redemption service --port + 100
    if port <= 0:
        pytest.skip("no room below the busy port")
    home = tmp_path / "home"
    home.mkdir()
    t0 = time.monotonic()
    res = subprocess.run([str(REPO / "scripts" / "demo"), "--port", str(port)], cwd=REPO, env=clean_env(home),
                         capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("demo: ") and f"port {busy_port} " in lines[0], res.stderr
    assert "--port" in lines[0] and "scripts/demo --port " in lines[0]
    assert res.stdout == "" and "setup:" not in res.stderr  # neither the set-up step nor any demo step ran
    assert list(home.iterdir()) == []  # no chain, no database
    assert took < 10, f"took {took:.1f} s"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _free_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        if port + 100 <= 65_535:
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 100))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free pair of ports")


@pytest.mark.anvil
@pytest.mark.slow
def test_sigterm_while_serving_stops_the_chain_and_the_service_it_started(tmp_path):
    """The demo on anvil, stopped (SIGTERM, to the demo alone) once its public service runs: exit 130, one line,
    and its anvil and `cardproof serve` are gone, their ports free."""
    try:
        local_node.anvil_binary()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"anvil is not installed: {exc}")
    home = tmp_path / "home"
    port = _free_pair()
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "demo_flow.py"), "--port", str(port)], cwd=REPO,
                            env=clean_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("6. published"):
                break
        assert seen and seen[-1].startswith("6. published"), "".join(seen) + proc.stderr.read()[-3000:]
        anvil = json.loads((home / "chain" / "node.json").read_text())
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert _alive(anvil["pid"]) and len(children) >= 2, children  # anvil and `cardproof serve`
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("demo:")]
    assert said == ["demo: interrupted; everything it started is stopped"] and "Traceback" not in err, err[-3000:]
    deadline = time.monotonic() + 10
    while any(_alive(int(pid)) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(int(pid)) for pid in children)
    assert not (home / "chain" / "node.json").exists()
    for p in (port, anvil["port"]):
        with socket.socket() as c:
            assert c.connect_ex(("127.0.0.1", p)) != 0, f"port {p} still answers"
