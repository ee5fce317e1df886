"""Accept a batch's public dump, checked against the chain: the chain is the only authentication.

A supplier (or anybody holding the dump) sends the OpenZeppelin ``standard-v1`` dump of a batch. It is
stored only if every check passes; otherwise nothing is written and a :class:`DumpRejected` with a stable
``code`` says why:

* the dump parses and is internally consistent (every leaf hashes to its node, every node recomputes,
  leaves sorted as ``StandardMerkleTree.of`` sorts them) — ``invalid_dump``;
* every leaf is a version-2 card leaf of this batch, the indices are ``0 .. n-1`` once each, the product
  (sku, face value, currency, expiry, code form) is the same on every leaf, serials are distinct —
  ``dump_not_a_batch``;
* the registry holds the batch anchored, with exactly this root and this card count — ``batch_not_anchored``
  / ``root_mismatch``; and with the dump's product (SKU, face value, currency) and expiry — ``product_mismatch``;
* no serial is already held by another published batch anchored earlier — ``serial_conflict``.

A serial belongs to the batch that anchored it first. Serials are random and stay private until after their
batch is anchored (the anchor carries only a root), so whoever copies a serial into a batch of its own anchors
it later: when a dump arrives holding serials of a batch published before it but anchored after it (in a later
block), that squatting batch is removed and the dump is stored (``PublishResult.superseded``).

Publishing a batch that is already stored with the same root is a no-op (idempotent).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from chain.registry import Registry
from issuer.core.dump import load_dump
from issuer.core.errors import CoreError
from issuer.core.leaf import bytes32_to_sku
from issuer.core.serial import format_serial
from verify_api.errors import ApiError
from verify_api.storage import repository as repo
from verify_api.storage.models import PubBatch
from verify_api.storage.tiles import tile_of

__all__ = ["DumpRejected", "PublishResult", "publish_dump"]


class DumpRejected(ApiError):
    """A dump that is not stored, with the reason's stable code."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(status, code, message)


@dataclass(frozen=True)
class PublishResult:
    batch_id: str
    cards: int
    root: str
    stored: bool  # False: it was already published
    #: Batches removed because they had copied serials of this one, anchored later.
    superseded: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "superseded": list(self.superseded)}


def _batch_id(text: str) -> bytes:
    t = text.lower()
    if len(t) != 66 or not t.startswith("0x"):
        raise DumpRejected("invalid_batch_id", "a batch id is 0x and 64 hex digits", 400)
    try:
        return bytes.fromhex(t[2:])
    except ValueError:
        raise DumpRejected("invalid_batch_id", "a batch id is 0x and 64 hex digits", 400) from None


def publish_dump(sessions: sessionmaker[Session], registry: Registry, batch_id_text: str,
                 dump: Any) -> PublishResult:
    """Check ``dump`` against the chain and store it (see the module docstring)."""
    batch_id = _batch_id(batch_id_text)
    bid = "0x" + batch_id.hex()
    try:
        loaded = load_dump(dump)
    except CoreError as exc:
        raise DumpRejected("invalid_dump", f"not a valid standard-v1 dump of card leaves: {exc}") from None
    leaves, tree = loaded.leaves, loaded.tree
    n = len(leaves)
    first = leaves[0]
    product = (first.sku, first.face_value, first.currency, first.expiry, first.code_form)
    seen_index = bytearray(n)
    for i, leaf in enumerate(leaves):
        if leaf.batch_id != batch_id:
            raise DumpRejected("dump_not_a_batch", f"values[{i}] belongs to batch 0x{leaf.batch_id.hex()}, not {bid}")
        if (leaf.sku, leaf.face_value, leaf.currency, leaf.expiry, leaf.code_form) != product:
            raise DumpRejected("dump_not_a_batch", f"values[{i}] is another product than values[0]")
        if leaf.index >= n or seen_index[leaf.index]:
            raise DumpRejected("dump_not_a_batch", f"values[{i}] has index {leaf.index}: indices must be 0 .. {n - 1}"
                                                   " once each")
        seen_index[leaf.index] = 1
    serials = [format_serial(leaf.serial).replace("-", "") for leaf in leaves]
    if len(set(serials)) != n:
        raise DumpRejected("dump_not_a_batch", "two cards of the dump share a serial")

    try:
        onchain = registry.batch(batch_id)
    except CoreError:
        raise
    if not onchain.anchored:
        raise DumpRejected("batch_not_anchored", f"batch {bid} is not anchored in registry {registry.address}", 409)
    if onchain.root != tree.root or onchain.card_count != n:
        raise DumpRejected("root_mismatch", f"the dump's root 0x{tree.root.hex()} over {n} cards is not the root "
                                            f"anchored for {bid} (0x{onchain.root.hex()} over {onchain.card_count})")
    # The chain fixed the batch's product and expiry when it was anchored: CardRegistry.verifyCard rejects other
    # leaves, and so does this service (a dump claiming 100.00 cards of a batch anchored as 1.00 is refused).
    anchored_as = registry.product(onchain.product_id)
    if (anchored_as.as_tuple() if anchored_as else None, onchain.expiry) != (product[:3], product[3]):
        raise DumpRejected("product_mismatch", f"the dump's cards are not of the product and expiry anchored for "
                                               f"{bid}, which CardRegistry.verifyCard rejects")

    with sessions() as session:
        existing = session.scalar(select(PubBatch).where(PubBatch.batch_id == bid))
        if existing is not None:
            if existing.root == "0x" + tree.root.hex():
                return PublishResult(bid, n, existing.root, False)
            raise DumpRejected("root_mismatch", f"batch {bid} is stored with another root", 409)

    anchor = None
    try:
        anchor = registry.anchor_event(batch_id)
    except Exception:  # noqa: BLE001 - the coordinates are informative; the root check above is what counts
        anchor = None
    row = PubBatch(
        batch_id=bid, issuer_address=onchain.issuer, sku=bytes32_to_sku(first.sku), face_value=first.face_value,
        currency=first.currency_str, expiry=first.expiry, code_form=first.code_form, card_count=n,
        root="0x" + tree.root.hex(), chain_id=registry.client.chain_id, registry_address=registry.address,
        anchor_tx=(anchor or {}).get("tx_hash"), anchor_block=(anchor or {}).get("block_number"),
        anchored_at=onchain.anchored_at, published_at=dt.datetime.now(dt.UTC),
    )
    positions = tree.tree_indices
    superseded: tuple[str, ...] = ()
    for attempt in range(2):
        try:
            with sessions.begin() as session:
                clash = session.scalar(select(PubBatch.id).where(PubBatch.batch_id == bid))
                if clash is not None:  # published concurrently
                    return PublishResult(bid, n, row.root, False)
                stored = _copy(row)
                session.add(stored)
                session.flush()
                repo.bulk_insert_cards(session, ((s, stored.id, leaf.index, leaf.code_commitment, p,
                                                  tile_of(p) if p else None)
                                                 for s, leaf, p in zip(serials, leaves, positions)))
                repo.save_tiles(session, stored.id, tree.nodes)
            _settle_new_rows(sessions)
            return PublishResult(bid, n, row.root, True, superseded)
        except Exception as exc:  # IntegrityError, or psycopg's UniqueViolation unwrapped from COPY
            if not (isinstance(exc, IntegrityError) or "unique" in str(exc).lower()
                    or "duplicate" in str(exc).lower()):
                raise
            if attempt:
                break
            superseded = _supersede_squatters(sessions, serials, row)
    raise DumpRejected("serial_conflict", "a serial of this batch is already published in a batch anchored "
                                          "no later than this one", 409)


def _settle_new_rows(sessions: sessionmaker[Session]) -> None:
    """On PostgreSQL, VACUUM (ANALYZE) the tables a publish filled: the new rows are marked all-visible (lookups
    read the index without the heap where they can) and the planner knows the tables' new sizes, now rather than
    when autovacuum wakes up in the middle of the lookups that follow. VACUUM skips the pages it has marked
    before, so its cost follows the batch's size, not the table's. Never fatal: autovacuum does it later."""
    import logging

    engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        return
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) pub_cards, pub_tiles")
    except Exception as exc:  # noqa: BLE001
        logging.getLogger("cardproof.api.publish").warning("VACUUM after publishing failed: %s", type(exc).__name__)


def _copy(row: PubBatch) -> PubBatch:
    """A fresh, unsaved copy of ``row`` (a failed transaction leaves the first one unusable)."""
    cols = PubBatch.__table__.columns.keys()
    return PubBatch(**{k: getattr(row, k) for k in cols if k != "id"})


def _supersede_squatters(sessions: sessionmaker[Session], serials: list[str], row: PubBatch) -> tuple[str, ...]:
    """Remove the published batches that hold some of ``serials`` and were anchored in a later block than
    ``row``; raise serial_conflict if any holder was anchored no later. Returns the removed batch ids."""
    import logging

    from verify_api.storage.models import PubCard

    holders: set[int] = set()
    with sessions() as session:
        for i in range(0, len(serials), 5000):
            holders.update(session.scalars(select(PubCard.batch_pk).where(PubCard.serial.in_(serials[i:i + 5000]))
                                           .distinct()))
        batches = list(session.scalars(select(PubBatch).where(PubBatch.id.in_(holders)))) if holders else []
    if row.anchor_block is None or any(b.anchor_block is None or b.anchor_block <= row.anchor_block
                                       for b in batches):
        raise DumpRejected("serial_conflict", "a serial of this batch is already published in a batch anchored "
                                              "no later than this one", 409)
    with sessions.begin() as session:
        for b in batches:
            session.delete(session.get(PubBatch, b.id))
    removed = tuple(b.batch_id for b in batches)
    logging.getLogger("cardproof.api.publish").warning(
        "batch %s anchored in block %s holds serials of %s, published earlier but anchored later: removed",
        row.batch_id, row.anchor_block, ", ".join(removed))
    return removed
