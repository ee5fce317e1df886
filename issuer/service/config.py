"""Settings of the issuer service, from ``CARDPROOF_ISSUER_SERVICE_*`` environment variables.

The database, master key, chain, account and Redis URL come from :class:`chain.settings.Settings`
(``CARDPROOF_*``). Nothing is read at import time: :func:`get_service_settings` builds them when asked.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from issuer.service.ratelimit import Rate, parse_rate

__all__ = ["ServiceSettings", "get_service_settings"]


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARDPROOF_ISSUER_SERVICE_", env_file=None, case_sensitive=False,
                                      extra="ignore")

    #: Redemption attempts per API key or signer.
    redeem_rate: str = "600/minute"
    #: Redemption attempts per card, whoever makes them (guessing one card's code).
    redeem_rate_serial: str = "20/hour"
    #: Accepted clock skew of signed requests, seconds (their nonces are kept twice as long).
    signature_window: int = Field(default=300, ge=10, le=3600)
    #: Registry address to use instead of the deployment recorded in CARDPROOF_HOME.
    registry_address: str | None = None
    #: Timeout of one JSON-RPC request; None: CARDPROOF_RPC_TIMEOUT (chain.settings).
    rpc_timeout: float | None = Field(default=None, gt=0)
    #: Seconds between the service's own `cardproof reconcile --all` passes (0: never): acts the chain lost to a
    #: node crash or a reorg are redone without a person.
    reconcile_interval: float = Field(default=300.0, ge=0)

    #: Requests per ERP API key (``/v1/erp/*``).
    erp_rate: str = "1200/minute"

    @field_validator("redeem_rate", "redeem_rate_serial", "erp_rate")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        parse_rate(value)
        return value

    def rate(self, name: str) -> Rate:
        return parse_rate(getattr(self, name))


def get_service_settings(**overrides: Any) -> ServiceSettings:
    return ServiceSettings(**overrides)
