"""Read a supplier's CSV of existing codes (e.g. keys from a game publisher).

The file has a header row with a ``code`` column (case-insensitive); other columns are ignored. Every
row is validated; the first bad row raises :class:`InvalidCsv` naming its line, and nothing is imported.
Error messages never include a code.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from issuer.codes import MAX_IMPORTED_CODE_LENGTH, normalize_imported_code
from issuer.core.errors import CoreError
from issuer.errors import InvalidCsv

MAX_ROWS = 10_000_000
#: The most bytes read from a code file: room for MAX_ROWS codes of MAX_IMPORTED_CODE_LENGTH characters (about
#: 1.3 GB of ASCII codes) and a few other columns. Never more is read, whatever the file claims to be.
MAX_FILE_BYTES = 2 * 1024**3
assert MAX_FILE_BYTES >= MAX_ROWS * (MAX_IMPORTED_CODE_LENGTH + 2)


@dataclass(frozen=True)
class ImportedCodes:
    codes: list[str]
    #: The file line of each code (1-based, header is line 1), for error messages.
    lines: list[int]


def read_codes_csv(path: Path, max_bytes: int | None = None) -> ImportedCodes:
    """Read and parse the code file at ``path``: a regular file of at most ``max_bytes`` bytes.

    Devices (``/dev/zero``), pipes and sockets are refused before anything is read, since they may never end;
    a regular file is read up to ``max_bytes`` + 1 bytes at most (it may grow while being read).
    """
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    try:
        # O_NONBLOCK: opening a FIFO without a writer must not hang before we can refuse it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InvalidCsv(None, f"no such file: {path}") from None
    except IsADirectoryError:
        raise InvalidCsv(None, f"{path} is a directory") from None
    except PermissionError:
        raise InvalidCsv(None, f"cannot read {path}: permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO opened without a writer on some systems, or a socket
            raise InvalidCsv(None, f"{path} is not a regular file") from None
        raise InvalidCsv(None, f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InvalidCsv(None, f"{path} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise InvalidCsv(None, f"{path} is not a regular file ({_kind(st.st_mode)}); give a CSV file")
        if st.st_size > max_bytes:
            raise InvalidCsv(None, f"file is larger than {_size(max_bytes)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb", buffering=0) as f:
        try:
            raw = _read_at_most(f, max_bytes + 1)
        except OSError as exc:
            raise InvalidCsv(None, f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > max_bytes:
        raise InvalidCsv(None, f"file is larger than {_size(max_bytes)}")
    return parse_codes_csv(raw)


def _read_at_most(f, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = f.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _size(n: int) -> str:
    return f"{n // 1024**2} MiB" if n >= 1024**2 else f"{n} bytes"


def parse_codes_csv(raw: bytes) -> ImportedCodes:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidCsv(line, "the file is not UTF-8 text") from None
    if "\x00" in text:
        raise InvalidCsv(text[: text.index("\x00")].count("\n") + 1, "the file holds NUL bytes (not a CSV?)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidCsv(None, "the file is empty; it needs a header row with a 'code' column") from None
    except csv.Error as exc:
        raise InvalidCsv(1, f"malformed CSV header ({exc})") from None
    names = [h.strip().lower() for h in header]
    if "code" not in names:
        raise InvalidCsv(1, "the header row has no 'code' column")
    if names.count("code") > 1:
        raise InvalidCsv(1, "the header row has more than one 'code' column")
    col = names.index("code")
    codes: list[str] = []
    lines: list[int] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            # csv's message can quote the cell: report the line only.
            raise InvalidCsv(reader.line_num, "malformed CSV row (unbalanced quotes?)") from None
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines are allowed
        if col >= len(row):
            raise InvalidCsv(line, f"the row has {len(row)} column(s); the 'code' column is number {col + 1}")
        try:
            code = normalize_imported_code(row[col])
        except CoreError as exc:
            raise InvalidCsv(line, f"invalid code: {exc}") from None
        codes.append(code)
        lines.append(line)
        if len(codes) > MAX_ROWS:
            raise InvalidCsv(line, f"more than {MAX_ROWS:,} codes in one batch")
    if not codes:
        raise InvalidCsv(None, "the file has a header but no codes")
    return ImportedCodes(codes, lines)
