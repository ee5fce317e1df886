"""Pydantic models of the service's requests and answers (validation of inputs, and OpenAPI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ErrorBody", "Health", "REDEEM_ERRORS", "Readiness", "RedeemRequest", "RedeemResult"]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. unauthorized, wrong_code, already_redeemed.")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=256, description="The card's secret code.")


class RedeemResult(BaseModel):
    serial: str
    batch_id: str
    index: int
    redeemed_at: str
    redeemed_by: str = Field(description="key:<key id> or sig:<signer address>.")
    tx_hash: str
    block_number: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: str
    chain: str
    last_block: int | None


def _err(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


REDEEM_ERRORS = {
    401: _err("No, or an invalid or revoked, API key; or a bad signature, an old timestamp or a used nonce "
              "(code unauthorized)."),
    403: _err("Not allowed to redeem this issuer's cards (forbidden), or the code is not the card's (wrong_code)."),
    404: _err("No such card (card_not_found)."),
    409: _err("Already redeemed (already_redeemed), a redemption still pending on chain (redemption_pending), "
              "or the batch is not anchored (invalid_batch_state)."),
    410: _err("The card is revoked (card_revoked)."),
    422: _err("Malformed input (invalid_serial, invalid_request)."),
    429: _err("Rate limited (rate_limited); see Retry-After."),
    503: _err("The chain is unreachable (chain_unreachable, no_chain), the database is (database_unavailable), or the shared "
              "rate limiter and nonce store is (rate_limiter_unavailable: redemption fails closed); see Retry-After."),
}
