"""The public side follows block hashes: after a reorg at the same height, a deeper reorg, or a revert to a
snapshot followed by new blocks (a rollback that does not lower the block number), every verdict derived
from a removed block is withdrawn within one poll, and a card of a batch the chain does not hold is never
``authentic``. The real API (its background poller, its caches) on a dedicated anvil, driven over HTTP.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from chain import local_node
from chain.client import ChainClient, dev_account_for, http_web3
from chain.platform import deploy_platform
from chain.registry import PLACEHOLDER_PRODUCT, Registry
from chain.settings import Settings, get_settings
from issuer.anchoring import anchor_batch
from issuer.export import batch_dump
from issuer.issuers import add_issuer
from issuer.minting import MintRequest, mint_batch
from issuer.secrets_store import MasterKey
from issuer.storage.db import open_database
from issuer.storage.models import Batch, Card
from verify_api.app import create_app
from verify_api.chain_view import MISSING, ChainView
from verify_api.config import ApiSettings
from verify_api.deps import AppDeps
from verify_api.publish import publish_dump
from verify_api.ratelimit import MemoryLimiter
from verify_api.storage.db import open_public_database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

anvil = pytest.mark.anvil

#: The API's poll interval in these tests; a withdrawal must be seen within TTL + MARGIN.
TTL = 0.5
MARGIN = 0.5
#: Measured withdrawal times (seconds), printed at the end of the module (pytest -s).
MEASURED: dict[str, float] = {}


@dataclass
class AnvilWorld:
    home: Path
    settings: Settings
    url: str
    admin: ChainClient
    issuer: LocalAccount
    address: str  # the registry
    sessions: Any  # the supplier's database
    engine: Any
    public_sessions: Any
    public_engine: Any
    master_key: MasterKey
    batches: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # name -> (batch id, serials)

    def registry(self) -> Registry:
        """The registry acting as the issuer, through a fresh client (its nonce counter starts from the chain:
        after a rollback an old counter would be ahead of it)."""
        w3 = http_web3(self.url)
        return Registry(ChainClient(w3, self.issuer, backend="anvil", poll_interval=0.01), self.address)

    def rpc(self, method: str, params: list) -> Any:
        resp = self.admin.w3.provider.make_request(method, params)
        assert "error" not in resp, resp
        return resp["result"]

    def head(self) -> int:
        return self.admin.block_number()

    def mint(self, name: str, count: int = 4, *, anchor: bool = True) -> tuple[bytes, list[str]]:
        res = mint_batch(self.sessions, self.master_key, self.issuer.address,
                         MintRequest(sku=f"GC-{name.upper()}", face_value="25.00", currency="USD", count=count))
        if anchor:
            reg = self.registry()
            anchor_batch(self.sessions, reg, res.batch_id)
            publish_dump(self.public_sessions, reg, res.batch_id, batch_dump(self.sessions, res.batch_id))
        with self.sessions() as s:
            rows = s.execute(select(Card.serial).join(Batch, Card.batch_pk == Batch.id)
                             .where(Batch.batch_id == res.batch_id).order_by(Card.index)).scalars().all()
        self.batches[name] = (res.batch_id, list(rows))
        return bytes.fromhex(res.batch_id[2:]), list(rows)

    def app(self, **api: Any):
        base = {"lookup_rate": "100000/minute", "publish_rate": "100000/minute", "chain_ttl": TTL,
                "chain_stale_after": 30.0, "scan_flush_interval": 0.2, "card_cache_ttl": 60}
        base.update(api)
        reg = Registry(ChainClient(http_web3(self.url), Account.create(), backend="anvil"), self.address)
        deps = AppDeps(settings=self.settings, api=ApiSettings(**base), sessions=self.public_sessions,
                       registry=reg, limiter=MemoryLimiter())
        return create_app(self.settings, deps=deps)


@pytest.fixture(scope="module")
def aw() -> Iterator[AnvilWorld]:
    """An anvil of its own (its reorgs must not disturb the shared session chain), the platform, an issuer, the
    supplier's and the public databases, and a batch `base` anchored and published before any test."""
    with tempfile.TemporaryDirectory(prefix="cardproof-reorg-api-") as tmp:
        home = Path(tmp)
        node = local_node.start(home, port=local_node.free_port())
        try:
            w3 = http_web3(node.url)
            admin = ChainClient(w3, dev_account_for(w3, node.chain_id), backend="anvil", poll_interval=0.01)
            platform = deploy_platform(admin, home)
            issuer = Account.from_key(b"\x51" * 32)
            admin.wait(admin.send_value(issuer.address, 10**20).tx_hash)
            settings = get_settings(home=home, rpc_url=node.url, database_url=f"sqlite:///{home / 'cardproof.db'}",
                                    public_database_url=f"sqlite:///{home / 'public.db'}", redis_url=None,
                                    public_url="http://cards.test")
            engine, sessions = open_database(url=settings.database_url)
            public_engine, public_sessions = open_public_database(url=settings.public_database_url)
            address = platform.registry.address
            add_issuer(sessions, Registry(admin, address), issuer.address, "Reorg Cards")
            world = AnvilWorld(home, settings, node.url, admin, issuer, address, sessions, engine, public_sessions,
                               public_engine, MasterKey.generate())
            world.mint("base", 8)
            yield world
            engine.dispose()
            public_engine.dispose()
        finally:
            local_node.stop(home)
    if MEASURED:
        print("\nwithdraw times (s):", {k: round(v, 3) for k, v in MEASURED.items()})


def _verdict(client: TestClient, serial: str) -> dict:
    resp = client.get(f"/v1/cards/{serial}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def _wait_for(client: TestClient, serial: str, verdict: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = _verdict(client, serial)
        if body["verdict"] == verdict:
            return body
        assert time.monotonic() < deadline, f"{serial}: still {body['verdict']} ({body['reason']}), not {verdict}"
        time.sleep(0.02)


def _withdrawn_within(client: TestClient, t0: float, expect: dict[str, str], name: str) -> float:
    """Poll the API until each serial has its expected verdict; at no point is a card ``authentic`` that is
    not expected to be. Returns the time from ``t0`` to the last change, asserted within one poll."""
    pending = dict(expect)
    last = 0.0
    deadline = t0 + 10 * (TTL + MARGIN)
    while pending:
        for serial, verdict in list(pending.items()):
            body = _verdict(client, serial)
            if body["verdict"] == verdict:
                last = max(last, time.monotonic() - t0)
                del pending[serial]
        assert time.monotonic() < deadline, f"not withdrawn: {pending}"
        time.sleep(0.01)
    MEASURED[name] = last
    assert last <= TTL + MARGIN, f"{name}: withdrawn after {last:.3f} s, more than one poll ({TTL} s) + {MARGIN} s"
    # ... and it stays so for a few more polls.
    end = time.monotonic() + 3 * TTL
    while time.monotonic() < end:
        for serial, verdict in expect.items():
            assert _verdict(client, serial)["verdict"] == verdict
        time.sleep(0.05)
    return last


def _warm(client: TestClient, expect: dict[str, str]) -> None:
    """Look each card up until it has its verdict, and until the answer comes from the caches alone."""
    for serial, verdict in expect.items():
        _wait_for(client, serial, verdict)
    time.sleep(TTL * 1.5)  # a poll after the last act, so the caches hold what the chain says now
    for serial, verdict in expect.items():
        assert _verdict(client, serial)["verdict"] == verdict


def _index(aw: AnvilWorld, name: str, i: int) -> tuple[bytes, int, str]:
    bid, serials = aw.batches[name]
    return bytes.fromhex(bid[2:]), i, serials[i]


@anvil
def test_reorg_at_the_same_height_withdraws_an_anchor(aw: AnvilWorld):
    with TestClient(aw.app()) as client:
        old = aw.batches["base"][1][0]
        bid, serials = aw.mint("same-height")
        head = aw.head()
        assert aw.registry().batch(bid).anchored
        _warm(client, {serials[0]: "authentic", old: "authentic"})
        view: ChainView = client.app.state.deps.chain
        t0 = time.monotonic()
        aw.rpc("anvil_reorg", [1, []])  # the anchor's block replaced by an empty one at the same height
        assert aw.head() == head and not aw.registry().batch(bid).anchored
        _withdrawn_within(client, t0, {serials[0]: "not_yet_anchored", old: "authentic"}, "same_height")
        body = _verdict(client, serials[0])
        assert body["reason"] == "batch_not_anchored" and body["batch"]["anchored"] is False
        assert body["chain"]["state"] == "live"
        assert view.reorgs >= 1


@anvil
def test_deeper_reorg_withdraws_an_anchor_and_a_revocation(aw: AnvilWorld):
    with TestClient(aw.app()) as client:
        base_bid, _, kept = _index(aw, "base", 1)
        _, ridx, revoked = _index(aw, "base", 2)
        before = aw.head()
        bid, serials = aw.mint("deeper")
        aw.registry().revoke_cards(base_bid, [ridx], 1)
        aw.rpc("anvil_mine", ["0x4"])
        _warm(client, {serials[0]: "authentic", revoked: "revoked", kept: "authentic"})
        head = aw.head()
        t0 = time.monotonic()
        assert head - before == 6
        aw.rpc("anvil_reorg", [head - before, []])  # the anchor, the revocation and the 4 blocks after them
        assert aw.head() == head and not aw.registry().batch(bid).anchored and aw.registry().batch(base_bid).anchored
        _withdrawn_within(client, t0, {serials[0]: "not_yet_anchored", revoked: "authentic", kept: "authentic"},
                          "deeper")


@anvil
def test_rollback_past_anchor_revocation_and_redemption(aw: AnvilWorld):
    """evm_snapshot, then an anchor, a revocation and a redemption; evm_revert and new blocks beyond the old
    head: the block number never goes down as the API sees it."""
    with TestClient(aw.app()) as client:
        base_bid, ridx, revoked = _index(aw, "base", 3)
        _, didx, redeemed = _index(aw, "base", 4)
        _, _, kept = _index(aw, "base", 5)
        snap = aw.rpc("evm_snapshot", [])
        bid, serials = aw.mint("rolled-back")
        reg = aw.registry()
        reg.revoke_cards(base_bid, [ridx], 1)
        reg.mark_redeemed(base_bid, [didx])
        expect = {serials[0]: "authentic", serials[1]: "authentic", revoked: "revoked", redeemed: "redeemed",
                  kept: "authentic"}
        _warm(client, expect)
        head = aw.head()
        t0 = time.monotonic()
        assert aw.rpc("evm_revert", [snap]) is True
        aw.rpc("anvil_mine", [hex(head - aw.head() + 2)])  # past the old head before the API polls
        assert aw.head() == head + 2 and not aw.registry().batch(bid).anchored
        _withdrawn_within(client, t0, {serials[0]: "not_yet_anchored", serials[1]: "not_yet_anchored",
                                       revoked: "authentic", redeemed: "authentic", kept: "authentic"},
                          "rollback")
        # The chain moves on: acts done again on the new chain are seen as usual.
        aw.registry().revoke_cards(base_bid, [ridx], 2)
        _wait_for(client, revoked, "revoked", timeout=TTL + MARGIN + 1)


@anvil
def test_reorg_with_the_anchor_mined_again_keeps_it_authentic(aw: AnvilWorld):
    """A reorg that puts the anchor in another block at the same height: the batch is re-read, still
    anchored (no false withdrawal lasting beyond a poll either)."""
    reg = aw.registry()
    bid = bytes.fromhex(aw.issuer.address[2:]) + b"\x77" * 12
    before = aw.head()
    # A raw anchor transaction, signed now and replayed by the reorg.
    call = reg.fn.anchorBatch(bid, b"\x11" * 32, 10, b"\x22" * 32, PLACEHOLDER_PRODUCT.as_tuple(), 0)
    tx = call.build_transaction(
        {"from": aw.issuer.address, "nonce": reg.client.w3.eth.get_transaction_count(aw.issuer.address),
         "gas": 400_000, "chainId": aw.admin.chain_id, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
    raw = aw.issuer.sign_transaction(tx).raw_transaction.to_0x_hex()
    aw.admin.w3.eth.send_raw_transaction(raw)
    deadline = time.monotonic() + 5
    while aw.head() == before:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    view = ChainView(Registry(ChainClient(http_web3(aw.url), Account.create(), backend="anvil"), aw.address),
                     ttl=TTL)
    view.poll()
    first = view.batch(bid)
    assert first.anchored
    aw.rpc("anvil_reorg", [1, [[raw, 0]]])
    assert aw.registry().batch(bid).anchored
    view.poll()
    assert view.reorgs == 1 and view.peek_batch(bid) is MISSING  # read at a removed block: withdrawn
    again = view.batch(bid)
    assert again.anchored and again.root == first.root


@anvil
def test_reorg_deeper_than_the_remembered_hashes_forgets_everything(aw: AnvilWorld):
    reg = Registry(ChainClient(http_web3(aw.url), Account.create(), backend="anvil"), aw.address)
    view = ChainView(reg, ttl=TTL, keep_blocks=2)
    base_bid, idx, _ = _index(aw, "base", 6)
    view.poll()
    assert view.batch(base_bid).anchored and view.bits(base_bid, idx) == (False, False)
    for _ in range(4):
        aw.rpc("anvil_mine", ["0x1"])
        view.poll()
    assert len(view._hashes) == 2
    aw.rpc("anvil_reorg", [5, []])
    view.poll()
    assert view.last_reorg["ancestor"] is None
    assert view.peek_batch(base_bid) is MISSING and view.peek_bits(base_bid, idx) == (MISSING, MISSING)
    assert view.batch(base_bid).anchored  # anchored before the reorg's depth: still so


@anvil
def test_shallow_reorg_keeps_facts_read_before_the_fork(aw: AnvilWorld):
    """Precise, not only safe: facts read at blocks still on the chain stay cached (no extra reads)."""
    reg = Registry(ChainClient(http_web3(aw.url), Account.create(), backend="anvil"), aw.address)
    view = ChainView(reg, ttl=TTL)
    base_bid, idx, _ = _index(aw, "base", 7)
    view.poll()
    assert view.batch(base_bid).anchored and view.bits(base_bid, idx) == (False, False)
    aw.rpc("anvil_mine", ["0x2"])
    view.poll()
    reads = view.reads
    aw.rpc("anvil_reorg", [1, []])
    view.poll()
    assert view.reorgs == 1 and view.last_reorg["ancestor"] is not None
    assert view.peek_batch(base_bid) is not MISSING and view.peek_bits(base_bid, idx) == (False, False)
    assert view.reads == reads


@anvil
def test_a_read_in_flight_across_a_reorg_is_not_cached(aw: AnvilWorld):
    """A batch read pinned to a block that a reorg removes while the read is in flight is read again, not
    cached (nor answered) as anchored."""
    bid, _serials = aw.mint("in-flight")
    reader = Registry(ChainClient(http_web3(aw.url), Account.create(), backend="anvil"), aw.address)
    view = ChainView(reader, ttl=TTL)
    view.poll()
    real = reader.batch
    calls = []

    def batch_then_reorg(batch_id, block="latest"):
        value = real(batch_id, block)
        if not calls:
            aw.rpc("anvil_reorg", [1, []])  # the anchor's block goes while the answer travels back
            view.poll()
        calls.append(value.anchored)
        return value

    reader.batch = batch_then_reorg
    found = view.batch(bid)
    assert calls == [True, False] and not found.anchored
    assert not view.peek_batch(bid).anchored


@pytest.mark.parametrize("chain_env", ["eth-tester", "anvil"], indirect=True)
def test_revert_and_new_blocks_withdraw_anchor_and_revocation_on_both_chains(chain_env):
    """The chain view alone, on the in-process chain and on anvil: a revert to a snapshot followed by more new
    blocks than were removed (the head's number goes up) withdraws an anchor and a revocation in one poll."""
    env = chain_env
    bid = bytes.fromhex(env.address("issuer")[2:]) + b"\x5a" * 12
    old = bytes.fromhex(env.address("issuer")[2:]) + b"\x5b" * 12
    env.registry("issuer").anchor_batch(old, b"\x33" * 32, 300, b"\x44" * 32)
    view = ChainView(env.registry("stranger"), ttl=TTL)
    view.poll()
    assert view.batch(old).anchored and view.bits(old, 260) == (False, False)
    snap = env.snapshot()
    env.registry("issuer").anchor_batch(bid, b"\x11" * 32, 10, b"\x22" * 32)
    env.registry("issuer").revoke_cards(old, [260], 1)
    view.poll()
    assert view.batch(bid).anchored and view.peek_bits(old, 260) == (True, False)
    head = view.status().last_block
    env.revert(snap)
    env.mine(4)
    assert env.admin.block_number() > head
    assert view.poll() > head
    assert view.peek_batch(bid) is MISSING and view.peek_bits(old, 260)[0] is not True
    assert not view.batch(bid).anchored
    assert view.bits(old, 260) == (False, False) and view.batch(old).anchored
