"""Read a supplier's CSV of existing codes (e.g. keys from a game publisher).

The file has a header row with a ``code`` column (case-insensitive); other columns are ignored. Every
row is validated; the first bad row raises :class:`InvalidCsv` naming its line, and nothing is imported.
Error messages never include a code.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from issuer.codes import normalize_imported_code
from issuer.core.errors import CoreError
from issuer.errors import InvalidCsv

MAX_ROWS = 10_000_000
MAX_FILE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ImportedCodes:
    codes: list[str]
    #: The file line of each code (1-based, header is line 1), for error messages.
    lines: list[int]


def read_codes_csv(path: Path) -> ImportedCodes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidCsv(None, f"file is larger than {MAX_FILE_BYTES // 1024**2} MiB")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidCsv(None, f"no such file: {path}") from None
    except IsADirectoryError:
        raise InvalidCsv(None, f"{path} is a directory") from None
    except PermissionError:
        raise InvalidCsv(None, f"cannot read {path}: permission denied") from None
    return parse_codes_csv(raw)


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
