"""Ethereum's keccak256 (the original Keccak padding, *not* NIST SHA3-256).

Backend: ``safe-pysha3`` (C, the ``_pysha3`` extension; about 0.7 µs a 64-byte hash here,
against about 4.8 µs for pycryptodome). pycryptodome is the fallback when it is missing.
Whichever is used is checked against known answers at import time, so a backend that
computes SHA3-256 instead of keccak256 fails loudly here rather than silently breaking roots.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["BACKEND", "keccak256", "keccak256_factory"]

try:  # pragma: no branch - depends on the environment
    from _pysha3 import keccak_256 as _keccak_256  # safe-pysha3

    BACKEND = "safe-pysha3"
    keccak256_factory: Callable = _keccak_256
    """``keccak256_factory(data).digest()`` is keccak256(data); the fastest call form."""

    def keccak256(data: bytes) -> bytes:
        """keccak256 of ``data`` (any bytes-like object), 32 bytes."""
        return _keccak_256(data).digest()

except ImportError:  # pragma: no cover - fallback only
    from Crypto.Hash import keccak as _cd_keccak  # pycryptodome

    BACKEND = "pycryptodome"

    class _Keccak256:
        __slots__ = ("_h",)

        def __init__(self, data: bytes = b"") -> None:
            self._h = _cd_keccak.new(data=bytes(data), digest_bits=256)

        def digest(self) -> bytes:
            return self._h.digest()

    keccak256_factory = _Keccak256

    def keccak256(data: bytes) -> bytes:
        """keccak256 of ``data`` (any bytes-like object), 32 bytes."""
        return _cd_keccak.new(data=bytes(data), digest_bits=256).digest()


def _self_test() -> None:
    # keccak256("") and keccak256("abc") as Ethereum computes them; SHA3-256("") would be a7ffc6f8...
    known = {
        b"": "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470",
        b"abc": "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45",
    }
    for data, want in known.items():
        if keccak256(data).hex() != want or keccak256_factory(data).digest().hex() != want:
            raise ImportError(f"keccak backend {BACKEND} does not compute Ethereum keccak256")


_self_test()
