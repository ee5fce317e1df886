"""Run one function in a forked child while the parent runs another (2-core speed-ups).

Only pure hashing runs in the child; it returns ``bytes`` through a pipe and leaves with
``os._exit``. Without ``os.fork`` (Windows) both run in turn in this process.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Sequence, TypeVar

from . import errors
from .errors import CoreError

T = TypeVar("T")

__all__ = ["run_forked", "split_hashes"]


def run_forked(child: Callable[[], bytes], parent: Callable[[], T]) -> tuple[bytes, T]:
    """``(child(), parent())`` with ``child`` run in a forked process, concurrently.

    A :class:`CoreError` raised in the child is raised again here, same class and message.
    """
    if not hasattr(os, "fork"):  # pragma: no cover
        return child(), parent()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child; coverage does not see it
        code = 1
        try:
            os.close(r)
            try:
                data = b"\x00" + child()
            except CoreError as e:
                data = b"\x01" + json.dumps([type(e).__name__, str(e)]).encode()
            with os.fdopen(w, "wb") as f:
                f.write(len(data).to_bytes(8, "big"))
                f.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    rf = os.fdopen(r, "rb")
    try:
        result = parent()
        head = rf.read(8)
        data = rf.read()
    finally:
        rf.close()
        _, status = os.waitpid(pid, 0)
    if status != 0 or len(head) != 8 or int.from_bytes(head, "big") != len(data) or not data:
        raise CoreError("hashing worker process failed")
    if data[0] == 1:
        name, message = json.loads(data[1:])
        cls = getattr(errors, name, CoreError)
        raise cls(message) if isinstance(cls, type) and issubclass(cls, CoreError) else CoreError(message)
    return data[1:], result


def split_hashes(func: Callable[[Sequence], list[bytes]], items: Sequence, workers: int, min_items: int) -> list[bytes]:
    """``func(items)`` (a list of 32-byte hashes), the second half computed in a forked child
    when ``workers > 1`` and there are at least ``min_items`` items."""
    n = len(items)
    if workers < 2 or n < min_items or not hasattr(os, "fork"):
        return func(items)
    m = n // 2
    tail, head = run_forked(lambda: b"".join(func(items[m:])), lambda: func(items[:m]))
    if len(tail) != 32 * (n - m):
        raise CoreError("hashing worker process returned a malformed result")
    head += [tail[j : j + 32] for j in range(0, len(tail), 32)]
    return head
