"""QR code images of exported cards: one file per card, PNG or SVG, written in this process or by worker processes.

A QR code holds only the public verification URL ``{public_url}/c/{serial}`` (error correction level M, a quiet
zone of 4 modules, 8 pixels a module in PNG). The symbols are made by zxing-cpp's writer (C++), some 40 times
faster than the pure-Python ``qrcode`` (and ``segno``, slower still here). Worker processes are *spawned*, not
forked: they start from a fresh interpreter and receive only serials and URLs, never a code, an opening or a key.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import zxingcpp

from issuer.errors import IssuerError

QR_FORMATS = ("png", "svg")
MODULE_PX = 8  # pixels a module in PNG (and nominal units a module in SVG)
ERROR_CORRECTION = "M"
DEFAULT_CHUNK = 500  # images a worker task writes

Job = tuple[str, str]  # (file stem: the serial, URL to encode)


class QrError(IssuerError, ValueError):
    """A QR code cannot be made (unknown format, a URL too long for a QR code)."""

    code = "qr_error"


class QrWorkerError(IssuerError, RuntimeError):
    """A QR worker process ended unexpectedly (killed, out of memory)."""

    code = "qr_worker_error"


def check_format(fmt: str) -> str:
    if fmt not in QR_FORMATS:
        raise QrError(f"unknown QR image format {fmt!r}; use one of {', '.join(QR_FORMATS)}")
    return fmt


def qr_symbol(url: str) -> zxingcpp.Barcode:
    """The QR code of ``url`` (level M, smallest version that holds it)."""
    try:
        return zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, ec_level=ERROR_CORRECTION)
    except (ValueError, RuntimeError) as exc:
        raise QrError(f"cannot make a QR code of a {len(url)}-character URL: {exc}") from None


_DARK_OR_LIGHT = bytes([0] + [255] * 255)  # a module's byte: 0 dark, anything else light


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def qr_png_bytes(url: str) -> bytes:
    """``url`` as a 1-bit greyscale PNG, ``MODULE_PX`` (8) pixels a module.

    At 8 pixels a module one module is one byte of a 1-bit row, and the symbol's one-byte-a-module bitmap (0 dark,
    255 light) is already that row: the PNG is its rows, each repeated 8 times, deflated. Written here with
    ``zlib`` rather than through Pillow, which spends some 7 times longer per image on the same file.
    """
    modules = memoryview(qr_symbol(url).to_image(scale=1, add_quiet_zones=True))
    h, w = modules.shape
    bitmap = modules.tobytes().translate(_DARK_OR_LIGHT)
    raw = b"".join((b"\x00" + bitmap[y * w:(y + 1) * w]) * MODULE_PX for y in range(h))  # filter 0: none
    header = struct.pack(">IIBBBBB", w * MODULE_PX, h * MODULE_PX, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw, 1))
            + _png_chunk(b"IEND", b""))


def qr_svg_text(url: str) -> str:
    """``url`` as an SVG document (vector: scales to any print size)."""
    return qr_symbol(url).to_svg(scale=MODULE_PX, add_quiet_zones=True)


def write_qr(url: str, path: Path, fmt: str = "png") -> None:
    if fmt == "svg":
        path.write_text(qr_svg_text(url), encoding="utf-8")
    else:
        path.write_bytes(qr_png_bytes(url))


def write_qr_chunk(jobs: Sequence[Job], qr_dir: str, fmt: str) -> int:
    """Write ``{qr_dir}/{stem}.{fmt}`` for every job; the number written. Runs in a worker process."""
    folder = Path(qr_dir)
    for stem, url in jobs:
        write_qr(url, folder / f"{stem}.{fmt}", fmt)
    return len(jobs)


class QrWriter:
    """Writes the QR images of the jobs fed to it, in chunks: in this process (``workers == 1``) or spread over
    ``workers`` spawned processes with at most two chunks a worker in flight (memory stays flat at any batch
    size). ``on_done(n)`` is called in this process as each chunk is written. Use as a context manager;
    :meth:`finish` waits for every image."""

    def __init__(self, qr_dir: Path, fmt: str, *, workers: int = 1, chunk: int = DEFAULT_CHUNK,
                 on_done: Callable[[int], None] | None = None) -> None:
        self.qr_dir, self.fmt = str(qr_dir), check_format(fmt)
        self.workers, self.chunk = max(1, workers), max(1, chunk)
        self.on_done = on_done or (lambda _n: None)
        self._pending: list[Job] = []
        self._inflight: deque[Future[int]] = deque()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> QrWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def add(self, stem: str, url: str) -> None:
        self._pending.append((stem, url))
        if len(self._pending) >= self.chunk:
            self._flush()

    def finish(self) -> None:
        self._flush(last=True)
        while self._inflight:
            self._wait_oldest()

    def _wait_oldest(self) -> None:
        try:
            written = self._inflight.popleft().result()
        except BrokenProcessPool:
            raise _worker_ended() from None
        self.on_done(written)

    def _flush(self, *, last: bool = False) -> None:
        jobs, self._pending = self._pending, []
        if not jobs:
            return
        if self.workers == 1 or (last and self._pool is None):  # no pool started for a single chunk
            self.on_done(write_qr_chunk(jobs, self.qr_dir, self.fmt))
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        while len(self._inflight) >= 2 * self.workers:
            self._wait_oldest()
        try:
            self._inflight.append(self._pool.submit(write_qr_chunk, jobs, self.qr_dir, self.fmt))
        except BrokenProcessPool:
            raise _worker_ended() from None


def _worker_ended() -> QrWorkerError:
    return QrWorkerError("a QR worker process ended unexpectedly (killed, or out of memory?); no cards.csv was "
                         "written: run the export again, with --workers 1 to be safe")


def default_workers() -> int:
    """One QR worker per core (the export's main process mostly waits on them)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
