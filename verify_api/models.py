"""Scan tables of the public service, on ``verify_api.storage.models.PublicBase`` (its own database).

* ``api_scans`` – one row per lookup, page view, code check or redemption: the time and coarse client
  information only (a truncated keyed hash of the IP that changes every day, the user-agent family,
  the country when a trusted proxy gives it). No IP, no full user agent, no code.
* ``api_card_stats`` – per serial: how often it was looked up and checked, and since when (the
  fraud signal), maintained by the scan writer.

(``api_keys``, the redeemers' API keys, belong to the supplier's side: ``issuer.storage.models.ApiKey``.)
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from issuer.storage.types import BigIntPK, UTCDateTime, utcnow
from verify_api.storage.models import PublicBase as Base

__all__ = ["CardStats", "Scan", "API_TABLES"]

API_TABLES = ("api_scans", "api_card_stats")


class Scan(Base):
    __tablename__ = "api_scans"
    __table_args__ = (Index("ix_api_scans_serial_at", "serial", "at"), Index("ix_api_scans_at", "at"))

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Canonical serial (no dashes) when the request named a well-formed one.
    serial: Mapped[str | None] = mapped_column(String(17))
    #: lookup | page | check | redeem
    kind: Mapped[str] = mapped_column(String(8))
    verdict: Mapped[str | None] = mapped_column(String(20))
    #: Code checks and redemptions: whether the code matched / the redemption succeeded.
    ok: Mapped[bool | None] = mapped_column(Boolean)
    #: First 8 bytes (hex) of HMAC(daily key, client IP).
    client: Mapped[str] = mapped_column(String(16))
    ua_family: Mapped[str] = mapped_column(String(24))
    #: ISO 3166 alpha-2 from a trusted proxy header, else NULL (unknown).
    country: Mapped[str | None] = mapped_column(String(2))


class CardStats(Base):
    __tablename__ = "api_card_stats"

    serial: Mapped[str] = mapped_column(String(17), primary_key=True)
    scans: Mapped[int] = mapped_column(BigInteger, default=0)
    checks: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_checks: Mapped[int] = mapped_column(BigInteger, default=0)
    first_scan_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_check_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

