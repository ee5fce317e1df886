"""`cardproof order receive --watch`: wait for deliveries to the buyer's orders, receive and check each one, and
confirm the order when every card passes, or dispute it with the evidence when one fails.

* The buyer's orders are found from the escrow's events (OrderOpened with ``buyer`` the account), read from a
  cursor; a pass also reads OrderDelivered from the same logs (one ``eth_getLogs`` for both), so an idle pass costs
  two JSON-RPC requests.
* A delivered order is re-read (``order()``) and handled only while it is DELIVERED. Its sealed blob comes from the
  public service (a 404 means the supplier has not uploaded it yet: tried again next pass) and is refused unless
  its keccak256 is the escrow's record; it is opened with the seal key and checked card by card
  (:mod:`verify_api.delivery_check`); the cards go to ``{out_dir}/order-{id}-cards.csv`` (mode 0600).
* Every card passes: ``confirm`` (unless ``confirm=False``: outcome ``checked``). Else ``dispute`` (unless
  ``dispute=False``): a membership dispute when the failure is about membership (the multiproof does not reach
  the anchored root, a card not ``in_root``, cards missing from the delivery), else an ordinary one; the result
  carries the evidence key of the delivery for the arbiter (:func:`issuer.core.sealed.evidence_key`; it opens this
  delivery only and reveals nothing of the buyer's key), also written to ``{out_dir}/order-{id}-evidence.txt``.
* Handled orders are remembered in a small JSON state file (default in CARDPROOF_HOME, one per chain, escrow and
  buyer) with the cursor, so a restart does not redo them; and an order no longer DELIVERED is skipped anyway.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hexbytes import HexBytes

from chain.errors import CardproofError, ChainError
from chain.escrow import OrderStatus
from issuer.core.errors import CoreError, InvalidSealedDelivery
from issuer.core.sealed import evidence_key, open_sealed
from verify_api.delivery_check import DeliveryReport, check_delivery
from verify_api.order_receive import download_sealed, write_cards_csv

__all__ = ["BuyerWatcher", "WatchResult", "default_state_path", "membership_failure"]

log = logging.getLogger("cardproof.buyer_watch")

#: Pauses between the tries of a sealed delivery the public service does not hold yet, within one pass.
FETCH_RETRIES = (0.1, 0.2, 0.3)

OUTCOMES = ("confirmed", "disputed", "membership_disputed", "checked", "skipped", "error")


@dataclass(frozen=True)
class WatchResult:
    """What the watcher did about one delivered order.

    ``outcome``: ``confirmed`` | ``disputed`` | ``membership_disputed`` | ``checked`` (checked, nothing sent:
    ``confirm=False`` or ``dispute=False``), or ``skipped`` (no longer DELIVERED when handled) / ``error``
    (``error`` says why; tried again next pass unless the delivery cannot be opened with the seal key)."""

    order_id: int
    outcome: str
    cards: int = 0
    failed: int = 0
    csv: str | None = None
    tx: str | None = None
    evidence_key: str | None = None
    #: time.time() when the checked codes were on disk (the CSV renamed into place).
    codes_at: float | None = None
    ok: bool | None = None
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"order_id": self.order_id, "outcome": self.outcome, "ok": self.ok, "cards": self.cards,
                "failed": self.failed, "csv": self.csv, "tx": self.tx, "evidence_key": self.evidence_key,
                "codes_at": self.codes_at, "problems": self.problems, "error": self.error}

    def summary(self) -> str:
        head = f"order {self.order_id}"
        if self.outcome == "confirmed":
            return f"{head} confirmed: {self.cards} cards pass every check, written to {self.csv} (tx {self.tx})"
        if self.outcome in ("disputed", "membership_disputed"):
            kind = "membership dispute" if self.outcome == "membership_disputed" else "dispute"
            return (f"{head}: {self.failed} of {self.cards} cards failed their checks; {kind} raised (tx {self.tx}); "
                    f"evidence key for the arbiter: {self.evidence_key}")
        if self.outcome == "checked":
            verdict = "every card passes" if self.ok else f"{self.failed} of {self.cards} cards failed their checks"
            extra = f"; evidence key {self.evidence_key}" if self.evidence_key else ""
            return f"{head} checked: {verdict}; cards written to {self.csv}{extra} (nothing sent)"
        return f"{head} {self.outcome}: {self.error}"


def membership_failure(report: DeliveryReport) -> bool:
    """Whether the delivery fails on membership (what a membership dispute makes the supplier prove on chain):
    a whole-delivery problem, cards missing, or a card not in the anchored root."""
    return bool(report.problems or report.missing or any(not c.results.get("in_root", False) for c in report.cards))


def default_state_path(home: Path, chain_id: int, escrow: str, buyer: str) -> Path:
    return Path(home) / f"buyer-watch-{chain_id}-{escrow.lower()[2:10]}-{buyer.lower()[2:10]}.json"


class _NotYet(Exception):
    """The public service has no sealed delivery of the order yet."""


class BuyerWatcher:
    """Receives, checks and settles the deliveries to ``escrow``'s account's orders (it is the buyer).

    ``registry``: the card registry (:class:`chain.registry.Registry`). ``private_key``: the seal key's private
    key (by default the buyer's account key). ``public_url``: the public service the sealed deliveries come from.
    ``from_block``: where to start looking for the buyer's orders (when the state file has no cursor yet).
    ``workers``: deliveries handled at once in a pass (the confirm/dispute transactions wait for their blocks)."""

    def __init__(self, escrow: Any, registry: Any, private_key: bytes, *, public_url: str, out_dir: Path,
                 confirm: bool = True, dispute: bool = True, state_path: Path | None = None,
                 on_result: Callable[[WatchResult], None] | None = None, from_block: int = 0,
                 reorg_depth: int = 6, workers: int | None = None, http_timeout: float = 30.0) -> None:
        self.escrow = escrow
        self.registry = registry
        self.client = escrow.client
        self.buyer = self.client.address
        self._key = bytes(private_key)
        self.public_url = (public_url or "").rstrip("/")
        self.out_dir = Path(out_dir)
        self.confirm = confirm
        self.dispute = dispute
        self.on_result = on_result
        self.reorg_depth = reorg_depth
        if workers is None:
            workers = 1 if self.client.backend == "eth-tester" else 8
        self.workers = max(1, workers)
        if state_path is None:
            from chain.settings import get_settings

            state_path = default_state_path(get_settings().home, self.client.chain_id, escrow.address, self.buyer)
        self.state_path = Path(state_path)
        self._http_timeout = http_timeout
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._errors: dict[int, str] = {}  # the last error said of an order (said once)
        # The state: cursor, the buyer's orders (id -> min expiry), delivered ones waiting, handled ones.
        self._from_block = max(0, int(from_block))
        self.cursor = self._from_block
        self.mine: dict[int, int] = {}
        self.ready: set[int] = set()
        self.handled: dict[int, str] = {}
        self._dirty = False
        #: The delivered ranges read while checking an order, for its settlement's gas limit.
        self._ranges: dict[int, list[tuple[int, int]]] = {}
        self._load()

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("buyer watch: ignoring unreadable state %s: %s", self.state_path, exc)
            return
        if data.get("escrow", "").lower() != self.escrow.address.lower() or \
                data.get("buyer", "").lower() != self.buyer.lower():
            return
        self.cursor = max(self._from_block, int(data.get("cursor", 0)))
        self._from_block = min(self._from_block, int(data.get("from_block", self._from_block)))
        self.mine = {int(k): int(v) for k, v in data.get("mine", {}).items()}
        self.ready = {int(x) for x in data.get("ready", [])}
        self.handled = {int(k): str(v) for k, v in data.get("handled", {}).items()}

    def _save(self) -> None:
        self._dirty = False
        with self._state_lock:
            data = {"chain_id": self.client.chain_id, "escrow": self.escrow.address, "buyer": self.buyer,
                    "from_block": self._from_block, "cursor": self.cursor,
                    "mine": {str(k): v for k, v in sorted(self.mine.items())},
                    "ready": sorted(self.ready), "handled": {str(k): v for k, v in sorted(self.handled.items())}}
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_name(self.state_path.name + f".{os.getpid()}.{threading.get_ident()}.part")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.state_path)

    # ------------------------------------------------------------------ following the chain

    def _follow(self) -> None:
        from chain.client import guard

        head = int(guard(lambda: self.client.w3.eth.block_number))
        start = max(self._from_block, self.cursor - self.reorg_depth)
        if head < start:
            return
        # Only this buyer's logs: OrderOpened filtered on its indexed buyer, OrderDelivered on its indexed order ids
        # (the node filters, so a pass costs the same however many other buyers use the escrow).
        events = self.escrow.contract.events
        for log in guard(lambda: events.OrderOpened().get_logs(from_block=start, to_block=head,
                                                               argument_filters={"buyer": self.buyer})):
            self.mine[int(log["args"]["orderId"])] = int(log["args"].get("minExpiry", 0))
        waiting = sorted(oid for oid in self.mine if oid not in self.handled)
        if waiting:
            for log in guard(lambda: events.OrderDelivered().get_logs(from_block=start, to_block=head,
                                                                      argument_filters={"orderId": waiting})):
                self.ready.add(int(log["args"]["orderId"]))
        if self.cursor != head + 1:
            self._dirty = True  # saved at the end of the pass
        self.cursor = head + 1

    # ------------------------------------------------------------------ one pass

    def run_once(self) -> list[WatchResult]:
        """Follow the chain since the last pass and handle every delivered order of the buyer not handled yet.
        Returns what was done (deliveries not uploaded yet are tried again next pass, silently).

        The deliveries are fetched and checked in parallel (``workers``) and their cards written; then every
        confirm / dispute is simulated and broadcast, and only then are their receipts awaited: a pass over many
        deliveries takes about one block more than the checks."""
        with self._lock:
            self._follow()
            todo = sorted(oid for oid in self.ready if oid not in self.handled)
            if not todo:
                if self._dirty:
                    self._save()
                return []
            if self.workers == 1 or len(todo) == 1:
                prepared = [self._prepare_safely(oid) for oid in todo]
            else:
                with ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool:
                    prepared = list(pool.map(self._prepare_safely, todo))
            sent: list[tuple[WatchResult, Any]] = []
            finished: list[WatchResult] = []
            for item in prepared:
                if item is None:
                    continue
                result, act = item
                if act is None:
                    finished.append(result)
                    continue
                try:
                    sent.append((result, self._send(result.order_id, act)))
                except ChainError as exc:
                    finished.append(self._send_failed(result, exc))
            for result, tx in sent:
                try:
                    receipt = self.client.wait(tx.tx_hash)
                except ChainError as exc:
                    finished.append(self._send_failed(result, exc))
                    continue
                finished.append(replace(result, tx=_tx(receipt)))
            out = [r for r in (self._finish(r) for r in sorted(finished, key=lambda r: r.order_id)) if r is not None]
            self._save()
            return out

    def _send(self, order_id: int, act: str) -> Any:
        """Simulate and broadcast the order's confirm / dispute / membership dispute (no waiting)."""
        from chain.escrow import GAS_SIMPLE

        if act == "confirm":
            gas = self.escrow.settle_gas(order_id, self._ranges.pop(order_id, None))
            return self.client.send(self.escrow.fn.confirm(order_id), gas=gas)
        fn = self.escrow.fn.disputeMembership if act == "membership_disputed" else self.escrow.fn.dispute
        return self.client.send(fn(order_id), gas=GAS_SIMPLE)

    def _prepare_safely(self, order_id: int) -> tuple[WatchResult, str | None] | None:
        try:
            return self._prepare(order_id)
        except _NotYet:
            return None
        except CardproofError as exc:
            return WatchResult(order_id, "error", error=str(exc)), None
        except Exception as exc:  # noqa: BLE001 - one bad order never stops the watcher
            log.exception("buyer watch: order %d", order_id)
            return WatchResult(order_id, "error", error=f"{type(exc).__name__}: {exc}"), None

    def _finish(self, result: WatchResult) -> WatchResult | None:
        order_id = result.order_id
        if result.outcome == "error":
            if self._errors.get(order_id) == result.error:
                return None  # said already; tried again quietly
            self._errors[order_id] = result.error or ""
            log.warning("buyer watch: order %d: %s", order_id, result.error)
        else:
            self._done(order_id, result.outcome)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _done(self, order_id: int, outcome: str) -> None:
        with self._state_lock:
            self.handled[order_id] = outcome
            self.ready.discard(order_id)
            self._errors.pop(order_id, None)

    def _fetch(self, order_id: int, recorded: bytes) -> bytes:
        # The supplier uploads the sealed delivery once its transaction is mined, so a watcher that saw the
        # delivery at once may be a moment early: ask again a few times before leaving it to the next pass.
        for wait in FETCH_RETRIES:
            blob = download_sealed(self.public_url, order_id, recorded, timeout=self._http_timeout)
            if blob is not None:
                return blob
            time.sleep(wait)
        raise _NotYet()

    def _prepare(self, order_id: int) -> tuple[WatchResult, str | None]:
        """Fetch, open, check and write the cards of one delivery: (its result, the act to send or None)."""
        order = self.escrow.order(order_id)
        if order.status != OrderStatus.DELIVERED:
            return WatchResult(order_id, "skipped", error=f"the order is {order.status.name.lower()}, "
                                                          "not delivered"), None
        blob = self._fetch(order_id, order.sealed_hash)
        try:
            payload = open_sealed(blob, self._key)
        except InvalidSealedDelivery as exc:
            # The key opens it, but it holds no valid delivery: the supplier sealed garbage. Dispute.
            return self._disputed(order_id, membership=False, cards=order.quantity, failed=order.quantity, csv=None,
                                  codes_at=None, key=evidence_key(blob, self._key),
                                  problems=[f"no valid delivery inside: {exc}"])
        except CoreError as exc:
            self._done(order_id, "unreadable")
            return WatchResult(order_id, "error", error=f"the sealed delivery does not open with this seal key "
                                                        f"({exc}); it was sealed to the key named at opening"), None
        _, ranges = self.escrow.delivery(order_id)
        self._ranges[order_id] = [(r.start, r.length) for r in ranges]
        report = check_delivery(payload, order=order, ranges=ranges, escrow_address=self.escrow.address,
                                chain_id=self.client.chain_id, registry=self.registry,
                                min_expiry=self.mine.get(order_id, 0))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = self.out_dir / f"order-{order_id}-cards.csv"
        write_cards_csv(csv_path, payload, report)
        codes_at = time.time()
        cards = len(report.cards)
        failed = len(report.failed_cards) + len(report.missing)
        if report.ok:
            result = WatchResult(order_id, "confirmed" if self.confirm else "checked", cards, 0, str(csv_path),
                                 codes_at=codes_at, ok=True)
            return result, ("confirm" if self.confirm else None)
        return self._disputed(order_id, membership=membership_failure(report), cards=cards, failed=failed,
                              csv=str(csv_path), codes_at=codes_at, key=evidence_key(blob, self._key),
                              problems=list(report.problems))

    def _disputed(self, order_id: int, *, membership: bool, cards: int, failed: int, csv: str | None,
                  codes_at: float | None, key: bytes, problems: list[str]) -> tuple[WatchResult, str | None]:
        key_hex = "0x" + key.hex()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_private(self.out_dir / f"order-{order_id}-evidence.txt", key_hex + "\n")
        if not self.dispute:
            return WatchResult(order_id, "checked", cards, failed, csv, evidence_key=key_hex, codes_at=codes_at,
                               ok=False, problems=problems), None
        outcome = "membership_disputed" if membership else "disputed"
        return WatchResult(order_id, outcome, cards, failed, csv, None, key_hex, codes_at, ok=False,
                           problems=problems), outcome

    def _send_failed(self, result: WatchResult, exc: ChainError) -> WatchResult:
        """A confirm or dispute that failed: the order settled or disputed meanwhile (skipped), else an error
        (tried again next pass)."""
        try:
            status = self.escrow.order(result.order_id).status
        except CardproofError:
            status = None
        if status is not None and status != OrderStatus.DELIVERED:
            return replace(result, outcome="skipped", tx=None, error=f"the order is {status.name.lower()} now ({exc})")
        return replace(result, outcome="error", tx=None, error=str(exc))

    # ------------------------------------------------------------------ forever

    def run_forever(self, interval: float = 0.5, stop_event: threading.Event | None = None) -> None:
        """Pass after pass until ``stop_event`` is set; a failing pass is logged, never fatal."""
        stop_event = stop_event or threading.Event()
        while not stop_event.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except CardproofError as exc:
                log.warning("buyer watch: pass failed, trying again: %s", exc)
            except Exception:  # noqa: BLE001 - the watcher keeps going
                log.exception("buyer watch: pass failed, trying again")
            stop_event.wait(max(0.0, interval - (time.monotonic() - started)))

    def close(self) -> None:
        """Nothing to release: the sealed deliveries come through the process's pooled HTTP client."""


def _tx(receipt: Any) -> str:
    return HexBytes(receipt["transactionHash"]).to_0x_hex()


def _write_private(path: Path, text: str) -> None:
    tmp = Path(str(path) + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
