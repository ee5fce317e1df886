"""Tables of the public service's database (SQLAlchemy 2.0 declarative, typed).

Created and evolved only by the migrations in ``verify_api/migrations``; a test checks that they produce
exactly these models.

* ``pub_batches`` – a published batch: its product, root and card count, accepted only because the chain
  holds the same root for the batch id; the anchoring coordinates read from the chain.
* ``pub_cards`` – one row per card: serial (primary key), position, commitment and leaf position.
* ``pub_tiles`` – the batch's Merkle heap array cut into tiles (``verify_api.storage.tiles``): a proof reads
  a handful of small rows.
* ``pub_meta`` – small facts about this database (the random key that hashes client addresses in scans).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from issuer.storage.types import NAMING_CONVENTION, UTCDateTime, utcnow

__all__ = ["PublicBase", "PubBatch", "PubCard", "PubTile", "PubMeta", "PubSealedDelivery", "MODEL_MODULES",
           "import_all_models"]


class PublicBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: Every module declaring tables on :class:`PublicBase` (what the public migrations must match).
MODEL_MODULES = ("verify_api.storage.models", "verify_api.models", "verify_api.storage.index_models")


def import_all_models() -> MetaData:
    import importlib

    for name in MODEL_MODULES:
        importlib.import_module(name)
    return PublicBase.metadata


class PubBatch(PublicBase):
    __tablename__ = "pub_batches"
    #: Ids are never reused (a batch removed as a squatter must not lend its id to the next one: workers cache
    #: batches and tiles by id).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: ``0x`` + 64 lower-case hex; the first 20 bytes are the issuer's address.
    batch_id: Mapped[str] = mapped_column(String(66), unique=True)
    #: EIP-55, as the registry reports the batch's issuer.
    issuer_address: Mapped[str] = mapped_column(String(42), index=True)
    sku: Mapped[str] = mapped_column(String(32))
    face_value: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    #: Unix seconds, 0 for none.
    expiry: Mapped[int] = mapped_column(BigInteger)
    code_form: Mapped[int] = mapped_column(Integer)
    card_count: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(String(66))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    registry_address: Mapped[str] = mapped_column(String(42))
    anchor_tx: Mapped[str | None] = mapped_column(String(66))
    anchor_block: Mapped[int | None] = mapped_column(BigInteger)
    #: Unix time of the anchoring block, as the registry stored it.
    anchored_at: Mapped[int] = mapped_column(BigInteger)
    published_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"PubBatch(batch_id={self.batch_id!r}, cards={self.card_count})"


class PubCard(PublicBase):
    __tablename__ = "pub_cards"
    __table_args__ = (UniqueConstraint("batch_pk", "index"),)

    #: Canonical serial: 16 Crockford symbols and the check symbol, no dashes.
    serial: Mapped[str] = mapped_column(String(17), primary_key=True)
    batch_pk: Mapped[int] = mapped_column(Integer, ForeignKey("pub_batches.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    code_commitment: Mapped[bytes] = mapped_column(LargeBinary(32))
    #: Position of the card's leaf in the Merkle heap array.
    tree_pos: Mapped[int] = mapped_column(Integer)
    #: The tile holding the leaf (``tiles.tile_of(tree_pos)``; None for a one-card batch, whose leaf is the root):
    #: read with the card in the same query, so a lookup needs one round trip (the tiles above it are shared
    #: by many cards and stay cached).
    tile: Mapped[int | None] = mapped_column(BigInteger)


class PubTile(PublicBase):
    __tablename__ = "pub_tiles"
    __table_args__ = (PrimaryKeyConstraint("batch_pk", "tile"),)

    batch_pk: Mapped[int] = mapped_column(Integer, ForeignKey("pub_batches.id", ondelete="CASCADE"))
    #: Heap position of the tile's root (``verify_api.storage.tiles``).
    tile: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class PubMeta(PublicBase):
    __tablename__ = "pub_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class PubSealedDelivery(PublicBase):
    """The sealed delivery of an escrow order, kept for its buyer (and, with the buyer's evidence key, an arbiter).

    Ciphertext only: the service holds no key that opens it. It is stored only when its keccak256 is the sealed
    hash the escrow recorded with the delivery (``verify_api.sealed_store``), so nobody but the delivering supplier
    can put a blob here, and a stored blob can be checked against the chain by anyone who fetches it.
    """

    __tablename__ = "pub_sealed_deliveries"
    __table_args__ = (PrimaryKeyConstraint("chain_id", "escrow", "order_id"),)

    chain_id: Mapped[int] = mapped_column(BigInteger)
    #: The escrow contract (EIP-55).
    escrow: Mapped[str] = mapped_column(String(42))
    #: Decimal order id (uint256).
    order_id: Mapped[str] = mapped_column(String(78))
    #: ``0x`` + 64 hex: keccak256 of ``blob``, equal to the escrow's record.
    sealed_hash: Mapped[str] = mapped_column(String(66))
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
