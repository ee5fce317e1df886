"""The API finds the node again when it moves: the local chain (`cardproof chain up`) stopped and started again on
another port. The API resolves the node from $CARDPROOF_HOME/chain (no CARDPROOF_RPC_URL), as `cardproof serve`
does, and its chain view calls the connector again after a few failed polls."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy import select

from chain import local_node
from chain.client import ChainClient, dev_account_for, http_web3
from chain.platform import deploy_platform
from chain.registry import Registry
from chain.settings import get_settings
from issuer.anchoring import anchor_batch
from issuer.export import batch_dump
from issuer.issuers import add_issuer
from issuer.minting import MintRequest, mint_batch
from issuer.secrets_store import MasterKey
from issuer.storage.db import open_database
from issuer.storage.models import Batch, Card
from verify_api.app import create_app
from verify_api.chain_view import ChainView
from verify_api.config import ApiSettings
from verify_api.deps import AppDeps
from verify_api.publish import publish_dump
from verify_api.ratelimit import MemoryLimiter
from verify_api.storage.db import open_public_database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

pytestmark = pytest.mark.anvil

TTL = 0.2


@pytest.fixture
def home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cardproof-moves-") as tmp:
        home = Path(tmp)
        try:
            yield home
        finally:
            local_node.stop(home)


def _issuer_registry(url: str, issuer, address: str) -> Registry:
    return Registry(ChainClient(http_web3(url), issuer, backend="anvil", poll_interval=0.01), address)


def _mint(sessions, public_sessions, master_key, reg: Registry, name: str) -> list[str]:
    res = mint_batch(sessions, master_key, reg.client.address,
                     MintRequest(sku=f"GC-{name.upper()}", face_value="10.00", currency="USD", count=3))
    anchor_batch(sessions, reg, res.batch_id)
    publish_dump(public_sessions, reg, res.batch_id, batch_dump(sessions, res.batch_id))
    with sessions() as s:
        return list(s.execute(select(Card.serial).join(Batch, Card.batch_pk == Batch.id)
                              .where(Batch.batch_id == res.batch_id).order_by(Card.index)).scalars())


def _wait(predicate, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_api_finds_the_local_chain_again_on_a_new_port(home: Path):
    first = local_node.start(home, port=local_node.free_port())
    w3 = http_web3(first.url)
    admin = ChainClient(w3, dev_account_for(w3, first.chain_id), backend="anvil", poll_interval=0.01)
    platform = deploy_platform(admin, home)
    issuer = Account.from_key(b"\x61" * 32)
    admin.wait(admin.send_value(issuer.address, 10**20).tx_hash)
    settings = get_settings(home=home, rpc_url=None, database_url=f"sqlite:///{home / 'cardproof.db'}",
                            public_database_url=f"sqlite:///{home / 'public.db'}", redis_url=None)
    engine, sessions = open_database(url=settings.database_url)
    public_engine, public_sessions = open_public_database(url=settings.public_database_url)
    master_key = MasterKey.generate()
    address = platform.registry.address
    add_issuer(sessions, Registry(admin, address), issuer.address, "Moving Cards")
    before = _mint(sessions, public_sessions, master_key, _issuer_registry(first.url, issuer, address), "before")

    api = ApiSettings(lookup_rate="100000/minute", publish_rate="100000/minute", chain_ttl=TTL,
                      chain_stale_after=1.0, rpc_timeout=0.5, scan_flush_interval=0.2)
    deps = AppDeps(settings=settings, api=api, sessions=public_sessions, limiter=MemoryLimiter())  # registry: resolved
    try:
        with TestClient(create_app(settings, deps=deps)) as client:
            def card(serial: str) -> dict:
                resp = client.get(f"/v1/cards/{serial}")
                assert resp.status_code == 200, resp.text
                return resp.json()

            body = card(before[0])
            assert body["verdict"] == "authentic" and body["chain"]["state"] == "live"
            view: ChainView = deps.chain

            # The chain goes down ...
            local_node.stop(home)
            _wait(lambda: card(before[0])["chain"]["state"] == "stale", 10, "the API to say stale")
            # ... and comes back on another port (its state reloaded from $CARDPROOF_HOME/chain).
            second = local_node.start(home, port=local_node.free_port())
            assert second.port != first.port
            t_up = time.monotonic()
            _wait(lambda: card(before[0])["chain"]["state"] == "live", 15, "the API to find the node again")
            recovered = time.monotonic() - t_up
            print(f"\nlive again {recovered:.2f} s after the node came back on a new port")
            assert view.reconnects >= 1
            assert recovered <= view.reconnect_after + 3 * TTL + 1.0
            assert card(before[0])["verdict"] == "authentic"
            # It reads the new node: a batch anchored there now is seen.
            after = _mint(sessions, public_sessions, master_key, _issuer_registry(second.url, issuer, address),
                          "after")
            _wait(lambda: card(after[0])["verdict"] == "authentic", 5, "a batch anchored on the moved node")
            assert client.get("/readyz").status_code == 200
    finally:
        engine.dispose()
        public_engine.dispose()


def test_reconnect_to_another_chain_starts_from_an_empty_cache(tmp_path: Path):
    """Two anvil processes with different registries: when the connector starts naming the other one, facts read
    from the first are not answered for the second."""
    homes = [tmp_path / "a", tmp_path / "b"]
    nodes = []
    try:
        regs = []
        for h in homes:
            node = local_node.start(h, port=local_node.free_port())
            nodes.append(node)
            w3 = http_web3(node.url)
            admin = ChainClient(w3, dev_account_for(w3, node.chain_id), backend="anvil", poll_interval=0.01)
            if h is homes[1]:  # another deployer nonce, so another registry address
                admin.wait(admin.send_value(Account.create().address, 1).tx_hash)
            platform = deploy_platform(admin, h)
            reg = Registry(admin, platform.registry.address)
            reg.grant_issuer(admin.address)
            regs.append(reg)
        assert regs[0].address != regs[1].address
        bid = bytes.fromhex(regs[0].client.address[2:]) + b"\x42" * 12
        regs[0].anchor_batch(bid, b"\x11" * 32, 5, b"\x22" * 32)

        target = {"i": 0}

        def connector() -> Registry:
            i = target["i"]
            url = nodes[i].url
            if local_node.rpc_chain_id(url, timeout=0.3) is None:
                raise ConnectionError(f"nothing at {url}")
            return Registry(ChainClient(http_web3(url, timeout=0.5), Account.create(), backend="anvil"),
                            regs[i].address)

        view = ChainView(connector, ttl=0.05, reconnect_after=0.2)
        view.poll()
        assert view.batch(bid).anchored
        local_node.stop(homes[0])
        target["i"] = 1
        _wait(lambda: view.poll() is not None, 5, "the view to reconnect")
        assert view.reconnects == 1 and view.status().registry == regs[1].address
        assert not view.batch(bid).anchored  # not on the second chain
    finally:
        for h in homes:
            local_node.stop(h)
