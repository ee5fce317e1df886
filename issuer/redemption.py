"""Redeem a card exactly once: check its code, claim it in the database, mark it on chain.

Exactly-once comes from one conditional UPDATE in the database (of concurrent callers, one wins, on
SQLite and PostgreSQL alike) and from the registry's bitmap on chain. The claim is taken first; if the
chain then refuses for a reason that means "not redeemed" (unreachable node, revoked card) the claim is
released again, so the database never says redeemed when the chain does not.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

import chain.errors as chain_errors
from chain.registry import Registry
from issuer.core.serial import format_serial, parse_serial
from issuer.errors import AlreadyRedeemed, CardRevoked, InvalidBatchState, WrongCode
from issuer.lookup import check_code
from issuer.secrets_store import MasterKey
from issuer.storage import repository as repo
from issuer.storage.models import Card


@dataclass(frozen=True)
class RedeemResult:
    serial: str
    batch_id: str
    index: int
    redeemed_at: str
    redeemed_by: str
    tx_hash: str
    block_number: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _release_claim(sessions: sessionmaker[Session], card_id: int, token: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(Card).where(Card.id == card_id, Card.redeemed_by == token)
            .values(redeemed_at=None, redeemed_by=None).execution_options(synchronize_session=False)
        )


def redeem_card(sessions: sessionmaker[Session], master_key: MasterKey, registry: Registry, serial_text: str,
                code: str, redeemed_by: str) -> RedeemResult:
    """Redeem card `serial_text` with its secret `code` on behalf of `redeemed_by`."""
    serial = format_serial(parse_serial(serial_text))
    with sessions() as session:
        card = repo.get_card_by_serial(session, serial_text)
        batch = card.batch
        if batch.state != "anchored":
            raise InvalidBatchState(batch.batch_id, batch.state, "anchored",
                                    detail="cards can be redeemed once their batch is anchored")
        if not check_code(session, master_key, serial_text, code):
            raise WrongCode(serial)
        if card.revoked or batch.revoked:
            raise CardRevoked(serial, card.revoke_reason if card.revoked else batch.revoke_reason)
        if card.redeemed_at is not None:
            raise AlreadyRedeemed(serial, card.redeemed_at.isoformat())
        card_id, index, batch_id = card.id, card.index, batch.batch_id_bytes
        token = f"claim:{secrets.token_hex(8)}"
        if not repo.mark_card_redeemed(session, card_id, token):
            session.rollback()
            raise AlreadyRedeemed(serial)
        session.commit()

    try:
        receipt = registry.mark_redeemed(batch_id, [index])
    except chain_errors.CardAlreadyRedeemed:
        # Redeemed on chain by someone else (another system of the issuer): the claim stands.
        with sessions.begin() as session:
            session.execute(update(Card).where(Card.id == card_id, Card.redeemed_by == token)
                            .values(redeemed_by="chain").execution_options(synchronize_session=False))
        raise AlreadyRedeemed(serial) from None
    except chain_errors.CardRevoked:
        _release_claim(sessions, card_id, token)
        with sessions.begin() as session:
            repo.mark_cards_revoked(session, repo.get_batch(session, batch_id).id, [index], 0)
        raise CardRevoked(serial) from None
    except BaseException:
        _release_claim(sessions, card_id, token)
        raise

    now = dt.datetime.now(dt.UTC)
    with sessions.begin() as session:
        session.execute(update(Card).where(Card.id == card_id, Card.redeemed_by == token)
                        .values(redeemed_by=redeemed_by).execution_options(synchronize_session=False))
    return RedeemResult(
        serial=serial, batch_id="0x" + batch_id.hex(), index=index, redeemed_at=now.isoformat(),
        redeemed_by=redeemed_by, tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
        block_number=int(receipt["blockNumber"]),
    )
