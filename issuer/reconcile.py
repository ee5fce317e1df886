"""Compare the supplier's database with the chain, repair what can be repaired, report the rest.

For each batch (one, an issuer's, or all):

* **anchor**: the batch anchored on chain with the stored root. An anchor the chain lost is sent again (same
  batch id, same root); one found on chain but not recorded is recorded; an unfinished one is settled or resent.
  Another root on chain cannot be repaired.
* **revocations**: open revoke acts are settled (mined: recorded; lost: sent again); then the chain's
  revocation bits against the cards' flags: revoked on chain only → recorded; revoked in the database only → the
  revocation is sent again; the batch's own revocation likewise (on chain only → recorded; database only →
  reported).
* **redemptions**: the chain's redemption bits against the cards: redeemed on chain only → recorded (for the
  redeemer an act names, else ``chain``); a finished redemption the chain lost → marked again; a claim nobody
  drives any more → settled (kept if on chain, released if not); a claim in flight → reported ``pending``.
* **escrow acts** (deliver, withdraw; with ``--all`` or ``--issuer`` when an escrow is deployed): mined ones
  recorded, lost ones sent again while they still apply (``issuer.escrow_acts``).

Every finding is one line: ``ok`` (nothing to do), ``repaired``, ``pending`` (in flight: run again later) or
``unrepaired``. The whole is consistent when nothing is pending or unrepaired.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from chain.errors import ChainError
from chain.registry import Registry
from issuer import acts
from issuer.errors import IssuerError
from issuer.storage import repository as repo
from issuer.storage.models import Batch, Card

BITS = 256


@dataclass(frozen=True)
class Finding:
    batch_id: str
    kind: str  # anchor | revoke | redeem | act
    status: str  # ok | repaired | pending | unrepaired
    detail: str
    cards: list[int] = field(default_factory=list)

    def line(self) -> str:
        cards = f" (cards {', '.join(map(str, self.cards[:20]))}{', ...' if len(self.cards) > 20 else ''})" \
            if self.cards else ""
        return f"{self.status:10} {self.kind:7} {self.batch_id}  {self.detail}{cards}"


@dataclass
class Report:
    findings: list[Finding]
    batches: int

    @property
    def consistent(self) -> bool:
        return all(f.status in ("ok", "repaired") for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.status] = counts.get(f.status, 0) + 1
        return {"consistent": self.consistent, "batches": self.batches, "counts": counts,
                "findings": [asdict(f) for f in self.findings if f.status != "ok"]}


def reconcile(sessions: sessionmaker[Session], registry: Registry, *, batch_id: str | None = None,
              issuer: str | None = None, escrow: Any = None) -> Report:
    """Reconcile one batch, an issuer's batches, or (neither given) every batch; with `escrow` (and no batch
    given), also the configured account's escrow acts (deliver, withdraw: ``issuer.escrow_acts``)."""
    with sessions() as session:
        q = select(Batch.batch_id).order_by(Batch.id)
        if batch_id is not None:
            q = q.where(Batch.batch_id == repo.get_batch(session, batch_id).batch_id)
        elif issuer is not None:
            q = q.where(Batch.issuer_address == repo.checksum_address(issuer))
        ids = list(session.scalars(q))
    findings: list[Finding] = []
    for bid in ids:
        try:
            findings.extend(reconcile_batch(sessions, registry, bid))
        except (IssuerError, ChainError) as exc:
            findings.append(Finding(bid, "batch", "unrepaired", _one_line(exc)))
    if escrow is not None and batch_id is None:
        from issuer.escrow_acts import settle_escrow_acts

        try:
            for kind, status, detail in settle_escrow_acts(sessions, escrow):
                findings.append(Finding(escrow.address, kind, status, detail))
        except (IssuerError, ChainError) as exc:
            findings.append(Finding(escrow.address, "escrow", "unrepaired", _one_line(exc)))
    return Report(findings, len(ids))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def reconcile_batch(sessions: sessionmaker[Session], registry: Registry, batch_id: str) -> list[Finding]:
    out = [_anchor(sessions, registry, batch_id)]
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        anchored = batch.state == "anchored"
    if anchored and out[0].status in ("ok", "repaired"):
        out.extend(_revocations(sessions, registry, batch_id))
        out.extend(_redemptions(sessions, registry, batch_id))
    return out


# ----------------------------------------------------------------------------- anchor


def _anchor(sessions: sessionmaker[Session], registry: Registry, batch_id: str) -> Finding:
    from issuer.anchoring import anchor_batch

    client = registry.client
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        state, root, issuer, tx = batch.state, batch.root, batch.issuer_address, batch.anchor_tx
        open_anchor = acts.open_acts(session, "anchor", batch_id)
        leased = any(acts.leased(a) for a in open_anchor)
    on_chain = registry.batch(bytes.fromhex(batch_id[2:]))
    if on_chain.anchored and "0x" + on_chain.root.hex() != root:
        return Finding(batch_id, "anchor", "unrepaired",
                       f"the chain holds another root (0x{on_chain.root.hex()}) than the database ({root})")
    if state == "minted" and not on_chain.anchored and not open_anchor:
        return Finding(batch_id, "anchor", "ok", "minted, not anchored")
    if state == "failed" and not on_chain.anchored:
        return Finding(batch_id, "anchor", "unrepaired", "anchoring failed; fix the cause, then `cardproof anchor`")
    if state == "anchored" and on_chain.anchored and not open_anchor:
        return Finding(batch_id, "anchor", "ok", "anchored")
    if leased and not on_chain.anchored:
        return Finding(batch_id, "anchor", "pending", f"being anchored by a live process (tx {tx or '-'})")
    if repo.checksum_address(issuer) != client.address and not on_chain.anchored:
        return Finding(batch_id, "anchor", "unrepaired",
                       f"the chain does not hold the anchor and the configured account is not the issuer {issuer}")
    was = "anchored" if state == "anchored" else state
    try:
        result = anchor_batch(sessions, registry, batch_id)
    except (IssuerError, ChainError) as exc:
        return Finding(batch_id, "anchor", "unrepaired", _one_line(exc))
    if was == "anchored" and not on_chain.anchored:
        detail = f"the chain had lost the anchor: anchored again in block {result.anchor_block} (tx {result.anchor_tx})"
    elif on_chain.anchored and was != "anchored":
        detail = f"found anchored on chain: recorded (block {result.anchor_block})"
    elif was == "anchored":
        detail = "anchored; its act settled"
    else:
        detail = f"unfinished anchoring completed in block {result.anchor_block} (tx {result.anchor_tx})"
    return Finding(batch_id, "anchor", "repaired", detail)


# ----------------------------------------------------------------------------- bitmaps


def _words(registry: Registry, batch_id: str, count: int, which: str) -> list[int]:
    bid = bytes.fromhex(batch_id[2:])
    read = registry.revoked_word if which == "revoked" else registry.redeemed_word
    return [read(bid, w) for w in range((count + BITS - 1) // BITS)]


def _bit(words: list[int], index: int) -> bool:
    return bool((words[index // BITS] >> (index % BITS)) & 1)


def _cards(session: Session, batch_pk: int) -> list[tuple[int, int, bool, int | None, Any, str | None]]:
    return [tuple(row) for row in session.execute(  # type: ignore[misc]
        select(Card.id, Card.index, Card.revoked, Card.revoke_reason, Card.redeemed_at, Card.redeemed_by)
        .where(Card.batch_pk == batch_pk).order_by(Card.index))]


def _revocations(sessions: sessionmaker[Session], registry: Registry, batch_id: str) -> list[Finding]:
    from issuer.revocation import send_revocation, settle_revocations

    out: list[Finding] = []
    try:
        settled = settle_revocations(sessions, registry, batch_id, resend=True, wait=True)
    except (IssuerError, ChainError) as exc:
        return [Finding(batch_id, "revoke", "unrepaired", f"settling recorded revocations: {_one_line(exc)}")]
    if settled:
        out.append(Finding(batch_id, "revoke", "repaired", "recorded revocations settled from the chain",
                           sorted(settled)))
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        batch_pk, count, db_batch_revoked = batch.id, batch.card_count, batch.revoked
        ours = repo.checksum_address(batch.issuer_address) == registry.client.address
        pending = {int(i) for a in acts.open_acts(session, "revoke", batch_id) if acts.leased(a)
                   for i in acts.payload_of(a).get("indices", [])}
        cards = _cards(session, batch_pk)
    on_chain = registry.batch(bytes.fromhex(batch_id[2:]))
    if on_chain.revoked and not db_batch_revoked:
        with sessions.begin() as session:
            repo.mark_batch_revoked(session, repo.get_batch(session, batch_id), on_chain.revoke_reason)
        out.append(Finding(batch_id, "revoke", "repaired", "the batch is revoked on chain: recorded"))
    elif db_batch_revoked and not on_chain.revoked:
        out.append(Finding(batch_id, "revoke", "unrepaired", "the database says the batch is revoked; the chain "
                                                             "does not (revoke it on chain again)"))
    words = _words(registry, batch_id, count, "revoked")
    chain_only = [i for _id, i, rev, _r, _a, _b in cards if _bit(words, i) and not rev]
    db_only: dict[int, list[int]] = {}
    for _id, i, rev, reason, _a, _b in cards:
        if rev and not _bit(words, i) and i not in pending:
            db_only.setdefault(int(reason or 0), []).append(i)
    if chain_only:
        with sessions.begin() as session:
            repo.mark_cards_revoked(session, batch_pk, chain_only, 0)
        out.append(Finding(batch_id, "revoke", "repaired", "revoked on chain only: recorded", chain_only))
    for reason, indices in sorted(db_only.items()):
        if not ours:
            out.append(Finding(batch_id, "revoke", "unrepaired", "revoked in the database only, and the configured "
                                                                 "account is not the issuer", indices))
            continue
        try:
            tx = send_revocation(sessions, registry, batch_id, batch_pk, indices, reason)
            out.append(Finding(batch_id, "revoke", "repaired", f"the chain had lost the revocation: sent again "
                                                               f"(tx {tx})", indices))
        except (IssuerError, ChainError) as exc:
            out.append(Finding(batch_id, "revoke", "unrepaired", f"revoked in the database only; sending again "
                                                                 f"failed: {_one_line(exc)}", indices))
    if pending:
        out.append(Finding(batch_id, "revoke", "pending", "a revocation is being sent by a live process",
                           sorted(pending)))
    if not out:
        out.append(Finding(batch_id, "revoke", "ok", "revocations agree"))
    return out


def _redemptions(sessions: sessionmaker[Session], registry: Registry, batch_id: str) -> list[Finding]:
    from issuer.core.serial import canonical_serial
    from issuer.redemption import PENDING, _in_flight, _release_claim, _swap_claim, is_claim, redo_redemption

    client = registry.client
    out: list[Finding] = []
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        batch_pk, count = batch.id, batch.card_count
        cards = _cards(session, batch_pk)
        serials = {cid: serial for cid, serial in
                   session.execute(select(Card.id, Card.serial).where(Card.batch_pk == batch_pk))}
        flight = {cid: _in_flight(session, by, at) for cid, _i, _r, _rr, at, by in cards if is_claim(by)}
        act_of = {cid: acts.by_tx(session, by[len(PENDING):]) for cid, _i, _r, _rr, _at, by in cards
                  if by and by.startswith(PENDING)}
        who_of = {cid: (acts.payload_of(a).get("redeemed_by") if a is not None else None)
                  for cid, a in act_of.items()}
    bid = bytes.fromhex(batch_id[2:])
    words = _words(registry, batch_id, count, "redeemed")
    recorded, released, redone, pending, failed = [], [], [], [], []
    for cid, i, _rev, _reason, at, by in cards:
        on_chain = _bit(words, i)
        if at is None:
            if on_chain:
                with sessions.begin() as session:
                    repo.mark_card_redeemed(session, cid, "chain")
                recorded.append(i)
            continue
        if is_claim(by):
            if flight.get(cid):
                pending.append(i)
                continue
            if on_chain:
                _swap_claim(sessions, cid, by, who_of.get(cid) or "chain")
                recorded.append(i)
            elif by.startswith(PENDING) and client.get_receipt(by[len(PENDING):]) is None \
                    and client.transaction_known(by[len(PENDING):]):
                pending.append(i)
            else:
                _release_claim(sessions, cid, by)
                released.append(i)
            continue
        if not on_chain:  # a finished redemption the chain lost
            try:
                redo_redemption(sessions, registry, cid, bid, i, canonical_serial(serials[cid]), by or "chain")
                redone.append(i)
            except IssuerError as exc:
                if registry.is_redeemed(bid, i):
                    redone.append(i)
                else:
                    failed.append((i, _one_line(exc)))
            except ChainError as exc:
                failed.append((i, _one_line(exc)))
    if recorded:
        out.append(Finding(batch_id, "redeem", "repaired", "redeemed on chain: recorded", recorded))
    if released:
        out.append(Finding(batch_id, "redeem", "repaired", "claims of redemptions the chain does not hold: "
                                                           "released", released))
    if redone:
        out.append(Finding(batch_id, "redeem", "repaired", "the chain had lost these redemptions: marked again",
                           redone))
    if pending:
        out.append(Finding(batch_id, "redeem", "pending", "redemptions in flight", pending))
    for i, why in failed:
        out.append(Finding(batch_id, "redeem", "unrepaired", f"redeemed in the database only; marking again "
                                                             f"failed: {why}", [i]))
    # Settle the remaining open redeem acts (their cards are settled above).
    with sessions() as session:
        redeemed_in_db = {int(i) for i, at in session.execute(
            select(Card.index, Card.redeemed_at).where(Card.batch_pk == batch_pk)) if at is not None}
        for act in acts.open_acts(session, "redeem", batch_id):
            if acts.leased(act):
                continue
            index = int(acts.payload_of(act).get("index", -1))
            seen = acts.observe(client, act)
            if seen.status == "mined":
                acts.mined(act, client, seen.receipt)
            elif seen.status == "in_mempool":
                acts.broadcast(act)
            elif index >= 0 and registry.is_redeemed(bid, index):
                acts.mined(act, client, None)
            elif seen.status == "reverted":
                acts.failed(act, "the redemption transaction failed on chain")
            elif index not in redeemed_in_db:
                # Its claim was released (above, or by a later attempt): the attempt is over, nobody redoes it.
                acts.failed(act, "released: the chain does not hold it")
            else:
                acts.lost(act, "the chain does not hold it")
        session.commit()
    if not out:
        out.append(Finding(batch_id, "redeem", "ok", "redemptions agree"))
    return out
