"""Pydantic models of the API's requests and answers (for validation of inputs and for OpenAPI).

Answers are built as plain dicts and serialised with orjson; these models document them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["authentic", "revoked", "redeemed", "unknown", "not_yet_anchored", "expired"]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_serial, rate_limited.")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ChainInfo(BaseModel):
    state: Literal["live", "stale", "unavailable"] = Field(
        description="live: read now; stale: the chain does not answer, data as of last_block; unavailable: never read.")
    last_block: int | None
    chain_id: int | None
    registry: str | None


class CardStatus(BaseModel):
    revoked: bool | None
    redeemed: bool | None
    source: Literal["chain"] | None = Field(
        description="chain: the registry's bitmaps (the public side keeps no status of its own); null when the "
                    "card's bits could not be read (verdict unknown, reason status_unavailable).")
    block: int | None


class IssuerInfo(BaseModel):
    address: str | None
    name: str | None = Field(description="The display name the platform recorded on chain; None when it has none.")
    name_source: Literal["chain"] | None = Field(description="Where the name comes from: only ever the chain.")
    has_role: bool | None = Field(description="Whether the address holds ISSUER_ROLE in the registry.")


class ProductInfo(BaseModel):
    sku: str | None
    face_value: int | None = Field(description="In the currency's minor units.")
    currency: str | None
    expiry: int | None = Field(description="Unix time; 0: never expires.")
    expiry_iso: str | None


class BatchInfo(BaseModel):
    id: str | None
    card_count: int | None
    root: str | None = Field(description="Merkle root of the published dump (the proof's root).")
    code_form: int | None = Field(description="How a typed code is canonicalised: 0 exact, 1 case/dash-insensitive.")
    anchor_tx: str | None
    anchor_block: int | None
    anchored: bool | None = Field(description="Whether the registry holds the batch.")
    anchored_root: str | None = Field(description="The root anchored in the registry.")
    anchored_at: int | None = Field(description="Unix time of the anchoring block.")
    anchored_at_iso: str | None
    revoked: bool | None
    chain_id: int | None
    registry: str | None


class ProofInfo(BaseModel):
    index: int | None
    leaf: dict[str, str | None] = Field(description="The leaf's fields by Solidity name, in dump form.")
    value: list[str] = Field(description="The leaf as an OpenZeppelin StandardMerkleTree dump value.")
    leaf_encoding: list[str]
    leaf_hash: str | None
    proof: list[str]
    root: str | None


class FraudInfo(BaseModel):
    scans: int = Field(description="Lookups of this serial (API and page) before this one.")
    first_scan_at: str | None
    checks: int = Field(description="Code checks (verification attempts) of this serial.")
    failed_checks: int
    first_check_at: str | None
    signal: Literal["none", "elevated", "high"]


class Links(BaseModel):
    self: str
    page: str
    anchor_tx: str | None


class CardVerification(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": "Everything needed to re-check the answer on chain."})

    serial: str
    verdict: Verdict
    reason: str
    checked_at: str
    chain: ChainInfo
    status: CardStatus
    issuer: IssuerInfo
    product: ProductInfo
    batch: BatchInfo
    proof: ProofInfo
    fraud: FraudInfo
    links: Links


class OnChainBatchInfo(BaseModel):
    anchored: bool | None
    root: str | None
    root_matches: bool | None
    issuer: str | None
    card_count: int | None
    anchored_at: int | None
    revoked: bool | None
    revoke_reason: int | None


class BatchAnswer(BaseModel):
    batch_id: str
    issuer_address: str
    sku: str
    face_value: int
    currency: str
    expiry: int
    code_form: int
    card_count: int
    root: str
    anchor_tx: str | None
    anchor_block: int | None
    anchored_at: int
    chain_id: int
    registry_address: str
    published_at: str
    on_chain: OnChainBatchInfo
    chain: ChainInfo


class IssuerOnChain(BaseModel):
    has_role: bool | None
    revoked_cards: int | None
    redeemed_cards: int | None


class IssuerAnswer(BaseModel):
    address: str
    #: The display name the platform recorded on chain (grantIssuer); None when the chain has none.
    name: str | None
    name_source: Literal["chain"] | None
    batches: int
    anchored_batches: int
    cards: int
    revoked_cards: int | None
    redeemed_cards: int | None
    first_batch_at: str | None
    on_chain: IssuerOnChain
    chain: ChainInfo


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: str
    chain: str
    last_block: int | None
    redis: str = Field(description="ok, unavailable (lookups then use per-worker rate limits) or not_configured.")


ERRORS = {
    422: {"model": ErrorBody, "description": "Malformed input (code invalid_serial, invalid_request, ...)."},
    429: {"model": ErrorBody, "description": "Rate limited (code rate_limited); see Retry-After."},
    503: {"model": ErrorBody, "description": "The database is unavailable (code database_unavailable); see "
                                             "Retry-After."},
}
