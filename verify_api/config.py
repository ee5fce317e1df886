"""Settings of the verification API, read from ``CARDPROOF_API_*`` environment variables.

The chain, database, keys, Redis URL and explorer URL come from :class:`chain.settings.Settings`
(``CARDPROOF_*``); what only the API needs is here. Nothing is read at import time.

Rates are written ``"N/period"`` with period ``second``, ``minute``, ``hour`` or ``day``
(``"30/minute"``), or ``"0"``/``"off"`` for no limit.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from issuer.storage.rates import Rate, parse_rate

__all__ = ["ApiSettings", "Rate", "get_api_settings", "parse_rate"]

class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARDPROOF_API_", env_file=None, case_sensitive=False,
                                      extra="ignore")

    #: Lookups (GET card, page, batch, issuer) per client.
    lookup_rate: str = "120/minute"
    #: Dump uploads (PUT /v1/batches/{id}/dump) per client.
    publish_rate: str = "30/hour"
    #: Sealed deliveries (PUT /v1/orders/{id}/delivery) per client: each stored one is backed by a delivery on
    #: chain, so a supplier's node publishing every order is far above the dump rate.
    delivery_rate: str = "1200/minute"
    #: Seconds between polls of the chain head and the registry's events (the status cache's TTL).
    chain_ttl: float = Field(default=2.0, gt=0)
    #: Cached bitmap words and batches are re-read when older than this, events or not.
    chain_max_age: float = Field(default=300.0, gt=0)
    #: After this many seconds without a successful poll the chain is reported stale.
    chain_stale_after: float = Field(default=10.0, gt=0)
    #: Timeout of one JSON-RPC request made by the API.
    rpc_timeout: float = Field(default=3.0, gt=0)
    #: Seconds a card looked up in the database stays cached (positive and negative answers).
    card_cache_ttl: float = Field(default=60.0, ge=0)
    card_cache_size: int = Field(default=200_000, ge=0)
    #: Trust X-Forwarded-For / CF-IPCountry (only behind a proxy that sets them).
    trust_proxy: bool = False
    #: Record scans (always asynchronously, in batches).
    record_scans: bool = True
    scan_flush_interval: float = Field(default=0.5, gt=0)
    scan_queue_max: int = Field(default=100_000, ge=1)
    scan_retention_days: int = Field(default=90, ge=1)
    #: Freeze the objects built at start-up out of the garbage collector and collect less often
    #: (shorter pauses under load). Only where the app runs in its own process (cardproof serve).
    tune_gc: bool = False
    #: Registry address to use instead of the deployment recorded in CARDPROOF_HOME.
    registry_address: str | None = None

    @field_validator("lookup_rate", "publish_rate", "delivery_rate")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    def rate(self, name: str) -> Rate:
        return parse_rate(getattr(self, name))


def get_api_settings(**overrides: Any) -> ApiSettings:
    return ApiSettings(**overrides)
