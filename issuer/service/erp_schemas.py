"""Request and answer models of the ERP API (``/v1/erp/*``): validation and OpenAPI."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from chain.addresses import address_problem, parse_address
from issuer.service.schemas import ErrorBody

__all__ = ["ERP_ERRORS", "IDEMPOTENT_ERRORS", "Address", "MintJobOut", "MintJobRequest", "OrderList", "OrderOut",
           "RevocationOut", "RevocationRequest", "StockOut", "WebhookDeliveryList", "WebhookDeliveryOut"]


# --------------------------------------------------------------------------- addresses


def _checked_address(value: str) -> str:
    """The checksummed address; a ValueError (422 ``invalid_request``) for a malformed one or a wrong EIP-55
    checksum (mixed case that does not match; all-lowercase or all-uppercase carries none and is accepted)."""
    problem = address_problem(value)
    if problem is not None:
        raise ValueError(f"the address {problem}")
    return parse_address(value)


#: An address in a request (body field, query or path): 0x + 40 hex digits, mixed case only with a right checksum.
Address = Annotated[str, Field(min_length=42, max_length=42, description="0x + 40 hex digits; mixed case must be "
                                                                          "its EIP-55 checksum."),
                    AfterValidator(_checked_address)]


# --------------------------------------------------------------------------- stock


class Money(BaseModel):
    amount: str = Field(description="Decimal amount in the currency's major unit, e.g. \"20.00\".")
    minor: int = Field(description="The same in minor units (cents, ...).")
    currency: str = Field(description="ISO 4217 code.")


class StockBatch(BaseModel):
    batch_id: str
    card_count: int
    available: int
    anchored_at: str | None


class StockProduct(BaseModel):
    sku: str
    face_value: Money
    expiry: int | None = Field(description="Unix seconds; null: never expires.")
    expired: bool
    available: int = Field(description="Anchored cards neither revoked, redeemed, delivered nor reserved for an "
                                        "order.")
    pending: int = Field(description="Cards of batches minted but not anchored yet (not sellable yet).")
    low: bool = Field(description="available < the low-stock threshold.")
    batches: list[StockBatch]


class StockOut(BaseModel):
    issuer: str
    low_stock_threshold: int
    products: list[StockProduct]


# --------------------------------------------------------------------------- mint jobs


class MintJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=32)
    face_value: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$",
                            description="Decimal, in the currency's major unit, e.g. \"20.00\".")
    currency: str = Field(min_length=3, max_length=3)
    count: int = Field(ge=1, le=10_000_000)
    expires: str | None = Field(default=None, max_length=40, description="A date (end of that day, UTC) or an "
                                                                         "ISO datetime; null: never.")
    anchor: bool = Field(default=True, description="Anchor the batch on chain once minted.")


class Progress(BaseModel):
    done: int
    total: int


class MintJobOut(BaseModel):
    id: int
    state: Literal["queued", "minting", "anchoring", "done", "failed"]
    sku: str
    face_value: str
    currency: str
    count: int
    expires: str | None
    anchor: bool
    issuer: str
    progress: Progress
    batch_id: str | None
    error: str | None
    created_at: str
    updated_at: str | None


# --------------------------------------------------------------------------- orders


class OrderOut(BaseModel):
    order_id: str
    chain_id: int
    escrow: str
    buyer: str
    product_id: int
    quantity: int
    min_expiry: int
    delivery_deadline: int
    state: Literal["seen", "picked", "delivered", "published", "out_of_stock", "closed", "failed"]
    batch_id: str | None
    ranges: list[list[int]] | None = Field(description="Delivered card ranges [[start, length], ...].")
    deliver_tx: str | None
    sealed_hash: str | None
    error: str | None
    created_at: str
    updated_at: str


class OrderList(BaseModel):
    orders: list[OrderOut]
    next_after: int | None = Field(description="Pass as ?after= for the next page; null: no more.")


# --------------------------------------------------------------------------- revocations


class RevocationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    serials: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    batch_id: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{64}$")
    reason: str | int = Field(description="leaked, fraud, recalled, damaged or unspecified (or 0-4).")

    @model_validator(mode="after")
    def _one_target(self) -> RevocationRequest:
        if (self.serials is None) == (self.batch_id is None):
            raise ValueError("give either serials or batch_id")
        if self.serials is not None and any(not isinstance(s, str) or not 1 <= len(s) <= 64 for s in self.serials):
            raise ValueError("each serial is 1-64 characters")
        return self


class RevokedBatch(BaseModel):
    batch_id: str
    serials: list[str]
    indices: list[int]
    reason: int
    tx_hash: str


class RevocationOut(BaseModel):
    revoked: int
    results: list[RevokedBatch]


# --------------------------------------------------------------------------- webhooks


class WebhookDeliveryOut(BaseModel):
    id: int
    event_id: str
    kind: str
    url: str
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: str | None
    delivered_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDeliveryOut]
    next_after: int | None


def _err(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


ERP_ERRORS = {
    401: _err("No, or an invalid or revoked, API key (unauthorized)."),
    403: _err("The key is not an ERP key (forbidden): create one with role erp."),
    422: _err("Malformed input (invalid_request, ...)."),
    429: _err("Rate limited (rate_limited); see Retry-After."),
    503: _err("The database is unavailable (database_unavailable); see Retry-After."),
}

IDEMPOTENT_ERRORS = {
    **ERP_ERRORS,
    409: _err("A request with this Idempotency-Key is still being answered (idempotency_in_progress)."),
    422: _err("Malformed input (invalid_request), no or a malformed Idempotency-Key (invalid_idempotency_key), or "
              "the key was used with another body (idempotency_conflict)."),
}
