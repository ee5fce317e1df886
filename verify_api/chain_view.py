"""What the API knows of the chain: cached registry reads kept current by the registry's events.

The status of a card (its revocation and redemption bits) is read from the registry's bitmaps, one
256-bit word at a time, and cached per word. A poller reads the chain head and the registry's events
every ``ttl`` seconds (the cache's TTL); each ``CardsRevoked``/``CardsRedeemed``/``BatchRevoked``
event is applied to the cached words and batches it touches, so a cached word is exact up to the
last polled block, and words are re-read anyway when older than ``max_age``. Reads are pinned to the
last polled block, and events that arrive while a read is in flight are applied to its result, so no
update can slip between a read and the event stream.

**Reorgs.** The view follows block hashes, not only numbers. It remembers the hashes of the recent blocks
it has seen (each polled head and each block that carried an applied event, the newest ``keep_blocks``),
and each poll checks that the block it last polled is still on the chain (same hash at the same number).
When it is not (a reorg at the same height, a deeper one, a revert to a snapshot followed by new blocks,
a node restarted from an older state), the newest remembered block still on the chain is the common
ancestor, and every cached fact that a removed block could have produced is withdrawn in that poll:
entries read at a block after the ancestor, and entries an event of a removed block changed. If no
remembered block is left on the chain, everything is forgotten. Reads in flight across such a poll are
not cached (an epoch counter). The events of the new blocks are then applied as usual. Logs are read
between two readings of the target block's hash, so a log of a block that the chain dropped while the
poll ran is never applied. So a verdict derived from a removed block lasts at most one poll (``ttl``).

When the chain stops answering, the view keeps answering from what it last read and says so:
``state`` becomes ``stale`` with the last block seen (``unavailable`` if nothing was ever read).
A batch that was never read is ``None``: callers must never call such a batch's cards authentic.
After ``reconnect_after`` seconds without a successful poll (default: 3 polls, at least 1 s), the poller
calls its connector again (then again at most every ``reconnect_after``), so a node that moved (a local
chain restarted on another port) is found again; a registry on another chain or address starts from an
empty cache.
"""

from __future__ import annotations

import dataclasses

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3 import Web3

from chain.events import read_events
from chain.registry import ISSUER_ROLE, OnChainBatch, Registry

log = logging.getLogger("cardproof.api.chain")

__all__ = ["ChainStatus", "ChainView", "MISSING", "WORD_BITS"]

WORD_BITS = 256
ALL_ONES = (1 << 256) - 1
#: Marks "not cached (or too old): a chain read is needed".
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING", "__bool__": lambda self: False})()

_EVENTS = ("CardsRevoked", "CardsRedeemed", "BatchRevoked", "BatchAnchored", "RoleGranted", "RoleRevoked",
           "IssuerNamed")
_SELECTOR = {kind: bytes(Web3.keccak(text=f"{fn}(bytes32,uint256)"))[:4]
             for kind, fn in (("rev", "revokedWord"), ("red", "redeemedWord"))}
#: Calls per JSON-RPC batch when prefetching a batch's bitmap words.
PREFETCH_CHUNK = 1000
#: Block hashes remembered for reorg detection (each polled head, each block with an applied event).
KEEP_BLOCKS = 256
#: Polls in a row that may find the chain moving under them before the poll gives up (until next time).
MAX_POLL_ATTEMPTS = 4


class _ChainMoved(Exception):
    """The chain changed while a poll read it: read again."""


def _hash(value: Any) -> bytes:
    return bytes(HexBytes(value))


class _RawUnsupported(Exception):
    pass


def _raw_word_calls(reg: Registry, keys: list[tuple[str, bytes, int]], block: int | None) -> list[int]:
    """Bitmap words by plain ``eth_call`` JSON-RPC (batched): one HTTP round trip per chunk instead of
    web3's several requests per call. Only for HTTP providers (others: _RawUnsupported)."""
    from web3 import HTTPProvider

    provider = reg.client.w3.provider
    if not isinstance(provider, HTTPProvider):
        raise _RawUnsupported
    at = hex(block) if block is not None else "latest"
    out: list[int] = []
    for i in range(0, len(keys), PREFETCH_CHUNK):
        part = keys[i:i + PREFETCH_CHUNK]
        reqs = [("eth_call", [{"to": reg.address,
                               "data": "0x" + (_SELECTOR[k] + bid + w.to_bytes(32, "big")).hex()}, at])
                for k, bid, w in part]
        try:
            responses = provider.make_batch_request(reqs) if len(reqs) > 1 else [provider.make_request(*reqs[0])]
        except Exception as exc:  # noqa: BLE001 - requests' connection errors and the like
            from chain.errors import ChainUnreachable

            raise ChainUnreachable(f"the chain does not answer ({type(exc).__name__})") from None
        if not isinstance(responses, list) or len(responses) != len(part):
            raise ConnectionError(f"bad JSON-RPC batch answer: {str(responses)[:200]}")
        for r in responses:
            if "error" in r or "result" not in r:
                raise ConnectionError(f"eth_call failed: {str(r.get('error'))[:200]}")
            out.append(int(r["result"], 16) if r["result"] not in ("0x", "") else 0)
    return out


@dataclass(frozen=True)
class ChainStatus:
    #: live | stale | unavailable
    state: str
    last_block: int | None
    chain_id: int | None
    registry: str | None
    #: Seconds since the last successful poll (None: never).
    age: float | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "last_block": self.last_block, "chain_id": self.chain_id,
                "registry": self.registry}


@dataclass
class _Entry:
    value: Any
    read_block: int | None
    read_at: float


class ChainView:
    """Cached, event-maintained reads of one CardRegistry. Thread-safe."""

    def __init__(self, connector: Callable[[], Registry] | Registry | None, *, ttl: float = 2.0,
                 max_age: float = 300.0, stale_after: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, recent_events: int = 50_000,
                 keep_blocks: int = KEEP_BLOCKS, reconnect_after: float | None = None) -> None:
        if isinstance(connector, Registry):
            registry = connector
            self._connector: Callable[[], Registry] | None = lambda: registry
        else:
            self._connector = connector
        self.ttl = ttl
        self.keep_blocks = max(1, keep_blocks)
        #: Seconds without a successful poll before the connector is called again (a node that moved).
        self.reconnect_after = reconnect_after if reconnect_after is not None else max(3 * ttl, 1.0)
        self.max_age = max_age
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.RLock()
        self._poll_lock = threading.Lock()
        self._registry: Registry | None = None
        self._chain_id: int | None = None
        self._head: int | None = None
        self._last_ok: float | None = None
        self._last_poll_failed = False
        self._error: str | None = None
        self._batches: dict[bytes, _Entry] = {}
        self._words: dict[tuple[str, bytes, int], _Entry] = {}
        self._roles: dict[str, _Entry] = {}
        #: (block, kind, key, mask) of recently applied events, to reconcile reads in flight and to know
        #: which cached facts a reorg touched.
        self._recent: deque[tuple[int, str, Any, int]] = deque(maxlen=recent_events)
        #: Newest block of an event that fell out of ``_recent`` (-1: none): a reorg past it clears all.
        self._evicted_block = -1
        #: Remembered block hashes, number -> hash, oldest first (reorg detection).
        self._hashes: OrderedDict[int, bytes] = OrderedDict()
        #: Bumped whenever cached facts are withdrawn: a read pinned before must not be cached after.
        self._epoch = 0
        #: Counters of reorgs seen and reconnections (for /metrics and tests).
        self.reorgs = 0
        self.reconnects = 0
        self.last_reorg: dict[str, Any] | None = None
        #: Since when polls fail (None: the last one succeeded), and the last call of the connector.
        self._failing_since: float | None = None
        self._last_connect = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: After a failed read, skip chain reads until then (the poller keeps trying every ttl).
        self._down_until = 0.0
        #: Batches whose words the poller thread should prefetch: batch id -> card count.
        self._prefetch: dict[bytes, int] = {}
        self._prefetched: set[bytes] = set()
        self.prefetch_min_cards = 4096
        #: Counters for /metrics and tests.
        self.reads = 0
        self.polls = 0

    # ------------------------------------------------------------------ connection

    def _ensure_registry(self) -> Registry:
        reg = self._registry
        if reg is None:
            if self._connector is None:
                from chain.errors import ConfigError

                raise ConfigError("no chain is configured for the API")
            reg = self._connector()
            chain_id = reg.client.chain_id
            with self._lock:
                self._last_connect = self._clock()
                if self._registry is None:
                    self._registry = reg
                    self._chain_id = chain_id
                reg = self._registry
        return reg

    def _reconnect(self) -> None:
        """Call the connector again (the node may have moved); swap in what it returns. A registry on
        another chain or at another address starts from an empty cache; on the same chain, the block hash
        check of the next poll decides what is kept."""
        self._last_connect = self._clock()
        if self._connector is None:
            return
        try:
            reg = self._connector()
            chain_id = reg.client.chain_id
        except Exception as exc:  # noqa: BLE001 - still unreachable; tried again later
            log.debug("reconnecting to the chain failed: %s: %s", type(exc).__name__, exc)
            return
        with self._lock:
            old = self._registry
            if old is reg:
                return
            self._registry = reg
            self.reconnects += 1
            if old is None or chain_id != self._chain_id or reg.address.lower() != old.address.lower():
                self._clear()
            self._chain_id = chain_id
            self._down_until = 0.0
        log.warning("chain view reconnected (chain %s, registry %s)", chain_id, reg.address)

    def _clear(self) -> None:
        """Forget every chain fact (call with the lock held)."""
        self._batches.clear()
        self._words.clear()
        self._roles.clear()
        self._recent.clear()
        self._evicted_block = -1
        self._prefetch.clear()
        self._prefetched.clear()
        self._hashes.clear()
        self._head = None
        self._epoch += 1

    # ------------------------------------------------------------------ polling

    def poll(self) -> int | None:
        """Read the head, check that the chain still holds the blocks the cache came from (withdrawing what a
        reorg removed), and apply the events since the last poll; returns the head, None on failure."""
        with self._poll_lock:
            self.polls += 1
            failing = self._failing_since
            if (failing is not None and self._clock() - failing >= self.reconnect_after
                    and self._clock() - self._last_connect >= self.reconnect_after):
                self._reconnect()
            try:
                reg = self._ensure_registry()
                for attempt in range(MAX_POLL_ATTEMPTS):
                    try:
                        latest = self._poll_once(reg)
                        break
                    except _ChainMoved:
                        if attempt == MAX_POLL_ATTEMPTS - 1:
                            raise ConnectionError("the chain kept changing while it was read") from None
                with self._lock:
                    self._last_ok = self._clock()
                    self._last_poll_failed = False
                    self._error = None
                    self._down_until = 0.0
                    self._failing_since = None
                return latest
            except Exception as exc:  # noqa: BLE001 - any failure means the chain is not answering now
                with self._lock:
                    self._last_poll_failed = True
                    self._error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
                    self._down_until = self._clock() + self.ttl
                    if self._failing_since is None:
                        self._failing_since = self._clock()
                log.debug("chain poll failed: %s", self._error)
                return None

    def _block(self, reg: Registry, at: int | str) -> tuple[int, bytes, bytes] | None:
        """(number, hash, parent hash) of block ``at``, None if the chain has no such block."""
        from web3.exceptions import BlockNotFound

        try:
            b = reg.client.w3.eth.get_block(at)
        except BlockNotFound:
            return None
        if b is None or b.get("hash") is None:
            return None
        return int(b["number"]), _hash(b["hash"]), _hash(b["parentHash"])

    def _hash_at(self, reg: Registry, number: int) -> bytes | None:
        found = self._block(reg, number)
        return None if found is None else found[1]

    def _remember(self, number: int, block_hash: bytes) -> None:
        """Remember a block's hash (call with the lock held)."""
        self._hashes[number] = block_hash
        self._hashes.move_to_end(number)
        while len(self._hashes) > self.keep_blocks:
            self._hashes.popitem(last=False)

    def _poll_once(self, reg: Registry) -> int:
        tip = self._block(reg, "latest")
        if tip is None:
            raise ConnectionError("the chain has no latest block")
        latest, tip_hash, tip_parent = tip
        head = self._head
        if head is not None:
            known = self._hashes.get(head)
            if latest == head:
                same = tip_hash == known
            elif latest == head + 1:
                same = tip_parent == known
            elif latest > head:
                same = self._hash_at(reg, head) == known
            else:
                same = False
            if known is None or not same:
                self._reorg(reg, head, latest)
                head = self._head
        if head is None:
            with self._lock:
                self._head = latest
                self._remember(latest, tip_hash)
            return latest
        events = []
        if latest > head:
            events = read_events(reg.client, [(reg.address, reg.contract.abi)], head + 1, latest, _EVENTS)
            # The logs belong to the chain whose block `latest` is `tip_hash` only if it still is (and every
            # log of that block says so): otherwise the chain moved while it was read.
            if any(ev.block_number == latest and _hash(ev.block_hash) != tip_hash for ev in events) \
                    or self._hash_at(reg, latest) != tip_hash:
                raise _ChainMoved
        with self._lock:
            for ev in events:
                self._apply(ev.block_number, ev.name, ev.args)
                self._remember(ev.block_number, _hash(ev.block_hash))
            self._remember(latest, tip_hash)
            self._head = latest
        return latest

    def _reorg(self, reg: Registry, head: int, latest: int) -> None:
        """Block ``head`` (the last polled) is no longer on the chain: find the newest remembered block that
        still is (the common ancestor) and withdraw every fact a later block could have produced."""
        ancestor: int | None = None
        for number in sorted((n for n in self._hashes if n <= min(head, latest)), reverse=True):
            if self._hash_at(reg, number) == self._hashes[number]:
                ancestor = number
                break
        with self._lock:
            before = (len(self._batches), len(self._words), len(self._roles))
            if ancestor is None or self._evicted_block > ancestor:
                self._clear()
            else:
                self._rollback(ancestor)
            after = (len(self._batches), len(self._words), len(self._roles))
            self.reorgs += 1
            self.last_reorg = {"head": head, "latest": latest, "ancestor": ancestor,
                               "dropped": {k: b - a for k, b, a in zip(("batches", "words", "roles"), before, after,
                                                                       strict=True)},
                               "at": self._clock()}
        log.warning("chain reorganised: block %s is no longer on the chain (now at %s); common ancestor %s; "
                    "withdrew %s", head, latest, "unknown (cache cleared)" if ancestor is None else ancestor,
                    self.last_reorg["dropped"])

    def _rollback(self, ancestor: int) -> None:
        """Withdraw what blocks after ``ancestor`` produced (call with the lock held)."""
        removed = [ev for ev in self._recent if ev[0] > ancestor]
        if removed:
            kept = [ev for ev in self._recent if ev[0] <= ancestor]
            self._recent.clear()
            self._recent.extend(kept)
        words = {key for _b, kind, key, _m in removed if kind in ("rev", "red")}
        batches = {key for _b, kind, key, _m in removed if kind in ("batchrev", "anchored")}
        revoked_batches = {key for _b, kind, key, _m in removed if kind == "batchrev"}
        roles = {key for _b, kind, key, _m in removed if kind == "role"}

        def after(entry: _Entry) -> bool:
            return entry.read_block is None or entry.read_block > ancestor

        for key in [k for k, e in self._batches.items() if k in batches or after(e)]:
            del self._batches[key]
        for key in [k for k, e in self._words.items()
                    if k in words or after(e) or (k[0] == "rev" and k[1] in revoked_batches)]:
            del self._words[key]
        for key in [k for k, e in self._roles.items() if k in roles or after(e)]:
            del self._roles[key]
        for number in [n for n in self._hashes if n > ancestor]:
            del self._hashes[number]
        self._prefetch.clear()
        self._prefetched.clear()
        self._head = ancestor
        self._epoch += 1

    def _note(self, item: tuple[int, str, Any, int]) -> None:
        """Remember an applied event (call with the lock held)."""
        if self._recent.maxlen is not None and len(self._recent) >= self._recent.maxlen:
            self._evicted_block = max(self._evicted_block, self._recent[0][0])
        self._recent.append(item)

    def _apply(self, block: int, name: str, args: dict[str, Any]) -> None:
        if name in ("CardsRevoked", "CardsRedeemed"):
            kind = "rev" if name == "CardsRevoked" else "red"
            key = (kind, bytes(args["batchId"]), int(args["wordIndex"]))
            mask = int(args["mask"])
            entry = self._words.get(key)
            if entry is not None:
                entry.value |= mask
            self._note((block, kind, key, mask))
        elif name == "BatchRevoked":
            bid = bytes(args["batchId"])
            entry = self._batches.get(bid)
            if entry is not None and entry.value.anchored:
                b: OnChainBatch = entry.value
                entry.value = dataclasses.replace(b, revoked=True, revoke_reason=int(args["reason"]))
            self._note((block, "batchrev", bid, int(args["reason"])))
        elif name == "BatchAnchored":
            bid = bytes(args["batchId"])
            self._batches.pop(bid, None)
            self._note((block, "anchored", bid, 0))
        elif name == "IssuerNamed":
            account = str(args["issuer"]).lower()
            self._roles.pop(account, None)
            self._note((block, "role", account, 0))
        elif name in ("RoleGranted", "RoleRevoked"):
            if bytes(args["role"]) == bytes(ISSUER_ROLE):
                account = str(args["account"]).lower()
                self._roles.pop(account, None)
                self._note((block, "role", account, 0))

    def start(self) -> None:
        """Poll in a background thread every ``ttl`` seconds (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cardproof-chain-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.poll() is not None:
                self._run_prefetch()
            self._stop.wait(self.ttl)

    def _run_prefetch(self) -> None:
        while self._prefetch and not self._stop.is_set():
            batch_id, count = self._prefetch.popitem()
            try:
                self.prefetch(batch_id, count)
                self._prefetched.add(batch_id)
            except Exception as exc:  # noqa: BLE001 - retried when the batch is read again
                log.warning("prefetch of batch 0x%s failed: %s", batch_id.hex()[:12], type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)

    # ------------------------------------------------------------------ status

    def status(self) -> ChainStatus:
        now = self._clock()
        with self._lock:
            reg = self._registry
            last_ok = self._last_ok
            age = None if last_ok is None else now - last_ok
            if last_ok is None:
                state = "unavailable"
            elif self._last_poll_failed or age > self.stale_after:
                state = "stale"
            else:
                state = "live"
            return ChainStatus(state, self._head, self._chain_id, reg.address if reg is not None else None, age,
                               self._error)

    def _pin(self) -> tuple[Registry, int | None, int]:
        """The registry, the block to read at (the last polled head), polling first if never polled, and the
        epoch: a value read is cached only if no reorg withdrew facts meanwhile (``_current``)."""
        self._ensure_registry()
        if self._head is None:
            self.poll()
        with self._lock:
            return self._ensure_registry(), self._head, self._epoch

    def _current(self, epoch: int) -> bool:
        """True if nothing was withdrawn since ``epoch`` (call with the lock held)."""
        return epoch == self._epoch

    def _fresh(self, entry: _Entry | None, max_age: float | None = None) -> bool:
        return entry is not None and self._clock() - entry.read_at <= (max_age or self.max_age)

    # ------------------------------------------------------------------ batches

    def peek_batch(self, batch_id: bytes) -> OnChainBatch | None:
        """The cached batch if fresh, else MISSING (no I/O)."""
        entry = self._batches.get(batch_id)
        if entry is None:
            return MISSING
        b: OnChainBatch = entry.value
        # Not anchored yet: re-read every ttl, whatever the events say.
        if not self._fresh(entry, self.max_age if b.anchored else self.ttl):
            return MISSING
        return b

    def batch(self, batch_id: bytes) -> OnChainBatch | None:
        """The batch as on chain; the last value read if the chain does not answer; None if never read."""
        cached = self.peek_batch(batch_id)
        if cached is not MISSING:
            return cached
        if self._chain_down():
            entry = self._batches.get(batch_id)
            return entry.value if entry is not None else None
        try:
            reg, block, epoch = self._pin()
            self.reads += 1
            value = reg.batch(batch_id, block if block is not None else "latest")
        except Exception as exc:  # noqa: BLE001
            self._note_error(exc)
            entry = self._batches.get(batch_id)
            return entry.value if entry is not None else None
        with self._lock:
            for blk, kind, key, arg in self._recent:
                if block is not None and blk > block and key == batch_id:
                    if kind == "batchrev" and value.anchored:
                        value = dataclasses.replace(value, revoked=True, revoke_reason=arg)
                    elif kind == "anchored":
                        value = None  # read again next time
            if not self._current(epoch):
                value = None  # read at a block a reorg removed: read again
            if value is not None:
                self._batches[batch_id] = _Entry(value, block, self._clock())
                if (value.anchored and value.card_count >= self.prefetch_min_cards
                        and batch_id not in self._prefetched):
                    self._prefetch[batch_id] = value.card_count
        return value if value is not None else self.batch(batch_id)

    # ------------------------------------------------------------------ bitmap words

    def peek_word(self, kind: str, batch_id: bytes, word: int) -> int | None:
        entry = self._words.get((kind, batch_id, word))
        if entry is None or not self._fresh(entry):
            return MISSING
        return entry.value

    def word(self, kind: str, batch_id: bytes, word: int) -> int | None:
        """Bitmap word ``word`` (kind ``rev`` or ``red``); the last value read if the chain does not answer;
        None if never read."""
        key = (kind, batch_id, word)
        cached = self.peek_word(kind, batch_id, word)
        if cached is not MISSING:
            return cached
        entry = self._words.get(key)
        if self._chain_down():
            return entry.value if entry is not None else None
        try:
            reg, block, epoch = self._pin()
            self.reads += 1
            try:
                value = _raw_word_calls(reg, [key], block)[0]
            except _RawUnsupported:
                at = block if block is not None else "latest"
                value = reg.revoked_word(batch_id, word, at) if kind == "rev" else reg.redeemed_word(batch_id, word, at)
        except Exception as exc:  # noqa: BLE001
            self._note_error(exc)
            return entry.value if entry is not None else None
        with self._lock:
            again = not self._current(epoch)  # read at a block a reorg removed: read again
            if not again:
                value = self._store_word(key, value, block)
        return self.word(kind, batch_id, word) if again else value

    def _store_word(self, key: tuple[str, bytes, int], value: int, block: int | None) -> int:
        """Cache a word read at ``block``, with the events applied since (call with the lock held)."""
        kind, batch_id, _w = key
        for blk, k, kkey, mask in self._recent:
            if block is not None and blk > block:
                if kkey == key:
                    value |= mask
                elif k == "batchrev" and kind == "rev" and kkey == batch_id:
                    value = ALL_ONES
        self._words[key] = _Entry(value, block, self._clock())
        return value

    def prefetch(self, batch_id: bytes, card_count: int) -> int:
        """Read every bitmap word of a batch in a few JSON-RPC batches (HTTP nodes); returns words read.

        Done once per batch in the background, so lookups of a big batch's cards rarely wait on the chain.
        """
        words = (card_count + WORD_BITS - 1) // WORD_BITS
        now = self._clock()
        keys = [(kind, batch_id, w) for w in range(words) for kind in ("rev", "red")
                if not self._fresh(self._words.get((kind, batch_id, w)))]
        if not keys:
            return 0
        reg, block, epoch = self._pin()
        try:
            values = _raw_word_calls(reg, keys, block)
        except _RawUnsupported:
            return 0
        self.reads += len(keys)
        with self._lock:
            if not self._current(epoch):
                return 0  # a reorg withdrew facts meanwhile: read on demand
            for key, value in zip(keys, values, strict=True):
                self._store_word(key, value, block)
        log.info("prefetched %d bitmap words of batch 0x%s in %.2f s", len(keys), batch_id.hex()[:12],
                 self._clock() - now)
        return len(keys)

    def _chain_down(self) -> bool:
        return self._clock() < self._down_until

    def peek_bits(self, batch_id: bytes, index: int) -> tuple[bool | None, bool | None]:
        w, bit = divmod(index, WORD_BITS)
        rev = self.peek_word("rev", batch_id, w)
        red = self.peek_word("red", batch_id, w)
        return (MISSING if rev is MISSING else bool(rev >> bit & 1),
                MISSING if red is MISSING else bool(red >> bit & 1))

    def bits(self, batch_id: bytes, index: int) -> tuple[bool | None, bool | None]:
        """(revoked, redeemed) of card ``index``, each None when unknown (never read, chain down)."""
        w, bit = divmod(index, WORD_BITS)
        rev = self.word("rev", batch_id, w)
        red = self.word("red", batch_id, w)
        return (None if rev is None else bool(rev >> bit & 1), None if red is None else bool(red >> bit & 1))

    # ------------------------------------------------------------------ roles

    def peek_issuer(self, address: str) -> tuple[bool, str] | None:
        """(holds ISSUER_ROLE, name recorded on chain) if cached and fresh, else MISSING (no I/O)."""
        entry = self._roles.get(address.lower())
        if entry is None or not self._fresh(entry):
            return MISSING
        return entry.value

    def peek_is_issuer(self, address: str) -> bool | None:
        found = self.peek_issuer(address)
        return MISSING if found is MISSING else found[0]

    def issuer(self, address: str) -> tuple[bool, str] | None:
        """(holds ISSUER_ROLE, display name recorded on chain or ""), read at the pinned block; None when the
        chain does not answer and nothing is cached."""
        cached = self.peek_issuer(address)
        if cached is not MISSING:
            return cached
        key = address.lower()
        if self._chain_down():
            entry = self._roles.get(key)
            return entry.value if entry is not None else None
        try:
            reg, block, epoch = self._pin()
            self.reads += 1
            who = reg.client.w3.to_checksum_address(address)
            at = block if block is not None else "latest"
            value = (bool(reg.client.call(reg.fn.hasRole(ISSUER_ROLE, who), at)),
                     str(reg.client.call(reg.fn.issuerName(who), at)))
        except Exception as exc:  # noqa: BLE001
            self._note_error(exc)
            entry = self._roles.get(key)
            return entry.value if entry is not None else None
        with self._lock:
            again = not self._current(epoch)  # read at a block a reorg removed: read again
            if not again and not any(blk > (block or 0) and k == "role" and kk == key
                                     for blk, k, kk, _ in self._recent):
                self._roles[key] = _Entry(value, block, self._clock())
        return self.issuer(address) if again else value

    def is_issuer(self, address: str) -> bool | None:
        found = self.issuer(address)
        return None if found is None else found[0]

    # ------------------------------------------------------------------ misc

    def invalidate_card(self, batch_id: bytes, index: int) -> None:
        """Forget the words of card ``index`` (after this process changed them on chain)."""
        w = index // WORD_BITS
        with self._lock:
            self._words.pop(("rev", batch_id, w), None)
            self._words.pop(("red", batch_id, w), None)

    def _note_error(self, exc: BaseException) -> None:
        with self._lock:
            self._error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            self._last_poll_failed = True
            self._down_until = self._clock() + self.ttl

    def ping(self) -> int:
        """The chain's block number now (raises when unreachable): for /readyz."""
        reg = self._ensure_registry()
        return int(reg.client.block_number())
