"""The supplier's escrow acts, deliver and withdraw, as recorded intents (``issuer.acts``), settled from the chain.

* ``deliver_order``: assigns cards of the supplier's batch to an order, with the hash of their sealed delivery
  (``issuer.delivery_seal``). The act (kind ``deliver``, subject the batch id, payload the escrow, order id, ranges
  and sealed hash) is recorded and its transaction hash stored before broadcast. A rerun settles it: delivered on chain with these ranges → done (the act marked mined/final);
  the order still funded (the delivery was lost: dropped, rolled back, reorganised away) → sent again.
* ``withdraw_credit``: withdraws the account's whole credit in a token (kind ``withdraw``, subject the token).
  A withdrawal the chain lost leaves the credit in the escrow: a rerun withdraws it again.
* ``settle_escrow_acts``: what ``cardproof reconcile`` does for these acts: mined ones recorded, lost ones
  sent again (a delivery only while the order is still funded, a withdrawal only while credit remains).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from chain.errors import ChainError, ContractRevert, TransactionTimeout
from chain.escrow import GAS_WITHDRAW, CardRange, Escrow, OrderStatus, _ranges, gas_deliver
from issuer import acts
from issuer.errors import IssuerError


class DeliveryConflict(IssuerError):
    """The order was delivered on chain with other cards, or can no longer be delivered."""

    code = "delivery_conflict"
    http_status = 409


@dataclass(frozen=True)
class ActResult:
    kind: str
    subject: str
    state: str
    tx_hash: str | None
    block_number: int | None
    already: bool
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _result(act: Any, already: bool) -> ActResult:
    return ActResult(act.kind, act.subject, act.state, act.tx_hash, act.block_number, already, acts.payload_of(act))


def _send(sessions: sessionmaker[Session], escrow: Escrow, act_id: int, fn: Any, gas: int,
          after_broadcast: Callable[[], None] | None = None) -> Any:
    """Send `fn` for act `act_id` (hash stored before broadcast) and wait; returns the receipt. `after_broadcast`
    is called once the node holds the transaction, before the wait."""
    client = escrow.client
    with sessions() as session:
        act = session.get(acts.ChainAct, act_id)

        def record_hash(sent: Any) -> None:
            acts.signed(act, sent)
            session.commit()

        try:
            sent = client.send(fn, gas=gas, before_broadcast=record_hash)
            acts.broadcast(act)
            session.commit()
            if after_broadcast is not None:
                after_broadcast()
            receipt = client.wait(sent.tx_hash)
        except ContractRevert as exc:
            session.rollback()
            acts.failed(act, exc)
            session.commit()
            raise
        except (TransactionTimeout, ChainError):
            session.rollback()  # the act keeps its hash: a rerun settles it
            acts.release(act)
            session.commit()
            raise
        acts.mined(act, client, receipt)
        session.commit()
        return receipt


def _delivered(escrow: Escrow, order_id: int, batch_id: bytes, ranges: list[tuple[int, int]],
               sealed_hash: bytes | None = None) -> bool | None:
    """True: delivered with these cards (and this sealed hash); False: still funded (deliverable); None: anything
    else."""
    order = escrow.order(order_id)
    if order.status == OrderStatus.FUNDED:
        return False
    if order.status == OrderStatus.NONE:
        return None
    if sealed_hash is not None and order.sealed_hash != sealed_hash:
        return None
    got_batch, got = escrow.delivery(order_id)
    return True if got_batch == batch_id and [(r.start, r.length) for r in got] == ranges else None


def _sealed_of(payload: dict[str, Any]) -> bytes:
    return bytes.fromhex(payload["sealed_hash"][2:])


def deliver_order(sessions: sessionmaker[Session], escrow: Escrow, order_id: int, batch_id: bytes,
                  ranges: Iterable[CardRange | tuple[int, int]], sealed_hash: bytes, *,
                  after_broadcast: Callable[[], None] | None = None, funded: bool = False) -> ActResult:
    """Deliver cards `ranges` of `batch_id` to order `order_id` with the hash of their sealed delivery (or settle
    an earlier attempt). `after_broadcast`: called when the transaction is at the node, before its receipt is
    awaited (the supplier's node frees a worker slot then). `funded`: the caller has just read the order funded,
    so a new act (nothing sent yet) needs no second look at the chain before sending (the send's simulation
    still refuses an order delivered meanwhile)."""
    rs = _ranges(ranges)
    subject = "0x" + batch_id.hex()
    payload = {"escrow": escrow.address, "order_id": int(order_id), "ranges": [list(r) for r in rs],
               "sealed_hash": "0x" + bytes(sealed_hash).hex()}
    with sessions.begin() as session:
        act = acts.begin(session, "deliver", subject, payload, client=escrow.client, contract=escrow.address,
                         reuse=("pending", "broadcast", "lost", "mined", "final"))
        act_id = act.id
        fresh = act.tx_hash is None and act.state == "pending"
    if not (funded and fresh):
        settled = _settle_deliver(sessions, escrow, act_id, resend=False)
        if settled is not None:
            return settled
    _send(sessions, escrow, act_id, escrow.fn.deliver(int(order_id), batch_id, rs, bytes(sealed_hash)),
          gas_deliver(rs), after_broadcast)
    with sessions() as session:
        return _result(session.get(acts.ChainAct, act_id), already=False)


def _settle_deliver(sessions: sessionmaker[Session], escrow: Escrow, act_id: int, *, resend: bool) -> ActResult | None:
    """Settle a deliver act from the chain. Returns its result when done (or not to be sent); None when it
    must be sent (and `resend` is False)."""
    client = escrow.client
    with sessions() as session:
        act = session.get(acts.ChainAct, act_id)
        p = acts.payload_of(act)
        order_id, rs = int(p["order_id"]), [tuple(r) for r in p["ranges"]]
        sealed = _sealed_of(p)
        batch_id = bytes.fromhex(act.subject[2:])
        seen = acts.observe(client, act)
        if seen.status == "in_mempool":
            seen = acts.Seen("mined", client.wait(act.tx_hash))
        state = _delivered(escrow, order_id, batch_id, rs, sealed)
        if state is True:
            acts.mined(act, client, seen.receipt if seen.status == "mined" else None)
            session.commit()
            return _result(act, already=True)
        if state is None:
            acts.failed(act, f"order {order_id} is {escrow.order(order_id).status.name.lower()} on chain, "
                             "not deliverable with these cards")
            session.commit()
            raise DeliveryConflict(f"order {order_id} was delivered otherwise or can no longer be delivered")
        if act.tx_hash:
            acts.lost(act, "the chain does not hold the delivery")
        session.commit()
    if not resend:
        return None
    _send(sessions, escrow, act_id, escrow.fn.deliver(order_id, batch_id, rs, sealed), gas_deliver(rs))
    with sessions() as session:
        return _result(session.get(acts.ChainAct, act_id), already=False)


def withdraw_credit(sessions: sessionmaker[Session], escrow: Escrow, token: str, to: str | None = None) -> ActResult:
    """Withdraw the account's whole credit in `token` (to `to`), as a recorded act."""
    from eth_utils import to_checksum_address

    token = to_checksum_address(token)
    to = to_checksum_address(to) if to else None
    payload = {"escrow": escrow.address, "account": escrow.client.address, "to": to}
    with sessions.begin() as session:
        act = acts.begin(session, "withdraw", token, payload, client=escrow.client, contract=escrow.address)
        act_id = act.id
    settled = _settle_withdraw(sessions, escrow, act_id, resend=True)
    return settled


def _settle_withdraw(sessions: sessionmaker[Session], escrow: Escrow, act_id: int, *, resend: bool) -> ActResult:
    client = escrow.client
    with sessions() as session:
        act = session.get(acts.ChainAct, act_id)
        p = acts.payload_of(act)
        token, to = act.subject, p.get("to")
        seen = acts.observe(client, act)
        if seen.status == "in_mempool":
            seen = acts.Seen("mined", client.wait(act.tx_hash))
        if seen.status == "mined":
            acts.mined(act, client, seen.receipt)
            session.commit()
            return _result(act, already=True)
        if act.tx_hash:
            acts.lost(act, "the chain does not hold the withdrawal")
        session.commit()
    if not resend:
        with sessions() as session:
            return _result(session.get(acts.ChainAct, act_id), already=False)
    fn = escrow.fn.withdraw(token) if to is None else escrow.fn.withdrawTo(token, to)
    _send(sessions, escrow, act_id, fn, GAS_WITHDRAW)
    with sessions() as session:
        return _result(session.get(acts.ChainAct, act_id), already=False)


def settle_escrow_acts(sessions: sessionmaker[Session], escrow: Escrow) -> list[tuple[str, str, str]]:
    """Settle every deliver and withdraw act of this account on this escrow: (kind, status, detail) per act that
    needed something (status: repaired | pending | unrepaired)."""
    out: list[tuple[str, str, str]] = []
    with sessions() as session:
        todo = [(a.id, a.kind, a.subject, a.state, a.tx_hash) for kind in ("deliver", "withdraw")
                for a in acts.acts_for_kind(session, kind)
                if a.account == escrow.client.address and acts.payload_of(a).get("escrow") == escrow.address]
    for act_id, kind, subject, state, tx in todo:
        with sessions() as session:
            act = session.get(acts.ChainAct, act_id)
            if acts.leased(act):
                out.append((kind, "pending", f"{subject}: driven by a live process (tx {tx})"))
                continue
        try:
            if kind == "deliver":
                p = acts.payload_of(act)
                done = _delivered(escrow, int(p["order_id"]), bytes.fromhex(subject[2:]),
                                  [tuple(r) for r in p["ranges"]], _sealed_of(p))
                if state in ("mined", "final") and done is True:
                    if state == "mined":
                        _settle_deliver(sessions, escrow, act_id, resend=False)  # final once deep enough
                    continue
                if state == "failed":
                    continue
                result = _settle_deliver(sessions, escrow, act_id, resend=True)
                if result is not None and not result.already:
                    out.append((kind, "repaired", (f"order {p['order_id']}: the chain had lost the delivery; "
                                                   f"sent again (tx {result.tx_hash})")))
                elif result is not None and state not in ("mined", "final"):
                    out.append((kind, "repaired", f"order {p['order_id']}: delivery recorded from the chain"))
            else:
                if state == "failed":
                    continue
                result = _settle_withdraw(sessions, escrow, act_id, resend=False)
                if result.already and state == "final":
                    continue
                if result.state == "lost" and escrow.credits(escrow.client.address, subject) > 0:
                    result = _settle_withdraw(sessions, escrow, act_id, resend=True)
                    out.append((kind, "repaired", (f"{subject}: the chain had lost the withdrawal; withdrawn again "
                                                   f"(tx {result.tx_hash})")))
                elif result.state == "lost":
                    with sessions.begin() as session:
                        acts.failed(session.get(acts.ChainAct, act_id), "lost, and no credit left to withdraw")
                else:
                    out.append((kind, "repaired", f"{subject}: withdrawal recorded from the chain"))
        except (IssuerError, ChainError) as exc:
            out.append((kind, "unrepaired", f"{subject}: {' '.join(str(exc).split())[:300]}"))
    return out
