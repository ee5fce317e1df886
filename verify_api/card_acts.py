"""When a card was revoked or redeemed, and why: the registry event that did it, from the indexed events.

The verdict (:mod:`verify_api.verdict`) comes from the registry's bitmaps, which say *whether* a card is revoked
or redeemed but not when. The indexer (:mod:`verify_api.indexer`) stores every ``CardsRevoked``,
``BatchRevoked`` and ``CardsRedeemed`` event with its block's time; :func:`card_act` finds the first one that
names the card (``wordIndex * 256 + bit`` of the event's ``mask``, or the whole batch) and gives its block time,
transaction and, for a revocation, the reason code and its name (:data:`verify_api.registry_acts.REASONS`).
None when no such event is indexed (the indexer has not reached it): the page then says no date.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from verify_api.registry_acts import REASONS, REGISTRY, Act

__all__ = ["CardAct", "card_act"]

#: Verdict -> the registry events that can have made it.
_EVENTS = {"revoked": ("CardsRevoked", "BatchRevoked"), "redeemed": ("CardsRedeemed",)}


@dataclass(frozen=True)
class CardAct:
    kind: str  # "revoked" | "redeemed"
    #: Unix time of the event's block (None when the indexer did not record it).
    time: int | None
    block: int
    tx: str
    whole_batch: bool
    #: Revocations: the reason code and its name ("other" for a code cardproof does not name); else None.
    reason: int | None = None
    reason_name: str | None = None


def card_act(session: Any, chain_id: int, batch_id: str, index: int, kind: str) -> CardAct | None:
    """The first indexed registry event that revoked (``kind="revoked"``) or redeemed card ``index`` of
    ``batch_id`` (``0x`` + 64 hex) on ``chain_id``, else None."""
    from verify_api.storage.index_models import ChainEventRow as E

    events = _EVENTS.get(kind)
    if events is None or index < 0:
        return None
    rows = session.execute(
        sa.select(E).where(E.chain_id == chain_id, E.contract == REGISTRY, E.event.in_(events),
                           E.batch_id == batch_id.lower())
        .order_by(E.block_number, E.log_index)).scalars()
    word, bit = divmod(index, 256)
    for row in rows:
        act = Act.of(row)
        if act.word is not None and (act.word != word or not act.mask >> bit & 1):
            continue
        reason = act.args.get("reason") if kind == "revoked" else None
        return CardAct(kind, None if row.block_time is None else int(row.block_time), int(row.block_number),
                       row.tx_hash, act.word is None, None if reason is None else int(reason),
                       None if reason is None else REASONS.get(int(reason), "other"))
    return None
