"""Values shown to people: durations in units (``1h``, ``30d``), times as dates (``2026-12-02 07:10 UTC``),
order statuses by name. No project imports: chain/errors.py and chain/escrow_view.py both use it.

JSON keeps the raw integers (and may add these alongside); only text for people goes through here.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["STATUS_NAMES", "format_duration", "format_time", "status_name"]

#: CardEscrow's OrderStatus, by value (contracts/ICardEscrow.sol).
STATUS_NAMES = ("none", "funded", "delivered", "disputed", "confirmed", "released", "resolved", "cancelled")


def format_duration(seconds: int) -> str:
    """259200 -> ``"3d"``; 5400 -> ``"1h30m"``; 0 -> ``"0s"``."""
    seconds = int(seconds)
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


def format_time(timestamp: int | None, *, seconds: bool = False) -> str:
    """Unix seconds -> ``"2026-12-02 07:10 UTC"`` (ISO 8601 date and time, UTC); ``"-"`` for 0 or None."""
    if not timestamp:
        return "-"
    try:
        when = dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"unix time {int(timestamp)}"
    return when.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def status_name(status: int) -> str:
    """An order status by name (``4`` -> ``"confirmed"``); an unknown value as ``"status 9"``."""
    status = int(status)
    return STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else f"status {status}"
