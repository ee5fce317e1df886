"""Database schema of the issuer (SQLAlchemy 2.0 declarative, typed).

The schema is created and evolved only by the Alembic migrations in
``issuer/migrations`` (see :func:`issuer.storage.db.upgrade`); a test checks the
migrations produce exactly these models.  Any change here needs a new migration.

Conventions: hashes, batch ids and addresses are stored as ``0x``-prefixed hex
text (lowercase, except addresses which are EIP-55 checksummed); amounts are
integers in minor units; times are timezone-aware UTC.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Index,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    TypeDecorator,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from issuer.storage.types import NAMING_CONVENTION, BigIntPK, UTCDateTime, utcnow

__all__ = [
    "NAMING_CONVENTION",
    "BATCH_STATES",
    "TREE_CHUNK_NODES",
    "NODE_SIZE",
    "Base",
    "Issuer",
    "Batch",
    "Card",
    "TreeChunk",
    "Deployment",
    "Meta",
    "ApiKey",
    "ACT_KINDS",
    "ACT_STATES",
    "ChainAct",
    "SealedDelivery",
    "NODE_ORDER_STATES",
    "NodeOrder",
    "API_KEY_ROLES",
    "ApiKeyRole",
    "IdempotencyKey",
    "MINT_JOB_STATES",
    "MintJob",
    "WebhookEvent",
    "WEBHOOK_DELIVERY_STATES",
    "WebhookDelivery",
    "utcnow",
    "UTCDateTime",
    "BigIntPK",
    "MODEL_MODULES",
    "import_all_models",
]

#: Lifecycle of a batch; transitions are enforced by ``repository.set_batch_state``.
BATCH_STATES = ("minted", "anchoring", "anchored", "failed")

#: Nodes per ``tree_chunks`` row (32 KiB of 32-byte nodes).
TREE_CHUNK_NODES = 1024
NODE_SIZE = 32

class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: Every module declaring tables on :class:`Base`; their tables are all created by
#: the migrations in ``issuer/migrations``.  Add a module here with its migration.
MODEL_MODULES = ("issuer.storage.models",)


def import_all_models() -> MetaData:
    """Import every module of :data:`MODEL_MODULES`; returns the complete metadata.

    What the migrations must match (Alembic's ``target_metadata``).  A listed
    package that is not installed is skipped.
    """
    import importlib

    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
    return Base.metadata


class Issuer(Base):
    """An account allowed to mint batches (the first 20 bytes of its batch ids)."""

    __tablename__ = "issuers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: EIP-55 checksummed address.
    address: Mapped[str] = mapped_column(String(42), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Issuer(address={self.address!r}, name={self.name!r})"


class Batch(Base):
    """A batch of cards with its Merkle root and anchoring status."""

    __tablename__ = "batches"
    __table_args__ = (
        CheckConstraint(
            "state IN ('minted', 'anchoring', 'anchored', 'failed')", name="state"
        ),
        CheckConstraint("card_count >= 0", name="card_count"),
        CheckConstraint("face_value >= 0", name="face_value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``0x`` + 64 lowercase hex chars; the first 20 bytes are the issuer address.
    batch_id: Mapped[str] = mapped_column(String(66), unique=True)
    issuer_address: Mapped[str] = mapped_column(String(42), index=True)
    sku: Mapped[str] = mapped_column(String(32))
    #: In the currency's minor units (cents, ...).
    face_value: Mapped[int] = mapped_column(BigInteger)
    #: ISO 4217 alphabetic code.
    currency: Mapped[str] = mapped_column(String(3))
    #: Unix seconds; ``None`` (0 on chain) means no expiry.
    expiry: Mapped[int | None] = mapped_column(BigInteger)
    #: The leaf's ``codeForm``: 0 exact, 1 case- and dash-insensitive (``issuer.core.leaf``).
    code_form: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: Generated codes: their format (``issuer.codes.CodeFormat.to_json``), by which a typed code is read before
    #: it is checked (``issuer.codes.typed_code``). ``None``: imported codes, compared as the ``code_form`` says.
    code_format: Mapped[str | None] = mapped_column(Text)
    card_count: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(String(66))
    manifest_hash: Mapped[str] = mapped_column(String(66))
    state: Mapped[str] = mapped_column(String(16), default="minted", index=True)
    #: The batch secret wrapped by the master key (``MasterKey.wrap_batch_secret``).
    secret_ct: Mapped[bytes] = mapped_column(LargeBinary)
    chain_id: Mapped[int | None] = mapped_column(BigInteger)
    registry_address: Mapped[str | None] = mapped_column(String(42))
    anchor_tx: Mapped[str | None] = mapped_column(String(66))
    anchor_block: Mapped[int | None] = mapped_column(BigInteger)
    anchored_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: Last anchoring error, one line.
    error: Mapped[str | None] = mapped_column(Text)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    revoke_reason: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )

    cards: Mapped[list[Card]] = relationship(
        back_populates="batch", lazy="raise_on_sql", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Batch(batch_id={self.batch_id!r}, state={self.state!r}, cards={self.card_count})"

    @property
    def batch_id_bytes(self) -> bytes:
        return bytes.fromhex(self.batch_id[2:])


class Card(Base):
    """One card: public serial, encrypted code, commitment, leaf position."""

    __tablename__ = "cards"
    __table_args__ = (
        # Leading column batch_pk: also serves every lookup by batch.
        UniqueConstraint("batch_pk", "index"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    batch_pk: Mapped[int] = mapped_column(
        Integer, ForeignKey("batches.id", ondelete="CASCADE")
    )
    #: 0-based position in the batch (the leaf's ``index`` field).
    index: Mapped[int] = mapped_column(Integer)
    #: 16 Crockford base32 chars + check char, canonical (upper case, no dashes):
    #: ``repository.db_serial`` of the ``issuer.core.serial`` display form.
    serial: Mapped[str] = mapped_column(String(17), unique=True)
    #: ``CodeCipher`` blob of the secret code.
    code_ct: Mapped[bytes] = mapped_column(LargeBinary)
    code_commitment: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: HMAC of the normalized code under the master fingerprint key (de-duplication).
    code_fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    #: Position of the card's leaf in the Merkle heap array.
    tree_pos: Mapped[int] = mapped_column(Integer)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    revoke_reason: Mapped[int | None] = mapped_column(Integer)
    redeemed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    redeemed_by: Mapped[str | None] = mapped_column(String(255))

    batch: Mapped[Batch] = relationship(back_populates="cards", lazy="select")

    def __repr__(self) -> str:  # never the code
        return f"Card(serial={self.serial!r}, batch_pk={self.batch_pk}, index={self.index})"


class TreeChunk(Base):
    """``TREE_CHUNK_NODES`` consecutive 32-byte nodes of a batch's Merkle heap array."""

    __tablename__ = "tree_chunks"
    __table_args__ = (PrimaryKeyConstraint("batch_pk", "chunk_no"),)

    batch_pk: Mapped[int] = mapped_column(
        Integer, ForeignKey("batches.id", ondelete="CASCADE")
    )
    chunk_no: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Deployment(Base):
    """A contract deployed by cardproof on some chain."""

    __tablename__ = "deployments"
    __table_args__ = (UniqueConstraint("chain_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    #: Contract name, e.g. "CardRegistry".
    name: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(42))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    deployer: Mapped[str | None] = mapped_column(String(42))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"Deployment(chain_id={self.chain_id}, name={self.name!r}, address={self.address!r})"


class Meta(Base):
    """Small key/value facts about this database (e.g. the master key id)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )



class ApiKey(Base):
    """An API key of one of an issuer's redeemers (``issuer.service.auth``), stored as SHA-256 of its secret.

    Created by migration ``api_0001``; it belongs to the supplier's side: only ``cardproof issuer serve`` uses it.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Public part of the key (``cpk_<key_id>_<secret>``), unique.
    key_id: Mapped[str] = mapped_column(String(24), unique=True)
    #: SHA-256 of the secret part.
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: The issuer whose cards this key may redeem.
    issuer_address: Mapped[str] = mapped_column(String(42), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:  # never the hash
        return f"ApiKey(key_id={self.key_id!r}, issuer={self.issuer_address!r}, label={self.label!r})"


#: What the supplier's side does on chain (``issuer.acts``).
ACT_KINDS = ("anchor", "revoke", "redeem", "deliver", "withdraw")
#: Lifecycle of a chain act: pending (intent recorded; a signed transaction's hash may already be stored,
#: before broadcast) -> broadcast (the node accepted it) -> mined (in a block) -> final (past the confirmation
#: depth), or lost (the chain does not hold it: dropped, reorganised away; a rerun sends it again) or failed
#: (reverted).
ACT_STATES = ("pending", "broadcast", "mined", "final", "lost", "failed")


class ChainAct(Base):
    """One on-chain act of the supplier's side, recorded as an intent before anything is sent.

    ``issuer.acts`` writes it: the transaction hash (and nonce) is stored before broadcast, a rerun or
    ``cardproof reconcile`` settles it from the chain whatever state it holds, and an act the chain lost is
    sent again (``attempts`` counts the sends).
    """

    __tablename__ = "chain_acts"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'broadcast', 'mined', 'final', 'lost', 'failed')", name="state"
        ),
        Index("ix_chain_acts_kind_subject", "kind", "subject"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    #: anchor, revoke, redeem (:data:`ACT_KINDS`).
    kind: Mapped[str] = mapped_column(String(16))
    #: What it acts on: a batch id (``0x`` + 64 hex).
    subject: Mapped[str] = mapped_column(String(66))
    chain_id: Mapped[int | None] = mapped_column(BigInteger)
    #: The contract called (EIP-55).
    contract: Mapped[str | None] = mapped_column(String(42))
    #: The sending account (EIP-55).
    account: Mapped[str | None] = mapped_column(String(42))
    #: The act's arguments, JSON (card indices, reason, ...): enough to send it again.
    payload: Mapped[str] = mapped_column(Text, default="{}")
    tx_hash: Mapped[str | None] = mapped_column(String(66), index=True)
    nonce: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(66))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: While a live process drives the act, others leave it alone until then.
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"ChainAct(id={self.id}, kind={self.kind!r}, subject={self.subject!r}, state={self.state!r})"


class SealedDelivery(Base):
    """The sealed delivery of an escrow order, as the supplier sealed it (``issuer.delivery_seal``).

    Sealing is randomised (a fresh ephemeral key), so the blob is kept: a delivery sent again after the chain lost
    it carries the same hash, and the blob can be uploaded to the public service again. It is ciphertext only,
    readable by the buyer's seal key alone; no code is stored here in plaintext.
    """

    __tablename__ = "sealed_deliveries"
    __table_args__ = (UniqueConstraint("chain_id", "escrow", "order_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    #: The escrow contract (EIP-55).
    escrow: Mapped[str] = mapped_column(String(42))
    #: The order id, decimal (order ids are uint256).
    order_id: Mapped[str] = mapped_column(String(78))
    batch_id: Mapped[str] = mapped_column(String(66))
    #: The delivered card ranges, JSON ``[[start, length], ...]``.
    ranges: Mapped[str] = mapped_column(Text)
    #: keccak256 of ``blob``, ``0x`` + 64 hex: what the delivery records on chain.
    sealed_hash: Mapped[str] = mapped_column(String(66))
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    #: When the public service accepted the blob; None until then.
    uploaded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


#: What the supplier's node knows of an escrow order to its supplier (``issuer.node``):
#: seen (found on chain, funded) -> picked (cards reserved: batch and ranges chosen) -> delivered (on chain) ->
#: published (the sealed delivery is on every configured public service); or out_of_stock (left for the buyer to
#: cancel, picked again if stock arrives before the deadline), or closed (no longer deliverable: cancelled,
#: delivered by someone else, past its deadline) or failed (a refusal that needs a person; ``error`` says why).
NODE_ORDER_STATES = ("seen", "picked", "delivered", "published", "out_of_stock", "closed", "failed")


class NodeOrder(Base):
    """An escrow order to this supplier, as the node fulfils it. The card reservation of a picked order is its
    sealed delivery (``sealed_deliveries``, same escrow and order): cards in one are never picked for another."""

    __tablename__ = "node_orders"
    __table_args__ = (
        UniqueConstraint("chain_id", "escrow", "order_id"),
        CheckConstraint(
            "state IN ('seen', 'picked', 'delivered', 'published', 'out_of_stock', 'closed', 'failed')",
            name="state",
        ),
        Index("ix_node_orders_state", "state"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    escrow: Mapped[str] = mapped_column(String(42))
    #: Decimal order id (uint256).
    order_id: Mapped[str] = mapped_column(String(78))
    buyer: Mapped[str] = mapped_column(String(42))
    product_id: Mapped[int] = mapped_column(BigInteger)
    min_expiry: Mapped[int] = mapped_column(BigInteger, default=0)
    quantity: Mapped[int] = mapped_column(Integer)
    #: Unix time after which it can no longer be delivered.
    delivery_deadline: Mapped[int] = mapped_column(BigInteger)
    #: Block of its OrderOpened event.
    opened_block: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="seen")
    batch_id: Mapped[str | None] = mapped_column(String(66))
    #: JSON ``[[start, length], ...]`` once picked.
    ranges: Mapped[str | None] = mapped_column(Text)
    deliver_tx: Mapped[str | None] = mapped_column(String(66))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------------- the ERP API (issuer.service.erp_*)

#: Roles of an API key (``api_key_roles``): a key without a row is a redeemer's key (``POST .../redeem`` only);
#: ``erp`` keys reach the supplier's ERP API (``/v1/erp/*``) and nothing else.
API_KEY_ROLES = ("redeemer", "erp")


class ApiKeyRole(Base):
    """The role of an API key other than a redeemer's (``issuer.service.auth.create_api_key(role=...)``)."""

    __tablename__ = "api_key_roles"
    __table_args__ = (CheckConstraint("role IN ('redeemer', 'erp')", name="role"),)

    api_key_pk: Mapped[int] = mapped_column(Integer, ForeignKey("api_keys.id", ondelete="CASCADE"),
                                            primary_key=True)
    role: Mapped[str] = mapped_column(String(16))


class IdempotencyKey(Base):
    """One ``Idempotency-Key`` of a request that creates something (``issuer.idempotency``): the first request's
    hash and, once answered, its answer; a repeat gets that answer. Kept 24 hours."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("api_key_id", "method", "path", "key"),
                      Index("ix_idempotency_keys_created_at", "created_at"))

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    #: The API key's public id (``ApiKey.key_id``).
    api_key_id: Mapped[str] = mapped_column(String(24))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    #: SHA-256 (hex) of the canonical JSON of the request body.
    request_hash: Mapped[str] = mapped_column(String(64))
    #: None while the first request is being answered.
    status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


#: queued -> minting -> anchoring -> done, or failed (``error`` says why).
MINT_JOB_STATES = ("queued", "minting", "anchoring", "done", "failed")


class MintJob(Base):
    """A batch minted (and anchored) in the background for the ERP (``issuer.mint_jobs``)."""

    __tablename__ = "mint_jobs"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'minting', 'anchoring', 'done', 'failed')", name="state"),
        Index("ix_mint_jobs_state", "state"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    issuer_address: Mapped[str] = mapped_column(String(42))
    #: The ERP key that asked for it (``ApiKey.key_id``).
    api_key_id: Mapped[str | None] = mapped_column(String(24))
    sku: Mapped[str] = mapped_column(String(32))
    #: As given, e.g. "20.00".
    face_value: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    count: Mapped[int] = mapped_column(Integer)
    expires: Mapped[str | None] = mapped_column(String(40))
    anchor: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    batch_id: Mapped[str | None] = mapped_column(String(66))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    """An event for the supplier's webhooks (``issuer.webhooks.emit``); its payload never holds a code or secret."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    #: Public id, ``evt_`` + 32 hex.
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    #: JSON.
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


#: pending (to send, or retrying) -> delivered (a 2xx answer), or dead (out of attempts; a replay makes it pending).
WEBHOOK_DELIVERY_STATES = ("pending", "delivered", "dead")


class WebhookDelivery(Base):
    """One event to one URL, retried with exponential backoff (``issuer.webhooks``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="state"),
        Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_pk: Mapped[int] = mapped_column(BigIntPK, ForeignKey("webhook_events.id", ondelete="CASCADE"),
                                          index=True)
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    event: Mapped[WebhookEvent] = relationship(lazy="select")
