"""`cardproof serve --workers N`: each worker listens on its own SO_REUSEPORT socket, so that connections
held open (a proxy's upstream pool, a load generator) spread over the workers instead of piling up on the one
whose event loop woke first; uvicorn's supervisor still restarts a worker that dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.api.test_public_process import CARDPROOF, _env, _tree
from tests.api.world import free_port
from tests.netkit import stop_process

WORKERS = 2
CONNECTIONS = 32


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def _tcp_table() -> list[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every IPv4 TCP socket."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        rows.append((int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16), f[3], f[9]))
    return rows


def _owner(inode: str, workers: list[int]) -> int | None:
    for pid in workers:
        if inode in _socket_inodes(pid):
            return pid
    return None


@pytest.fixture
def service(world, tmp_path):
    port = free_port()
    env = _env(world, CARDPROOF_PUBLIC_DATABASE_URL=f"sqlite:///{tmp_path / 'public.db'}")
    proc = subprocess.Popen(CARDPROOF + ["serve", "--port", str(port), "--workers", str(WORKERS), "--no-index"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_ready(proc, port, WORKERS)
        yield proc, port
    finally:
        stop_process(proc)


def _workers(proc: subprocess.Popen) -> list[int]:
    # The supervisor's children that are workers (the spawn machinery also starts a resource tracker).
    return [p for p in _tree(proc.pid)[1:] if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _listeners(port: int) -> list[str]:
    return [inode for local, _r, state, inode in _tcp_table() if local == port and state == "0A"]  # 0A: LISTEN


def _wait_ready(proc: subprocess.Popen, port: int, workers: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if len(_listeners(port)) == workers and \
                    httpx.get(f"http://127.0.0.1:{port}/v1/ping", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.2)


def test_each_worker_listens_on_its_own_socket_and_held_connections_spread(service):
    proc, port = service
    workers = _workers(proc)
    assert len(workers) == WORKERS
    listeners = _listeners(port)
    assert sorted(_owner(i, workers) for i in listeners) == sorted(workers)  # one listening socket each
    assert not _socket_inodes(proc.pid) & set(listeners)  # the supervisor only reserves the port

    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    try:
        for c in clients:
            c.sendall(b"GET /v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in clients:
            assert c.recv(4096).startswith(b"HTTP/1.1 200")
        mine = {c.getsockname()[1] for c in clients}
        accepted = [inode for local, remote, state, inode in _tcp_table()
                    if local == port and remote in mine and state == "01"]  # 01: ESTABLISHED
        assert len(accepted) == CONNECTIONS
        per_worker = Counter(_owner(i, workers) for i in accepted)
        # Spread by the kernel (a hash of the addresses): each worker holds a fair share. With one shared socket
        # the first worker to wake accepted nearly all of them (14 of 16 seen).
        assert set(per_worker) == set(workers) and min(per_worker.values()) >= CONNECTIONS // 8, per_worker
    finally:
        for c in clients:
            c.close()


def test_a_killed_worker_is_replaced_and_listens_again(service):
    proc, port = service
    victim = _workers(proc)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        workers = _workers(proc)
        if victim not in workers and len(workers) == WORKERS and len(_listeners(port)) == WORKERS:
            break
        assert time.monotonic() < deadline, (workers, _listeners(port))
        time.sleep(0.2)
    for _ in range(20):  # whichever socket the kernel picks answers
        assert httpx.get(f"http://127.0.0.1:{port}/v1/ping", timeout=5).status_code == 200
