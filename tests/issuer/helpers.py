"""Helpers shared by the issuer service tests."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from issuer.core.commitment import code_commitment, derive_batch_keys, derive_opening
from issuer.minting import MintRequest, MintResult, mint_batch
from issuer.secrets_store import CodeCipher, MasterKey
from issuer.storage import repository as repo
from issuer.storage import models


def all_tables() -> list[sa.Table]:
    """Every table the migrations create (models of other packages included), parents first."""
    metadata = models.import_all_models() if hasattr(models, "import_all_models") else models.Base.metadata
    return list(metadata.sorted_tables)

ISSUER = "0x" + "ab" * 20


def mint(sessions: sessionmaker[Session], master_key: MasterKey, issuer: str = ISSUER, **kw) -> MintResult:
    """Mint with sensible defaults: 8 generated 20.00 USD cards."""
    fields = {"sku": "GC-20-USD", "face_value": "20.00", "currency": "USD"}
    if "codes_csv" not in kw:
        fields["count"] = 8
    fields.update(kw)
    workers = fields.pop("workers", 1)
    return mint_batch(sessions, master_key, issuer, MintRequest(**fields), workers=workers)


def batch_keys(sessions: sessionmaker[Session], master_key: MasterKey, batch_id: str) -> tuple[bytes, bytes]:
    """(open_key, enc_key) of a stored batch."""
    with sessions() as s:
        batch = repo.get_batch(s, batch_id)
        secret = master_key.unwrap_batch_secret(batch.batch_id_bytes, bytes(batch.secret_ct))
    return derive_batch_keys(secret)


def cards_of(sessions: sessionmaker[Session], master_key: MasterKey, batch_id: str) -> list[dict]:
    """Every card of a batch, index order, with its code decrypted and its opening derived (as the export
    does), and the batch's code form."""
    open_key, enc_key = batch_keys(sessions, master_key, batch_id)
    cipher = CodeCipher(enc_key)
    out = []
    with sessions() as s:
        batch = repo.get_batch(s, batch_id)
        bid, form = batch.batch_id_bytes, int(batch.code_form)
        for card in repo.iter_cards(s, batch.id):
            out.append({
                "id": card.id, "index": card.index, "serial": card.serial, "tree_pos": card.tree_pos,
                "commitment": bytes(card.code_commitment), "fingerprint": bytes(card.code_fingerprint),
                "code": cipher.decrypt(bid, card.index, bytes(card.code_ct)),
                "redeemed_at": card.redeemed_at, "revoked": card.revoked,
                "opening": derive_opening(open_key, card.index), "code_form": form,
            })
    return out


def expected_commitment(card: dict, code: str | None = None) -> bytes:
    """The leaf commitment of a card (from ``cards_of``) to its code (or ``code``), from the core alone."""
    return code_commitment(card["opening"], card["code"] if code is None else code, card["code_form"])


def table_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as s:
        return {t.name: s.scalar(sa.select(sa.func.count()).select_from(t)) for t in all_tables()}


def all_stored_values(sessions: sessionmaker[Session]) -> list[tuple[str, str, object]]:
    """(table, column, value) of every non-null text or binary value stored in any table."""
    out = []
    with sessions() as s:
        for table in all_tables():
            for row in s.execute(sa.select(table)).mappings():
                for col, value in row.items():
                    if isinstance(value, (str, bytes, bytearray, memoryview)):
                        out.append((table.name, col, bytes(value) if not isinstance(value, str) else value))
    return out


def code_forms(code: str) -> list[str]:
    """The code and its separator-free form (what a leak could look like)."""
    forms = {code, code.replace("-", "")}
    return [f for f in forms if len(f) >= 8]
