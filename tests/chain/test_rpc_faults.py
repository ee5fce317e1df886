"""A dead or frozen node (chain/rpc.py): one timeout, bounded retries, a circuit breaker, one true line.

A real anvil is frozen with SIGSTOP (and always resumed with SIGCONT): a lookup costs at most the timeout, the
next ones fail fast while the circuit is open, and it closes once the node answers again. The CLI says that the
node does not answer, never "no chain configured".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from chain import local_node
from chain.client import connect, http_web3
from chain.errors import ChainUnreachable
from chain.rpc import (
    CircuitBreaker,
    GuardedHTTPProvider,
    RpcPolicy,
    breaker_for,
    breaker_states,
    reset_breakers,
)
from chain.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 1.5


@pytest.fixture(autouse=True)
def _fresh_breakers() -> Iterator[None]:
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[local_node.NodeInfo]:
    home = tmp_path / "home"
    info = local_node.start(home, port=local_node.free_port())
    try:
        yield info
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGCONT)
        local_node.stop(home)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def frozen(node: local_node.NodeInfo) -> Iterator[None]:
    """anvil stopped by SIGSTOP (once the kernel says it is stopped), resumed by SIGCONT whatever happens."""
    os.kill(node.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while _state(node.pid) not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.005)
        yield
    finally:
        os.kill(node.pid, signal.SIGCONT)


# ---------------------------------------------------------------------------------------------- the breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_fails_fast_probes_and_closes():
    clock = Clock()
    b = CircuitBreaker("http://node.test", failures=3, cooldown=5.0, timeout=2.0, clock=clock)
    for _ in range(2):
        b.before()
        b.failure("connection refused", 0.01)
    assert b.state == "closed"
    b.before()
    b.failure("connection refused", 0.01)
    assert b.state == "open" and b.openings == 1
    with pytest.raises(ChainUnreachable, match=r"^the chain node at http://node.test does not answer "
                                               r"\(connection refused\); not asked again for 1 s$"):
        b.before()
    clock.now += 1.0
    assert b.state == "half-open"
    b.before()  # the probe
    with pytest.raises(ChainUnreachable):
        b.before()  # only one probe at a time
    # The probe failed: open again, twice as long each time, up to the cool-down.
    for wait in (2.0, 4.0, 5.0, 5.0):
        b.failure("connection refused", 0.01)
        assert b.state == "open"
        clock.now += wait - 0.1
        with pytest.raises(ChainUnreachable):
            b.before()
        clock.now += 0.1
        b.before()
    b.success()
    assert b.state == "closed" and b.openings == 1
    b.before()
    for _ in range(3):
        b.failure("connection refused", 0.01)
    assert b.state == "open" and b.openings == 2
    clock.now += 1.0  # a new outage starts again with a short wait
    b.before()


def test_one_timeout_opens_the_breaker():
    """A time-out already cost the whole budget: the next request must not cost it again."""
    b = CircuitBreaker("http://node.test", failures=3, cooldown=5.0, timeout=2.0, clock=Clock())
    b.before()
    b.failure("timed out after 2 s", 2.0)
    assert b.state == "open"


def test_a_success_resets_the_count():
    b = CircuitBreaker("http://node.test", failures=2, cooldown=5.0, timeout=2.0, clock=Clock())
    b.failure("connection refused", 0.01)
    b.success()
    b.failure("connection refused", 0.01)
    assert b.state == "closed"


def test_settings_give_the_policy(monkeypatch):
    monkeypatch.setenv("CARDPROOF_RPC_TIMEOUT", "2.5")
    monkeypatch.setenv("CARDPROOF_RPC_RETRIES", "1")
    monkeypatch.setenv("CARDPROOF_RPC_BREAKER_FAILURES", "4")
    monkeypatch.setenv("CARDPROOF_RPC_BREAKER_COOLDOWN", "7")
    w3 = http_web3("http://127.0.0.1:9")
    provider = w3.provider
    assert isinstance(provider, GuardedHTTPProvider)
    assert provider.policy == RpcPolicy(timeout=2.5, retries=1, breaker_failures=4, breaker_cooldown=7.0)
    assert provider.exception_retry_configuration is None  # web3's own retries are off
    assert http_web3("http://127.0.0.1:9", 0.5).provider.policy.timeout == 0.5
    assert get_settings().rpc_timeout == 2.5
    monkeypatch.delenv("CARDPROOF_RPC_TIMEOUT")
    assert get_settings().rpc_timeout == 5.0


# ---------------------------------------------------------------------------------------------- retries


class _Node(BaseHTTPRequestHandler):
    status = 503
    delay = 0.0
    hits: ClassVar[list[float]] = []

    def do_POST(self) -> None:
        type(self).hits.append(time.monotonic())
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        body = b'{"jsonrpc":"2.0","id":0,"result":"0x7a69"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def fake_node(status: int, delay: float = 0.0) -> Iterator[tuple[str, list[float]]]:
    handler = type("Handler", (_Node,), {"status": status, "delay": delay, "hits": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()


def test_a_busy_node_is_retried_a_bounded_number_of_times():
    with fake_node(503) as (url, hits):
        w3 = http_web3(url, settings=get_settings(rpc_timeout=5, rpc_retries=2, rpc_breaker_failures=10))
        with pytest.raises(ChainUnreachable, match=rf"^the chain node at {url} does not answer \(HTTP 503\)$"):
            _ = w3.eth.chain_id
        assert len(hits) == 3
    with fake_node(200) as (url, hits):
        assert http_web3(url).eth.chain_id == 31337 and len(hits) == 1


def test_a_slow_answer_is_never_retried():
    with fake_node(200, delay=3.0) as (url, hits):
        w3 = http_web3(url, settings=get_settings(rpc_timeout=0.5, rpc_retries=5))
        started = time.monotonic()
        with pytest.raises(ChainUnreachable, match=r"does not answer \(timed out after 0.5 s\)$"):
            _ = w3.eth.chain_id
        assert time.monotonic() - started < 1.5 and len(hits) == 1


# ---------------------------------------------------------------------------------------------- dead node


def test_connect_to_a_closed_port_fails_fast_with_its_own_line(tmp_path):
    url = f"http://127.0.0.1:{local_node.free_port()}"
    started = time.monotonic()
    with pytest.raises(ChainUnreachable) as info:
        connect(get_settings(home=tmp_path, rpc_url=url))
    assert time.monotonic() - started < 2
    assert str(info.value) == f"the chain node at {url} does not answer (connection refused)"


def test_a_recorded_local_node_that_died_is_no_chain(tmp_path, node):
    """`cardproof chain up` then the node died: "no chain configured" is the truth then (and only then)."""
    from chain.errors import NoChainRunning

    home = Path(node.state_path).parent.parent
    os.kill(node.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while local_node._pid_alive(node.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(node.pid, os.WNOHANG)
        time.sleep(0.02)
    with pytest.raises(NoChainRunning, match="no chain configured"):
        connect(get_settings(home=home, rpc_url=None))


# ---------------------------------------------------------------------------------------------- frozen node


@pytest.mark.anvil
def test_a_frozen_node_costs_a_lookup_at_most_the_timeout(node, tmp_path):
    settings = get_settings(home=tmp_path / "h", rpc_url=node.url, rpc_timeout=TIMEOUT, rpc_breaker_cooldown=1.0)
    client = connect(settings)
    assert client.block_number() >= 0
    with frozen(node):
        started = time.monotonic()
        with pytest.raises(ChainUnreachable) as info:
            client.block_number()
        took = time.monotonic() - started
        assert TIMEOUT * 0.9 <= took < TIMEOUT + 5.0  # one timeout, not web3's 5 retries (bounds kept loose)
        assert str(info.value) == f"the chain node at {node.url} does not answer (timed out after {TIMEOUT:g} s)"
        breaker = breaker_for(node.url)
        assert breaker.state == "open" and breaker.openings == 1
        assert breaker_states() == [{"url": node.url, "state": "open", "openings": 1,
                                     "last_failure": f"timed out after {TIMEOUT:g} s"}]
        # The circuit is open: the next lookups fail at once, saying why, and the node is not asked.
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(ChainUnreachable, match=r"timed out after 1.5 s\); not asked again for"):
                client.block_number()
        assert time.monotonic() - started < 3.0  # 20 x the timeout if the node were asked
    # Resumed: after the cool-down one probe closes the circuit.
    time.sleep(1.05)
    assert client.block_number() >= 0
    assert breaker.state == "closed"


@pytest.mark.anvil
@pytest.mark.parametrize("configured", ["chain up", "CARDPROOF_RPC_URL"])
def test_cli_on_a_frozen_node_says_so_in_one_line_within_the_timeout(node, tmp_path, configured):
    home = Path(node.state_path).parent.parent  # the CARDPROOF_HOME whose `cardproof chain up` started it
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")}
    env.update(CARDPROOF_HOME=str(home), CARDPROOF_RPC_TIMEOUT=str(TIMEOUT), PYTHONPATH=str(REPO))
    if configured == "CARDPROOF_RPC_URL":
        env.update(CARDPROOF_HOME=str(tmp_path / "other"), CARDPROOF_RPC_URL=node.url)
    with frozen(node):
        started = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "cardproof", "deploy"], env=env, cwd=REPO, capture_output=True,
                             text=True, timeout=60, check=False)
        took = time.monotonic() - started
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == f"cardproof: the chain node at {node.url} does not answer (timed out after {TIMEOUT:g} s)\n"
    assert "no chain configured" not in run.stderr
    # timeout + the interpreter's start (imports, 2-3 s, more on a loaded machine); the old default was 5 retries
    # of 10 s each (55 s)
    assert took < TIMEOUT + 20, took


@pytest.mark.anvil
def test_chain_status_and_up_on_a_frozen_node_say_it_runs_but_does_not_answer(node, tmp_path):
    """Not "not running" (the operator would start a second chain beside the frozen one)."""
    home = Path(node.state_path).parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")}
    env.update(CARDPROOF_HOME=str(home), PYTHONPATH=str(REPO))

    def cardproof(*args):
        return subprocess.run([sys.executable, "-m", "cardproof", *args], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=60, check=False)

    ok = cardproof("chain", "status", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["answering"] is True
    with frozen(node):
        st = cardproof("chain", "status")
        assert st.returncode == 4, st
        assert f"chain running at {node.url} (pid {node.pid}) but not answering" in st.stdout + st.stderr
        js = cardproof("chain", "status", "--json")
        assert js.returncode == 4 and json.loads(js.stdout) == {
            "running": True, "answering": False, "url": node.url, "pid": node.pid, "chain_id": node.chain_id}
        up = cardproof("chain", "up")
        assert up.returncode != 0 and up.stdout == ""
        assert up.stderr.strip().splitlines() == [
            f"cardproof: the chain of this home (pid {node.pid}, {node.url}) is running but does not answer "
            "(frozen or overloaded); run `cardproof chain down` first"]
        assert local_node.recorded(home) == node  # no second chain was started
    down = cardproof("chain", "down")  # a node frozen again is still stopped, its state saved
    assert down.returncode == 0, down
    assert local_node.recorded(home) is None
