"""The sealed delivery of an escrow order: the delivered cards' codes, openings and leaves with one multiproof,
encrypted to the buyer's seal key (``issuer.core.sealed``), kept in ``sealed_deliveries`` and uploaded to the public
service.

* :func:`seal_order_delivery` builds and seals it once per order; a later call (a rerun, a delivery the chain lost)
  returns the stored blob, so the hash recorded on chain never changes.
* The seal key is the one the buyer named when it opened the order (the OrderOpened event); a key that is not a
  valid secp256k1 point is refused here, before anything is sent: the buyer could never open the delivery.
* :func:`upload_sealed` posts the blob to the public service, which keeps it only if its hash matches the chain.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from chain.http_pool import pooled_http_client
from issuer.core.commitment import derive_batch_keys, openings
from issuer.core.errors import CoreError
from issuer.core.merkle import MerkleTree
from issuer.core.multiproof import multiproof
from issuer.core.sealed import DeliveryCard, DeliveryPayload, seal, sealed_hash
from issuer.errors import IssuerError
from issuer.lookup import leaf_of
from issuer.secrets_store import CodeCipher, MasterKey
from issuer.storage import repository as repo
from issuer.storage.models import Card, SealedDelivery

__all__ = ["BadSealKey", "DeliveryRefused", "SealedBlob", "SealedDeliveryResult", "UploadFailed", "card_indices",
           "deliver_sealed", "seal_order_delivery", "stored_delivery",
           "upload_sealed"]


class BadSealKey(IssuerError, ValueError):
    """The order's seal key is not a secp256k1 public key: nothing sealed to it could be opened."""

    code = "bad_seal_key"


class UploadFailed(IssuerError):
    """The public service did not take the sealed delivery (it stays stored here; upload again)."""

    code = "upload_failed"
    http_status = 502


@dataclass(frozen=True)
class SealedBlob:
    blob: bytes
    sealed_hash: bytes
    uploaded: bool


def card_indices(ranges: Sequence[tuple[int, int]]) -> list[int]:
    return [i for start, length in ranges for i in range(start, start + length)]


def stored_delivery(session: Session, chain_id: int, escrow: str, order_id: int) -> SealedDelivery | None:
    return session.scalars(select(SealedDelivery).where(
        SealedDelivery.chain_id == chain_id, SealedDelivery.escrow == escrow,
        SealedDelivery.order_id == str(order_id))).one_or_none()


def _payload(session: Session, master_key: MasterKey, chain_id: int, escrow: str, order_id: int,
             batch_id: bytes, ranges: Sequence[tuple[int, int]]) -> DeliveryPayload:
    batch = repo.get_batch(session, batch_id)
    indices = card_indices(ranges)
    wanted = set(indices)
    secret = master_key.unwrap_batch_secret(batch.batch_id_bytes, bytes(batch.secret_ct))
    cipher = CodeCipher.for_batch_secret(secret)
    open_key = derive_batch_keys(secret)[0]
    tree = _batch_tree(session, batch)
    proof = multiproof(tree, indices)
    cards: dict[int, DeliveryCard] = {}
    lo, hi = min(indices), max(indices) + 1
    for card in session.scalars(select(Card).where(Card.batch_pk == batch.id, Card.index >= lo, Card.index < hi)
                                .order_by(Card.index)):
        if card.index not in wanted:
            continue
        code = cipher.decrypt(batch.batch_id_bytes, card.index, bytes(card.code_ct))
        opening = openings(open_key, card.index, card.index + 1)[0]
        cards[card.index] = DeliveryCard(leaf_of(card, batch), code, opening)
    return DeliveryPayload(chain_id=chain_id, escrow=escrow, order_id=int(order_id), batch_id=batch.batch_id_bytes,
                           root=bytes.fromhex(batch.root[2:]), cards=tuple(cards[i] for i in proof.value_indices),
                           proof=proof.proof, flags=proof.flags)


#: The checked trees of the batches delivered from last (a batch's tree never changes once minted): a delivery
#: reads only its own cards, not the whole batch again.
_TREES: OrderedDict[tuple[str, str], MerkleTree] = OrderedDict()
_TREES_MAX = 4
_trees_lock = threading.Lock()


def _batch_tree(session: Session, batch: Any) -> MerkleTree:
    key = (batch.batch_id, batch.root)
    with _trees_lock:
        tree = _TREES.get(key)
        if tree is not None:
            _TREES.move_to_end(key)
            return tree
    positions = [pos for (pos,) in session.execute(
        select(Card.tree_pos).where(Card.batch_pk == batch.id).order_by(Card.index))]
    tree = MerkleTree.from_nodes(repo.load_tree(session, batch.id), positions)
    with _trees_lock:
        _TREES[key] = tree
        while len(_TREES) > _TREES_MAX:
            _TREES.popitem(last=False)
    return tree


def _ranges_text(ranges: Sequence[tuple[int, int]]) -> str:
    return json.dumps([[int(s), int(n)] for s, n in ranges])


def seal_order_delivery(sessions: sessionmaker[Session], master_key: MasterKey, *, chain_id: int, escrow: str,
                        order_id: int, batch_id: bytes, ranges: Sequence[tuple[int, int]],
                        seal_key: bytes, replace: bool | Callable[[], bool] = False) -> SealedBlob:
    """The sealed delivery of these cards to order ``order_id``: built, sealed and stored on the first call, read
    back afterwards. A stored delivery of other cards is an error (the chain may already hold its hash) unless
    ``replace`` (the caller knows no delivery of it can be on chain; a callable is asked only when it matters)."""
    with sessions.begin() as session:
        row = stored_delivery(session, chain_id, escrow, order_id)
        if row is not None:
            same = row.batch_id == "0x" + batch_id.hex() and row.ranges == _ranges_text(ranges)
            if same:
                return SealedBlob(bytes(row.blob), bytes.fromhex(row.sealed_hash[2:]), row.uploaded_at is not None)
            if not (replace() if callable(replace) else replace):
                raise DeliveryRefused(f"order {order_id} was sealed with other cards (batch {row.batch_id}, ranges "
                                      f"{row.ranges}), whose delivery may be on its way; deliver those")
            session.delete(row)
            session.flush()
        payload = _payload(session, master_key, chain_id, escrow, order_id, batch_id, ranges)
        try:
            blob = seal(payload, seal_key)
        except CoreError as exc:
            raise BadSealKey(f"order {order_id}: the buyer's seal key is unusable ({exc}); the buyer may cancel "
                             "after the delivery deadline") from None
        digest = sealed_hash(blob)
        session.add(SealedDelivery(chain_id=chain_id, escrow=escrow, order_id=str(order_id),
                                   batch_id="0x" + batch_id.hex(), ranges=_ranges_text(ranges),
                                   sealed_hash="0x" + digest.hex(), blob=blob))
    return SealedBlob(blob, digest, False)


def upload_sealed(sessions: sessionmaker[Session], public_url: str, *, chain_id: int, escrow: str,
                  order_id: int, timeout: float = 30.0) -> Any:
    """PUT the stored sealed delivery of the order to the public service; records when it was taken."""
    import httpx

    with sessions() as session:
        row = stored_delivery(session, chain_id, escrow, order_id)
        if row is None:
            raise IssuerError(f"no sealed delivery of order {order_id} is stored here")
        blob = bytes(row.blob)
    url = f"{public_url.rstrip('/')}/v1/orders/{order_id}/delivery"
    try:
        resp = pooled_http_client().put(url, content=blob, headers={"content-type": "application/octet-stream"},
                                  timeout=timeout)
    except httpx.HTTPError as exc:
        raise UploadFailed(f"cannot reach {url}: {type(exc).__name__}") from None
    if resp.status_code not in (200, 201):
        try:
            detail = resp.json().get("error", {}).get("message") or resp.text[:200]
        except ValueError:
            detail = resp.text[:200]
        raise UploadFailed(f"the public service refused the sealed delivery of order {order_id} "
                           f"(HTTP {resp.status_code}): {detail}")
    with sessions.begin() as session:
        row = stored_delivery(session, chain_id, escrow, order_id)
        if row is not None and row.uploaded_at is None:
            row.uploaded_at = dt.datetime.now(dt.UTC)
    return resp.json()


# ------------------------------------------------------------------------------------------- the whole act


class DeliveryRefused(IssuerError, ValueError):
    """The order cannot be delivered from these cards (another product, too early an expiry, not funded)."""

    code = "delivery_refused"
    http_status = 409


@dataclass(frozen=True)
class SealedDeliveryResult:
    act: Any
    sealed_hash: bytes
    cards: int
    uploaded: bool
    upload_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.act.to_json(), "sealed_hash": "0x" + self.sealed_hash.hex(), "cards": self.cards,
                "uploaded": self.uploaded, "upload_error": self.upload_error}


def _check_deliverable(escrow: Any, registry: Any, order: Any, order_id: int, batch_id: bytes,
                       ranges: Sequence[tuple[int, int]], opened: dict[str, Any]) -> None:
    """The contract's own refusals, said before sealing anything (it would revert with them anyway, by the same
    names)."""
    from chain.errors import InvalidCardRange, NotOrderSupplier, QuantityMismatch

    if order.supplier != escrow.client.address:
        raise NotOrderSupplier(order_id=order_id, caller=escrow.client.address.lower())
    on_chain = registry.batch(batch_id)
    if not on_chain.anchored:
        raise DeliveryRefused(f"batch 0x{batch_id.hex()} is not anchored")
    for start, length in ranges:
        if length <= 0 or start + length > on_chain.card_count:
            raise InvalidCardRange(batch_id="0x" + batch_id.hex(), start=start, length=length,
                                   card_count=on_chain.card_count)
    total = sum(n for _, n in ranges)
    if total != order.quantity:
        raise QuantityMismatch(order_id=order_id, quantity=order.quantity, delivered=total)
    if on_chain.product_id != order.product_id:
        ordered = registry.product(order.product_id)
        have = registry.product(on_chain.product_id)
        raise DeliveryRefused(
            f"order {order_id} is for product {order.product_id} "
            f"({ordered.sku_text if ordered else '?'} {ordered.face_value if ordered else '?'} "
            f"{ordered.currency_text if ordered else ''}); batch 0x{batch_id.hex()} holds product "
            f"{on_chain.product_id} ({have.sku_text if have else '?'} {have.face_value if have else '?'} "
            f"{have.currency_text if have else ''})")
    min_expiry = int(opened.get("minExpiry", 0))
    if on_chain.expiry and on_chain.expiry < min_expiry:
        raise DeliveryRefused(f"order {order_id} wants cards valid until at least {min_expiry}; the cards of batch "
                              f"0x{batch_id.hex()} expire at {on_chain.expiry}")


def _delivery_in_flight(sessions: sessionmaker[Session], escrow: str, order_id: int) -> bool:
    """Whether a recorded delivery of the order may still land on chain (sent, not known failed or lost)."""
    from issuer import acts

    with sessions() as session:
        for act in acts.open_acts(session, "deliver"):
            p = acts.payload_of(act)
            if p.get("escrow") == escrow and int(p.get("order_id", -1)) == int(order_id) and act.tx_hash \
                    and act.state != "lost":
                return True
    return False


def deliver_sealed(sessions: sessionmaker[Session], master_key: MasterKey, escrow: Any, registry: Any,
                   order_id: int, batch_id: bytes, ranges: Sequence[tuple[int, int]], *,
                   public_url: str | None = None, order: Any = None, opened_from: int = 0,
                   opened: dict[str, Any] | None = None,
                   after_broadcast: Callable[[], None] | None = None) -> SealedDeliveryResult:
    """Seal the cards to the buyer's seal key, deliver them on chain with the sealed hash (a recorded act) and
    upload the sealed delivery to the public service. Run again, it settles an interrupted delivery and uploads
    what was not uploaded; an upload that fails leaves the delivery done (``upload_error`` says why).

    A caller that has just read the order (the supplier's node) passes it as ``order``, and the OrderOpened
    event's arguments as ``opened`` (or the block it is in or after as ``opened_from``): requests saved, nothing
    else changes."""
    from chain.escrow import OrderStatus
    from issuer.escrow_acts import deliver_order

    if order is None:
        order = escrow.order(order_id)
    if order.status == OrderStatus.NONE:
        raise DeliveryRefused(f"there is no order {order_id} in the escrow")
    chain_id = escrow.client.chain_id
    if order.status != OrderStatus.FUNDED:
        with sessions() as session:
            stored = stored_delivery(session, chain_id, escrow.address, order_id) is not None
    if order.status != OrderStatus.FUNDED and not stored:
        raise DeliveryRefused(f"order {order_id} is {order.status.name.lower()}, not waiting for a delivery")
    if opened is None:
        opened = escrow.opened_event(order_id, from_block=opened_from)
    if opened is None and opened_from:
        opened = escrow.opened_event(order_id)  # moved to an earlier block by a reorg
    if opened is None:
        raise DeliveryRefused(f"no OrderOpened event of order {order_id} was found (is the node pruned?)")
    funded = order.status == OrderStatus.FUNDED
    if funded:
        _check_deliverable(escrow, registry, order, order_id, batch_id, ranges, opened)
    # Replacing a stored sealed delivery of other cards is allowed only while none of it can be on its way (asked
    # only when one is stored: the question reads every open delivery act).
    def replace() -> bool:
        return funded and not _delivery_in_flight(sessions, escrow.address, order_id)

    sealed = seal_order_delivery(sessions, master_key, chain_id=chain_id, escrow=escrow.address, order_id=order_id,
                                 batch_id=batch_id, ranges=ranges, seal_key=bytes(opened["sealKey"]), replace=replace)
    act = deliver_order(sessions, escrow, order_id, batch_id, ranges, sealed.sealed_hash,
                        after_broadcast=after_broadcast, funded=funded)
    uploaded, error = sealed.uploaded, None
    if public_url and not uploaded:
        try:
            upload_sealed(sessions, public_url, chain_id=chain_id, escrow=escrow.address, order_id=order_id)
            uploaded = True
        except IssuerError as exc:
            error = str(exc)
    return SealedDeliveryResult(act, sealed.sealed_hash, len(card_indices(ranges)), uploaded, error)
