"""The buyer's and the arbiter's side of a sealed delivery: fetch it, check it against the chain, open it, check
every card (:mod:`verify_api.delivery_check`).

* :func:`fetch_sealed` gets the blob from the public service (or a file) and refuses it unless its keccak256 is
  the sealed hash the escrow recorded: a lying service or a swapped file cannot pass.
* :func:`receive` opens it with the buyer's seal key (by default its account key), checks the cards and writes
  ``cards.csv`` (mode 0600).
* :func:`evidence_key_of` gives the key that opens this one delivery, for an arbiter; it reveals nothing of the
  buyer's account key. :func:`review` is the arbiter's check with that key.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.errors import CardproofError, ChainError
from chain.http_pool import pooled_http_client
from issuer.core.commitment import format_opening
from issuer.core.errors import CoreError, InvalidSealedDelivery
from issuer.core.sealed import DeliveryPayload, evidence_key, open_sealed, open_with_evidence, sealed_hash
from verify_api.delivery_check import DeliveryReport, check_delivery

__all__ = ["DeliveryCheckFailed", "ReceiveError", "Received", "evidence_key_of", "fetch_sealed", "receive",
           "review", "write_cards_csv"]


class ReceiveError(ChainError):
    """The sealed delivery cannot be fetched, does not match the chain, or cannot be opened."""

    code = "receive_failed"


class DeliveryCheckFailed(ChainError):
    """Some delivered cards failed their checks against the chain."""

    code = "delivery_check_failed"


@dataclass(frozen=True)
class Received:
    report: DeliveryReport
    payload: DeliveryPayload
    sealed_hash: str
    cards_csv: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.report.to_json(), "sealed_hash": self.sealed_hash, "cards_csv": self.cards_csv}


def _delivered_order(escrow: Any, order_id: int) -> Any:
    order = escrow.order(order_id)
    if not order.exists:
        raise ReceiveError(f"there is no order {order_id} in the escrow")
    if not order.sealed_hash:
        raise ReceiveError(f"order {order_id} is {order.status.name.lower()}: nothing was delivered yet")
    return order


def download_sealed(public_url: str | None, order_id: int, recorded: bytes, *, http: Any = None,
                    timeout: float | None = None) -> bytes | None:
    """The order's sealed blob from the public service, refused unless its keccak256 is ``recorded`` (the escrow's
    record); None when the service has none yet (404). ``http``: an httpx client (default: the process's pooled
    one); ``timeout``: seconds (default: the client's)."""
    import httpx

    url = f"{(public_url or '').rstrip('/')}/v1/orders/{order_id}/delivery"
    try:
        client = http or pooled_http_client()
        resp = client.get(url) if timeout is None else client.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        raise ReceiveError(f"cannot reach {url}: {type(exc).__name__}") from None
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise ReceiveError(f"{url} answered HTTP {resp.status_code}")
    return _matching(resp.content, recorded, url, order_id)


def _matching(blob: bytes, recorded: bytes, where: str, order_id: int) -> bytes:
    digest = sealed_hash(blob)
    if digest != recorded:
        raise ReceiveError(f"the sealed delivery from {where} hashes to 0x{digest.hex()}, but the escrow recorded "
                           f"0x{recorded.hex()}: it is not the delivery of order {order_id}")
    return blob


def fetch_sealed(escrow: Any, order_id: int, *, public_url: str | None = None, path: Path | None = None,
                 timeout: float = 60.0) -> tuple[Any, bytes]:
    """(the order, its sealed blob), the blob read from ``path`` or fetched from ``public_url``, and refused unless
    its keccak256 is the escrow's record."""
    order = _delivered_order(escrow, order_id)
    if path is not None:
        try:
            blob = Path(path).read_bytes()
        except OSError as exc:
            raise ReceiveError(f"cannot read {path}: {exc.strerror}") from None
        return order, _matching(blob, order.sealed_hash, str(path), order_id)
    blob = download_sealed(public_url, order_id, order.sealed_hash, timeout=timeout)
    if blob is None:
        raise ReceiveError(f"the public service has no sealed delivery of order {order_id} yet (the supplier "
                           "uploads it with `cardproof order upload`)")
    return order, blob


def _garbage(order_id: int, exc: Exception) -> ReceiveError:
    """The key opened the blob, but it holds no valid delivery: the supplier sealed garbage, not a key problem."""
    return ReceiveError(f"the sealed delivery of order {order_id} opens with this key but holds no valid delivery "
                        f"({exc}): the supplier sealed something else; dispute the order (`cardproof order dispute "
                        f"{order_id}`) and give the arbiter `cardproof order evidence {order_id}`")


def _min_expiry(escrow: Any, order_id: int) -> int:
    opened = escrow.opened_event(order_id)
    return int(opened["minExpiry"]) if opened else 0


def _check(escrow: Any, registry: Any, order: Any, payload: DeliveryPayload) -> DeliveryReport:
    _, ranges = escrow.delivery(order.order_id)
    return check_delivery(payload, order=order, ranges=ranges, escrow_address=escrow.address,
                          chain_id=escrow.client.chain_id, registry=registry,
                          min_expiry=_min_expiry(escrow, order.order_id))


def write_cards_csv(path: Path, payload: DeliveryPayload, report: DeliveryReport) -> None:
    """The buyer's cards, with each card's checks, written with mode 0600 (never readable by others)."""
    from issuer.core.serial import format_serial

    results = {c.index: c for c in report.cards}
    tmp = Path(str(path) + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["serial", "index", "code", "opening", "sku", "face_value", "currency", "expiry", "ok",
                        "failed"])
            for c in sorted(payload.cards, key=lambda c: c.index):
                check = results.get(c.index)
                w.writerow([format_serial(c.serial), c.index, c.code, format_opening(c.opening),
                            c.leaf.sku.rstrip(b"\0").decode("ascii", "replace"), c.leaf.face_value,
                            c.leaf.currency.decode("ascii", "replace"), c.leaf.expiry,
                            "yes" if check and check.ok else "no", " ".join(check.failed) if check else ""])
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReceiveError(f"cannot write {path}: {exc.strerror}") from None


def receive(escrow: Any, registry: Any, order_id: int, private_key: bytes, *, public_url: str | None = None,
            path: Path | None = None, out: Path | None = None) -> Received:
    """Fetch, check against the chain, open with ``private_key`` (the buyer's seal key) and check every card;
    writes ``out`` (cards.csv, mode 0600) when given."""
    order, blob = fetch_sealed(escrow, order_id, public_url=public_url, path=path)
    try:
        payload = open_sealed(blob, private_key)
    except InvalidSealedDelivery as exc:
        raise _garbage(order_id, exc) from None
    except CoreError as exc:
        raise ReceiveError(f"the sealed delivery of order {order_id} does not open with this key ({exc}); it was "
                           "sealed to the seal key named when the order was opened") from None
    report = _check(escrow, registry, order, payload)
    if out is not None:
        write_cards_csv(Path(out), payload, report)
    return Received(report, payload, "0x" + order.sealed_hash.hex(), str(out) if out is not None else None)


def evidence_key_of(escrow: Any, order_id: int, private_key: bytes, *, public_url: str | None = None,
                    path: Path | None = None) -> bytes:
    """The key that opens this order's sealed delivery and nothing else, for an arbiter."""
    _, blob = fetch_sealed(escrow, order_id, public_url=public_url, path=path)
    try:
        return evidence_key(blob, private_key)
    except CoreError as exc:
        raise ReceiveError(f"the sealed delivery of order {order_id} does not open with this key ({exc})") from None


def review(escrow: Any, registry: Any, order_id: int, key: bytes, *, public_url: str | None = None,
           path: Path | None = None) -> Received:
    """The arbiter's card-by-card check of the delivery, opened with the buyer's evidence key."""
    order, blob = fetch_sealed(escrow, order_id, public_url=public_url, path=path)
    try:
        payload = open_with_evidence(blob, key)
    except InvalidSealedDelivery as exc:
        raise _garbage(order_id, exc) from None
    except CoreError as exc:
        raise ReceiveError(f"the evidence key does not open the sealed delivery of order {order_id} ({exc})") \
            from None
    return Received(_check(escrow, registry, order, payload), payload, "0x" + order.sealed_hash.hex(), None)


def parse_key_hex(text: str, what: str, length: int = 32) -> bytes:
    raw = (text or "").strip().removeprefix("0x")
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != length:
        raise CardproofError(f"{what}: expected {length} bytes as hex ({2 * length} hex digits)")
    return key
