"""Worker processes that share the load evenly: each listens on a socket of its own (``SO_REUSEPORT``).

uvicorn's ``--workers`` binds one socket in the parent and hands it to every worker; whichever worker's event
loop wakes first accepts every connection waiting (asyncio accepts up to a backlog's worth per wake-up). Clients
that keep their connections open (a reverse proxy's upstream pool, a load generator) then end up mostly on one
worker: 14 of 16 connections on one of two workers was seen under ``scripts/bench_api``, which leaves a core
idle while requests queue on the other. With a socket per worker the kernel spreads new connections over the
workers by a hash of their addresses.

uvicorn's supervisor is kept as it is (worker health checks, restarts of a dead worker, signals): only the
worker's entry point changes, to close the inherited socket and listen on its own. The parent binds the port
first (without listening, so it is never handed a connection) to report a port in use at once and to keep it
while workers restart.
"""

from __future__ import annotations

import socket
from typing import Any

from uvicorn.supervisors import multiprocess

__all__ = ["listen_reuseport", "run_workers"]


def listen_reuseport(host: str, port: int, backlog: int = 2048, *, listen: bool = True) -> socket.socket:
    """A TCP socket on (host, port) with SO_REUSEPORT set, bound (and listening unless ``listen`` is False)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _OwnSocketProcess(multiprocess.Process):
    """A uvicorn worker that listens on a SO_REUSEPORT socket of its own."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # pragma: no cover - in the worker
        for inherited in sockets or ():
            inherited.close()
        own = listen_reuseport(self.config.host, self.config.port, self.config.backlog)
        super().target([own])


def supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT") and hasattr(multiprocess, "Process") and \
        hasattr(multiprocess, "Multiprocess")


def run_workers(config: Any) -> None:
    """Run ``config.workers`` workers of a uvicorn ``Config`` under uvicorn's supervisor, each on its own socket."""
    reserve = listen_reuseport(config.host, config.port, config.backlog, listen=False)
    multiprocess.Process = _OwnSocketProcess  # type: ignore[misc] - the supervisor makes its workers by this name
    try:
        multiprocess.Multiprocess(config, sockets=[]).run()
    finally:
        reserve.close()
