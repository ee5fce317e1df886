"""Tables of the event indexer (verify_api/indexer.py), on the public database (``PublicBase``).

* ``chain_events``   – every event of the registry and the escrow the indexer has seen, one row per log,
  unique by (chain id, transaction, log index). ``order_id`` is set for the escrow's order events and
  ``batch_id`` for events naming a batch; ``args`` is the decoded arguments as JSON (bytes as ``0x`` hex,
  integers as JSON numbers).
* ``indexed_blocks`` – hashes of the most recent indexed blocks (about 256) per chain: compared with the
  chain's to notice reorganisations and find the common ancestor.
* ``index_cursors``  – per chain, the last block indexed (``-1`` before the first) and its hash, and the
  contracts followed.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, PrimaryKeyConstraint, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from issuer.storage.types import BigIntPK, UTCDateTime, utcnow
from verify_api.storage.models import PublicBase as Base

__all__ = ["INDEX_TABLES", "ChainEventRow", "IndexCursor", "IndexedBlock"]

INDEX_TABLES = ("chain_events", "indexed_blocks", "index_cursors")


class ChainEventRow(Base):
    __tablename__ = "chain_events"
    __table_args__ = (
        UniqueConstraint("chain_id", "tx_hash", "log_index"),
        Index("ix_chain_events_chain_id_block_number", "chain_id", "block_number"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    #: ``0x`` + 64 lowercase hex.
    block_hash: Mapped[str] = mapped_column(String(66))
    #: Unix time of the block.
    block_time: Mapped[int | None] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    #: Contract name ("CardRegistry", "CardEscrow") and its EIP-55 address.
    contract: Mapped[str] = mapped_column(String(32))
    address: Mapped[str] = mapped_column(String(42))
    #: Event name, e.g. "OrderOpened".
    event: Mapped[str] = mapped_column(String(64))
    #: The escrow order the event is about (escrow events with an orderId), else NULL.
    order_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    #: ``0x`` + 64 hex: the batch the event names (registry batch events, OrderDelivered), else NULL.
    batch_id: Mapped[str | None] = mapped_column(String(66), index=True)
    #: Decoded arguments as a JSON object.
    args: Mapped[str] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"ChainEventRow({self.event} block={self.block_number} tx={self.tx_hash[:10]} log={self.log_index})"


class IndexedBlock(Base):
    __tablename__ = "indexed_blocks"
    __table_args__ = (PrimaryKeyConstraint("chain_id", "block_number"),)

    chain_id: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))


class IndexCursor(Base):
    __tablename__ = "index_cursors"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: Last block whose events are all stored; -1 before the first pass.
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(66))
    #: JSON object address -> contract name of the contracts whose events are stored.
    contracts: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
