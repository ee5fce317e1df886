"""Export a batch for delivery or print: cards.csv (serial, index, code, opening, url), one QR image per card
(PNG, or SVG for print), tree.json.

This is the one place plaintext codes leave the encrypted store, for the buyer. Each code travels with its
opening, which lets its holder check it against the anchored leaf alone (``cardproof verify --code -``, or the
card page). cards.csv is written with mode 0600; its ``index`` column lets a supplier deliver index ranges. A QR
code holds only the public verification URL ``{public_url}/c/{serial}`` (``issuer.export_qr``: the images are
written by worker processes that see serials and URLs only). An existing export in the target folder is never
overwritten unless asked.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from issuer.core.commitment import derive_batch_keys, format_opening, openings
from issuer.core.dump import make_dump
from issuer.core.merkle import MerkleTree
from issuer.core.serial import format_serial
from issuer.errors import IssuerError
from issuer.export_qr import DEFAULT_CHUNK, QrWriter, check_format
from issuer.export_url import card_url
from issuer.lookup import leaf_of
from issuer.secrets_store import CodeCipher, MasterKey
from issuer.storage import repository as repo

__all__ = ["ExportError", "ExportResult", "batch_card_count", "batch_dump", "card_url", "dump_bytes", "export_batch"]

ProgressFn = Callable[[str, int, int], None]
_OPENING_BLOCK = 10_000  # openings derived at a time (one HMAC key set-up per block)


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
    qr_format: str | None = None
    public_url: str | None = None
    workers: int = 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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


def batch_card_count(sessions: sessionmaker[Session], batch_id: str) -> int:
    """How many cards an export of the batch writes (for a progress bar's total)."""
    with sessions() as session:
        return int(repo.get_batch(session, batch_id).card_count)


class _Openings:
    """The card openings of a batch by index, derived a block at a time (cards come in index order)."""

    def __init__(self, open_key: bytes, count: int) -> None:
        self._key, self._count, self._base, self._block = open_key, count, 0, []

    def __call__(self, index: int) -> str:
        if not self._base <= index < self._base + len(self._block):
            self._base = index - index % _OPENING_BLOCK
            self._block = openings(self._key, self._base, min(self._base + _OPENING_BLOCK, max(self._count, index + 1)))
        return format_opening(self._block[index - self._base])


def export_batch(sessions: sessionmaker[Session], master_key: MasterKey, batch_id: str, out_dir: Path,
                 public_url: str, *, qr: bool = True, qr_format: str = "png", force: bool = False,
                 workers: int = 1, chunk: int = DEFAULT_CHUNK, progress: ProgressFn | None = None) -> ExportResult:
    """Write cards.csv, the QR images (``qr_format`` png or svg; none if not ``qr``) and tree.json of a batch.

    ``workers`` above 1 spreads the QR images over that many spawned processes, ``chunk`` images a task; the files
    are the same as with one. Like any spawning ``multiprocessing``, that needs the program's main module guarded by
    ``if __name__ == "__main__":`` (the workers import it). ``public_url`` is used as given
    (``issuer.export_url.qr_public_url`` checks a user's choice). ``progress(phase, done, total)`` is called with the
    total first, then as cards (or their images) are done.
    """
    report = progress or (lambda *_: None)
    fmt = check_format(qr_format) if qr else None
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
        n = batch.card_count
        opening_of = _Openings(derive_batch_keys(secret)[0], n)
        leaves = []
        tree_indices = []
        done = 0
        report("export", 0, n)

        def images_done(count: int) -> None:
            nonlocal done
            done += count
            report("export", done, n)

        tmp_csv = cards_csv.with_suffix(".csv.part")
        try:
            with _open_private(tmp_csv) as f, QrWriter(qr_dir, fmt or "png", workers=workers if qr else 1,
                                                         chunk=chunk, on_done=images_done) as images:
                writer = csv.writer(f)
                writer.writerow(["serial", "index", "code", "opening", "url"])
                for row, card in enumerate(repo.iter_cards(session, batch.id), 1):
                    leaf = leaf_of(card, batch)
                    serial = format_serial(leaf.serial)
                    code = cipher.decrypt(batch.batch_id_bytes, card.index, bytes(card.code_ct))
                    url = card_url(public_url, serial)
                    writer.writerow([serial, card.index, code, opening_of(card.index), url])
                    if qr:
                        images.add(serial, url)
                    elif row % 1000 == 0:
                        images_done(1000)
                    leaves.append(leaf)
                    tree_indices.append(card.tree_pos)
                images.finish()
            os.replace(tmp_csv, cards_csv)
        except OSError as exc:
            tmp_csv.unlink(missing_ok=True)
            raise ExportError(f"cannot write the export to {out_dir}: {exc.strerror}") from None
        except BaseException:
            tmp_csv.unlink(missing_ok=True)
            raise
        tree = MerkleTree.from_nodes(repo.load_tree(session, batch.id), tree_indices)
        try:
            tree_json.write_bytes(dump_bytes(make_dump(leaves, tree)))
        except OSError as exc:
            raise ExportError(f"cannot write {tree_json}: {exc.strerror}") from None
        report("export", n, n)
    return ExportResult(batch.batch_id, str(out_dir), n, str(cards_csv), str(tree_json), str(qr_dir) if qr else None,
                        fmt, public_url, max(1, workers) if qr else 1)
