"""Anchor a minted batch's root in the CardRegistry: idempotent, resumable, verified by reading back.

States: minted → anchoring → anchored, or → failed (from which anchoring may be retried). The signed
transaction's hash is stored *before* it is broadcast, so a crash at any point is recoverable: the
next run finds the transaction (mined, pending or dropped) or the anchored batch on chain, and never
anchors twice (the contract also refuses a second anchor of the same batch id). The root read back
from the chain must equal the stored root.

Each send is also a recorded act (``issuer.acts``, kind ``anchor``). When the chain lost an anchor the
database holds (a reorg, a rollback, a node that crashed before saving its state), the next run sees it:
``anchored → anchoring``, and the same batch id is anchored again with the same root.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from chain.client import guard
from chain.errors import BatchAlreadyAnchored, ChainError, ContractRevert, TransactionTimeout
from chain.registry import ProductSpec, Registry
from issuer import acts
from issuer.errors import IssuerError
from issuer.storage import repository as repo
from issuer.storage.models import Batch

ProgressFn = Callable[[str], None]


class NotBatchIssuer(IssuerError, PermissionError):
    """The configured account is not this batch's issuer."""

    code = "not_batch_issuer"
    http_status = 403


class RootMismatch(IssuerError):
    """The chain holds a different root for this batch than the database."""

    code = "root_mismatch"
    http_status = 409


@dataclass(frozen=True)
class AnchorResult:
    batch_id: str
    state: str
    root: str
    anchor_tx: str | None
    anchor_block: int | None
    anchored_at: str | None
    chain_id: int
    registry_address: str
    already: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _result(batch: Batch, already: bool) -> AnchorResult:
    return AnchorResult(
        batch_id=batch.batch_id, state=batch.state, root=batch.root, anchor_tx=batch.anchor_tx,
        anchor_block=batch.anchor_block,
        anchored_at=batch.anchored_at.isoformat() if batch.anchored_at else None,
        chain_id=int(batch.chain_id or 0), registry_address=batch.registry_address or "", already=already,
    )


def _block_time(registry: Registry, block_number: int) -> dt.datetime:
    block = guard(lambda: registry.client.w3.eth.get_block(block_number))
    return dt.datetime.fromtimestamp(int(block["timestamp"]), dt.UTC)


def anchor_batch(
    sessions: sessionmaker[Session],
    registry: Registry,
    batch_id: str | bytes,
    *,
    progress: ProgressFn | None = None,
) -> AnchorResult:
    """Anchor `batch_id` (or finish a previous attempt); returns the anchored batch's coordinates."""
    say = progress or (lambda _msg: None)
    client = registry.client
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        bid = batch.batch_id_bytes
        root = bytes.fromhex(batch.root[2:])
        if batch.state == "anchored":
            on_chain = registry.batch(bid)
            if on_chain.anchored:
                _check_root(registry, batch, root, on_chain)
                _settle_act(session, registry, batch)
                session.commit()
                return _result(batch, already=True)
            if (batch.anchor_tx and client.get_receipt(batch.anchor_tx) is None
                    and client.transaction_known(batch.anchor_tx)):
                say(f"the chain lost the anchor; its transaction {batch.anchor_tx} is pending again")
                return _wait_and_finish(session, registry, batch, root, batch.anchor_tx)
        if repo.checksum_address(batch.issuer_address) != client.address:
            raise NotBatchIssuer(
                f"batch {batch.batch_id} belongs to issuer {batch.issuer_address}; "
                f"the configured account is {client.address}"
            )
        if batch.state == "anchored":
            say("the chain no longer holds this anchor (reorganised or rolled back); anchoring again")
            lost = f"the chain lost the anchor of block {batch.anchor_block} (tx {batch.anchor_tx})"
            for act in acts.open_acts(session, "anchor", batch.batch_id) or _last_acts(session, batch):
                acts.lost(act, lost)
            repo.set_batch_state(session, batch, "anchoring", anchor_block=None, anchored_at=None, error=lost)
            session.commit()

        # 1. Is it on chain already (an earlier run that crashed after broadcasting)?
        on_chain = registry.batch(bid)
        if on_chain.anchored:
            say("found on chain; recording")
            return _finish_from_chain(session, registry, batch, root, on_chain.root)

        # 2. A transaction recorded by an earlier run: wait for it, or notice it was dropped.
        if batch.state == "anchoring" and batch.anchor_tx:
            if client.transaction_known(batch.anchor_tx):
                say(f"waiting for earlier transaction {batch.anchor_tx}")
                return _wait_and_finish(session, registry, batch, root, batch.anchor_tx)
            say("earlier transaction was dropped; sending again")

        # 3. Send (simulation first: a revert here leaves nothing on chain).
        if batch.state in ("minted", "failed"):
            repo.set_batch_state(session, batch, "anchoring", chain_id=client.chain_id,
                                 registry_address=registry.address, error=None)
            session.commit()

        act = acts.begin(session, "anchor", batch.batch_id,
                         {"root": batch.root, "card_count": batch.card_count, "manifest": batch.manifest_hash},
                         client=client, contract=registry.address)
        session.commit()

        def record_hash(sent: Any) -> None:
            batch.anchor_tx = "0x" + bytes(sent.tx_hash).hex()
            acts.signed(act, sent)
            session.commit()

        manifest = bytes.fromhex(batch.manifest_hash[2:])
        try:
            say("sending anchor transaction")
            sent = registry.send_anchor(bid, root, batch.card_count, manifest,
                                        product=ProductSpec.of(batch.sku, batch.face_value, batch.currency),
                                        expiry=batch.expiry or 0, before_broadcast=record_hash)
        except BatchAlreadyAnchored:
            return _finish_from_chain(session, registry, batch, root, registry.batch(bid).root)
        except ContractRevert as exc:
            _fail(session, batch, exc)
            raise
        acts.broadcast(act)
        session.commit()
        return _wait_and_finish(session, registry, batch, root, "0x" + bytes(sent.tx_hash).hex())


def _wait_and_finish(session: Session, registry: Registry, batch: Batch, root: bytes, tx_hash: str) -> AnchorResult:
    client = registry.client
    try:
        receipt = client.wait(tx_hash)
    except BatchAlreadyAnchored:
        return _finish_from_chain(session, registry, batch, root, registry.batch(batch.batch_id_bytes).root)
    except ContractRevert as exc:
        _fail(session, batch, exc)
        raise
    except (TransactionTimeout, ChainError):
        session.rollback()  # stays `anchoring` with its tx hash: the next run resumes
        for act in acts.open_acts(session, "anchor", batch.batch_id):
            acts.release(act)
        session.commit()
        raise
    return _finish(session, registry, batch, root, tx_hash, int(receipt["blockNumber"]))


def _finish_from_chain(session: Session, registry: Registry, batch: Batch, root: bytes,
                       chain_root: bytes) -> AnchorResult:
    if chain_root != root:
        _fail(session, batch, RootMismatch(
            f"batch {batch.batch_id} is anchored with root 0x{chain_root.hex()}, not {batch.root}"))
        raise RootMismatch(f"batch {batch.batch_id} is anchored on chain with a different root (0x{chain_root.hex()})")
    event = registry.anchor_event(batch.batch_id_bytes, tx_hash=batch.anchor_tx)
    tx_hash = event["tx_hash"] if event else batch.anchor_tx
    block = event["block_number"] if event else registry.client.block_number()
    return _finish(session, registry, batch, root, tx_hash, block)


def _finish(session: Session, registry: Registry, batch: Batch, root: bytes, tx_hash: str | None,
            block: int) -> AnchorResult:
    on_chain = registry.batch(batch.batch_id_bytes)
    if not on_chain.anchored or on_chain.root != root:
        _fail(session, batch, RootMismatch("the root read back from the chain differs"))
        raise RootMismatch(f"batch {batch.batch_id}: the root read back from the chain differs from the stored root")
    if batch.state in ("minted", "failed", "anchored"):  # anchored: its lost anchor came back (re-mined)
        repo.set_batch_state(session, batch, "anchoring", chain_id=registry.client.chain_id,
                             registry_address=registry.address, error=None)
    repo.set_batch_state(
        session, batch, "anchored",
        chain_id=registry.client.chain_id, registry_address=registry.address, anchor_tx=tx_hash,
        anchor_block=block, anchored_at=_block_time(registry, block), error=None,
    )
    _settle_act(session, registry, batch)
    session.commit()
    return _result(batch, already=False)


def _last_acts(session: Session, batch: Batch) -> list[Any]:
    done = [a for a in acts.acts_for(session, batch.batch_id) if a.kind == "anchor" and a.state in ("mined", "final")]
    return done[-1:]


def _settle_act(session: Session, registry: Registry, batch: Batch) -> None:
    """The anchor act of this batch (the open one, else the last mined one) follows the chain: mined, final
    past the confirmation depth. An anchor found on chain with no act recorded (an older database) gets one."""
    client = registry.client
    found = acts.open_acts(session, "anchor", batch.batch_id) or _last_acts(session, batch)
    if not found:
        act = acts.begin(session, "anchor", batch.batch_id,
                         {"root": batch.root, "card_count": batch.card_count, "manifest": batch.manifest_hash},
                         client=client, contract=registry.address)
        found = [act]
    for act in found[:-1]:  # earlier attempts superseded by the anchor the chain holds
        if act.tx_hash != batch.anchor_tx:
            acts.failed(act, "superseded: the batch is anchored by another transaction")
    act = found[-1]
    receipt = client.get_receipt(batch.anchor_tx) if batch.anchor_tx else None
    acts.mined(act, client, receipt, tx_hash=batch.anchor_tx)
    if receipt is None and batch.anchor_block is not None:
        act.block_number = batch.anchor_block
        act.state = "final" if acts.is_final(client, batch.anchor_block) else "mined"
    session.flush()


def _check_root(registry: Registry, batch: Batch, root: bytes, on_chain: Any = None) -> None:
    on_chain = on_chain or registry.batch(batch.batch_id_bytes)
    if not on_chain.anchored or on_chain.root != root:
        raise RootMismatch(
            f"batch {batch.batch_id} is recorded as anchored but the chain "
            f"{'does not have it' if not on_chain.anchored else 'holds another root'} "
            f"(registry {registry.address}, chain {registry.client.chain_id})"
        )


def _fail(session: Session, batch: Batch, exc: Exception) -> None:
    session.rollback()
    fresh = repo.get_batch(session, batch.batch_id)
    for act in acts.open_acts(session, "anchor", batch.batch_id):
        acts.failed(act, exc)
    if fresh.state in ("minted", "anchoring"):
        repo.set_batch_state(session, fresh, "failed", error=str(exc))
    session.commit()
