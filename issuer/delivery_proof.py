"""The supplier's answer to a membership dispute: the order's delivered cards proven in their anchored batch on
chain (``CardEscrow.proveDelivery``), with their public leaf fields and OpenZeppelin multiproofs from the stored
tree.

Proving is idempotent on chain (a card proven twice counts once), so there is no recorded act: a rerun reads which
cards the escrow holds proven (``provenWord``) and proves the rest, ``chunk`` cards a transaction. The last chunk
settles the order (the escrow releases it once every card is proven).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from chain.escrow import Escrow, OrderStatus, ProvenCard
from issuer.core.merkle import MerkleTree
from issuer.core.multiproof import multiproof
from issuer.errors import IssuerError
from issuer.lookup import leaf_of
from issuer.storage import repository as repo
from issuer.storage.models import Card

__all__ = ["NothingToProve", "ProveResult", "prove_order"]


class NothingToProve(IssuerError):
    """The order is not in a membership dispute (or it has ended)."""

    code = "nothing_to_prove"
    http_status = 409


@dataclass(frozen=True)
class ProveResult:
    order_id: int
    quantity: int
    proven_now: int
    proven_total: int
    settled: bool
    txs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _unproven(escrow: Escrow, batch_id: bytes, indices: list[int]) -> list[int]:
    words: dict[int, int] = {}
    out = []
    for i in indices:
        w = i >> 8
        if w not in words:
            words[w] = escrow.proven_word(batch_id, w)
        if not words[w] >> (i & 0xFF) & 1:
            out.append(i)
    return out


def prove_order(sessions: sessionmaker[Session], escrow: Escrow, order_id: int, *, chunk: int = 512) -> ProveResult:
    order = escrow.order(order_id)
    if order.status != OrderStatus.DISPUTED or not order.membership_dispute:
        raise NothingToProve(f"order {order_id} is {order.status.name.lower()}, not in a membership dispute")
    batch_id, ranges = escrow.delivery(order_id)
    indices = [i for r in ranges for i in range(r.start, r.start + r.length)]
    todo = _unproven(escrow, batch_id, indices)
    txs: list[str] = []
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        positions = [pos for (pos,) in session.execute(
            select(Card.tree_pos).where(Card.batch_pk == batch.id).order_by(Card.index))]
        tree = MerkleTree.from_nodes(repo.load_tree(session, batch.id), positions)
        for k in range(0, len(todo), chunk):
            part = todo[k:k + chunk]
            mp = multiproof(tree, part)
            lo, hi = min(part), max(part) + 1
            leaves = (leaf_of(c, batch) for c in session.scalars(
                select(Card).where(Card.batch_pk == batch.id, Card.index >= lo, Card.index < hi)))
            fields = {leaf.index: ProvenCard(leaf.index, leaf.serial, leaf.code_form, leaf.code_commitment)
                      for leaf in leaves}
            cards = [fields[i] for i in mp.value_indices]
            receipt = escrow.prove_delivery(order_id, cards, mp.proof, mp.flags)
            txs.append("0x" + bytes(receipt["transactionHash"]).hex())
            if escrow.order(order_id).status != OrderStatus.DISPUTED:
                break
    after = escrow.order(order_id)
    return ProveResult(order_id, order.quantity, after.proven_count - order.proven_count, after.proven_count,
                       after.status != OrderStatus.DISPUTED, txs)
