"""Export a batch for delivery or print: cards.csv (serial, index, code, opening, url), one QR PNG per card,
tree.json.

This is the one place plaintext codes leave the encrypted store, for the buyer. Each code travels with its
opening, which lets its holder check it against the anchored leaf alone (``cardproof verify --code -``, or the
card page). cards.csv is written with mode 0600. A QR code holds only the public verification URL
``{public_url}/c/{serial}``. An existing export in the target folder is never overwritten unless asked.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import qrcode
from qrcode.constants import ERROR_CORRECT_M
from sqlalchemy.orm import Session, sessionmaker

from issuer.core.commitment import derive_batch_keys, format_opening, openings
from issuer.core.dump import make_dump
from issuer.core.merkle import MerkleTree
from issuer.core.serial import canonical_serial
from issuer.errors import IssuerError
from issuer.lookup import leaf_of
from issuer.secrets_store import CodeCipher, MasterKey
from issuer.storage import repository as repo

ProgressFn = Callable[[str, int, int], None]


class ExportError(IssuerError, OSError):
    """The export folder cannot be written."""

    code = "export_error"


@dataclass(frozen=True)
class ExportResult:
    batch_id: str
    out_dir: str
    cards: int
    cards_csv: str
    tree_json: str
    qr_dir: str | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def card_url(public_url: str, serial: str) -> str:
    return f"{public_url.rstrip('/')}/c/{serial}"


def qr_png(url: str, path: Path) -> None:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=8, border=4)
    qr.add_data(url)
    qr.make(fit=True)
    qr.make_image().save(path)


def _open_private(path: Path) -> Any:
    """``path`` truncated for writing, mode 0600 even if it existed with another mode (a stale
    ``.part`` file of an interrupted export), never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def dump_bytes(dump: dict[str, Any]) -> bytes:
    return json.dumps(dump, separators=(",", ":")).encode("utf-8")


def batch_dump(sessions: sessionmaker[Session], batch_id: str) -> dict[str, Any]:
    """The batch's public OpenZeppelin ``standard-v1`` dump: leaves and tree, no code, no opening."""
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        leaves, tree_indices = [], []
        for card in repo.iter_cards(session, batch.id):
            leaves.append(leaf_of(card, batch))
            tree_indices.append(card.tree_pos)
        tree = MerkleTree.from_nodes(repo.load_tree(session, batch.id), tree_indices)
        return make_dump(leaves, tree)


def export_batch(sessions: sessionmaker[Session], master_key: MasterKey, batch_id: str, out_dir: Path,
                 public_url: str, *, qr: bool = True, force: bool = False,
                 progress: ProgressFn | None = None) -> ExportResult:
    report = progress or (lambda *_: None)
    out_dir = Path(out_dir)
    cards_csv, tree_json, qr_dir = out_dir / "cards.csv", out_dir / "tree.json", out_dir / "qr"
    with sessions() as session:
        batch = repo.get_batch(session, batch_id)
        if not force and (cards_csv.exists() or tree_json.exists()):
            raise ExportError(f"{out_dir} already holds an export; pick another folder or pass --force")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            if qr:
                qr_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise ExportError(f"cannot create {out_dir}: {exc.strerror}") from None
        secret = master_key.unwrap_batch_secret(batch.batch_id_bytes, bytes(batch.secret_ct))
        cipher = CodeCipher.for_batch_secret(secret)
        open_key = derive_batch_keys(secret)[0]
        n = batch.card_count
        leaves = []
        tree_indices = []
        tmp_csv = cards_csv.with_suffix(".csv.part")
        try:
            with _open_private(tmp_csv) as f:
                writer = csv.writer(f)
                writer.writerow(["serial", "index", "code", "opening", "url"])
                for done, card in enumerate(repo.iter_cards(session, batch.id)):
                    serial = canonical_serial(card.serial)
                    code = cipher.decrypt(batch.batch_id_bytes, card.index, bytes(card.code_ct))
                    opening = format_opening(openings(open_key, card.index, card.index + 1)[0])
                    url = card_url(public_url, serial)
                    writer.writerow([serial, card.index, code, opening, url])
                    if qr:
                        qr_png(url, qr_dir / f"{serial}.png")
                    leaves.append(leaf_of(card, batch))
                    tree_indices.append(card.tree_pos)
                    if done % 1000 == 0:
                        report("export", done, n)
            os.replace(tmp_csv, cards_csv)
        except OSError as exc:
            tmp_csv.unlink(missing_ok=True)
            raise ExportError(f"cannot write the export to {out_dir}: {exc.strerror}") from None
        tree = MerkleTree.from_nodes(repo.load_tree(session, batch.id), tree_indices)
        try:
            tree_json.write_bytes(dump_bytes(make_dump(leaves, tree)))
        except OSError as exc:
            raise ExportError(f"cannot write {tree_json}: {exc.strerror}") from None
        report("export", n, n)
    return ExportResult(batch.batch_id, str(out_dir), n, str(cards_csv), str(tree_json), str(qr_dir) if qr else None)
