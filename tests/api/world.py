"""A small world for the API tests: an in-process chain with the registry; the supplier's database (an issuer
with batches minted with known codes, anchored through the issuer library) and the public service's database
(the anchored batches published to it, as `cardproof publish` does); and app factories over the public one."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from sqlalchemy import select

from chain.client import ChainClient, dev_account_for, new_in_process_web3
from chain.platform import deploy_platform
from chain.registry import ProductSpec, Registry
from chain.settings import Settings, get_settings
from issuer.anchoring import anchor_batch
from issuer.issuers import add_issuer
from issuer.minting import MintRequest, mint_batch
from issuer.secrets_store import MasterKey
from issuer.storage.db import open_database
from issuer.storage.models import Batch, Card
from verify_api.app import create_app
from verify_api.config import ApiSettings
from verify_api.deps import AppDeps
from verify_api.ratelimit import MemoryLimiter
from tests.netkit import LiveServer, free_port  # noqa: F401 - re-exported for the API tests

GENEROUS = dict(lookup_rate="100000/minute", publish_rate="100000/minute")


@dataclass
class MintedBatch:
    batch_id: str
    cards: list[tuple[str, str]]  # (display serial, code)
    state: str
    openings: dict[str, str] = field(default_factory=dict)  # display serial -> opening (display form)


@dataclass
class World:
    home: Path
    settings: Settings
    tester: Any
    admin: ChainClient
    issuer_client: ChainClient
    registry: Registry  # acting as the issuer
    sessions: Any  # the supplier's database
    engine: Any
    master_key: MasterKey
    public_sessions: Any = None  # the public service's database
    public_engine: Any = None
    batches: dict[str, MintedBatch] = field(default_factory=dict)
    _used: set[str] = field(default_factory=set)

    def opening(self, serial: str, batch: str = "main") -> str:
        """The opening (display form) that travels with the code of card ``serial``."""
        return self.batches[batch].openings[serial]

    def card(self, batch: str = "main") -> tuple[str, str]:
        """A card of ``batch`` no other test has taken: (serial, code)."""
        for serial, code in self.batches[batch].cards:
            if serial not in self._used:
                self._used.add(serial)
                return serial, code
        raise RuntimeError(f"no unused card left in batch {batch}")

    def api_settings(self, **kw: Any) -> ApiSettings:
        base = dict(GENEROUS, chain_ttl=0.2, chain_stale_after=5.0, scan_flush_interval=0.2, card_cache_ttl=60)
        base.update(kw)
        return ApiSettings(**base)

    def deps(self, *, api: ApiSettings | None = None, registry: Any = None, **kw: Any) -> AppDeps:
        return AppDeps(settings=self.settings, api=api or self.api_settings(), sessions=self.public_sessions,
                       registry=registry or self.registry,
                       limiter=kw.pop("limiter", None) or MemoryLimiter(), **kw)

    def app(self, **kw: Any):
        return create_app(self.settings, deps=self.deps(**kw))


def _codes_csv(path: Path, codes: list[str]) -> Path:
    path.write_text("code\n" + "\n".join(codes) + "\n", encoding="utf-8")
    return path


def publish(world: World, batch_id: str) -> None:
    """What `cardproof publish` does, in process: the batch's dump into the public database, checked on chain."""
    from issuer.export import batch_dump
    from verify_api.publish import publish_dump

    publish_dump(world.public_sessions, world.registry, batch_id, batch_dump(world.sessions, batch_id))


def mint(world: World, name: str, count: int, *, anchor: bool = True, expires: str | None = None,
         publish_it: bool = True) -> MintedBatch:
    codes = [f"{name.upper()}-CODE-{i:04d}-{Account.create().address[2:14]}" for i in range(count)]
    csv = _codes_csv(world.home / f"{name}.csv", codes)
    res = mint_batch(world.sessions, world.master_key, world.issuer_client.address,
                     MintRequest(sku=f"GC-{name.upper()}", face_value="25.00", currency="USD", codes_csv=csv,
                                 expires=expires))
    if anchor:
        anchor_batch(world.sessions, world.registry, res.batch_id)
        if publish_it:
            publish(world, res.batch_id)
    with world.sessions() as s:
        rows = s.execute(select(Card.index, Card.serial).join(Batch, Card.batch_pk == Batch.id)
                         .where(Batch.batch_id == res.batch_id).order_by(Card.index)).all()
        batch = s.scalar(select(Batch).where(Batch.batch_id == res.batch_id))
        from issuer.core.commitment import derive_batch_keys, derive_opening, format_opening

        open_key = derive_batch_keys(world.master_key.unwrap_batch_secret(batch.batch_id_bytes,
                                                                          bytes(batch.secret_ct)))[0]
    from issuer.core.serial import format_serial, parse_serial

    cards = [(format_serial(parse_serial(serial)), codes[index]) for index, serial in rows]
    openings = {format_serial(parse_serial(serial)): format_opening(derive_opening(open_key, index))
                for index, serial in rows}
    mb = MintedBatch(res.batch_id, cards, "anchored" if anchor else "minted", openings)
    world.batches[name] = mb
    return mb


def build_world() -> World:
    home = Path(tempfile.mkdtemp(prefix="cardproof-api-"))
    settings = get_settings(home=home, public_url="http://cards.test", explorer_url="https://explorer.test",
                            database_url=f"sqlite:///{home / 'cardproof.db'}",
                            public_database_url=f"sqlite:///{home / 'public.db'}", redis_url=None)
    tester, w3 = new_in_process_web3()
    admin = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
    deploy_platform(admin, home)  # registry, and on this dev chain the test stablecoin and escrow
    issuer_acct = Account.from_key(b"\x42" * 32)
    admin.wait(admin.send_value(issuer_acct.address, 10**20).tx_hash)
    issuer_client = admin.with_account(issuer_acct)
    from chain.deployments import REGISTRY, find

    address = find(admin, home, REGISTRY).address
    engine, sessions = open_database(settings)
    from verify_api.storage.db import open_public_database

    public_engine, public_sessions = open_public_database(settings)
    add_issuer(sessions, Registry(admin, address), issuer_acct.address, "Acme Gift Cards")
    world = World(home, settings, tester, admin, issuer_client, Registry(issuer_client, address), sessions, engine,
                  MasterKey.generate(), public_sessions, public_engine)
    mint(world, "main", 60)
    mint(world, "pending", 4, anchor=False)
    return world




def _flaky_provider_class():
    from web3 import EthereumTesterProvider

    class FlakyProvider(EthereumTesterProvider):
        """The in-process chain's provider; while ``down`` every request fails as a dropped connection would."""

        down = False

        def is_connected(self, show_traceback: bool = False) -> bool:
            return not self.down

        def make_request(self, method: Any, params: Any) -> Any:
            if self.down:
                raise ConnectionError("chain is down (test)")
            return super().make_request(method, params)

    return FlakyProvider


def flaky_registry(world: World) -> tuple[Registry, Any]:
    """A registry reading the world's chain through a provider that can be switched off."""
    from web3 import Web3

    provider = _flaky_provider_class()(world.tester)
    w3 = Web3(provider)
    client = ChainClient(w3, world.issuer_client.account, backend="eth-tester", _chain_id=world.admin.chain_id)
    return Registry(client, world.registry.address), provider


def dump_of(world: World, batch_id: str) -> dict:
    """The batch's public dump, as `cardproof publish` sends it."""
    from issuer.export import batch_dump

    return batch_dump(world.sessions, batch_id)


def leaves_of(dump: dict) -> list:
    from issuer.core.dump import load_dump

    return list(load_dump(dump).leaves)


def anchor_leaves(world: World, leaves: list) -> str:
    """Anchor a hand-made batch of ``leaves`` (their batch id must be ``world.issuer_client.address`` + 12
    bytes) straight through the registry, without the supplier's database; its dump is ``make_dump(leaves)``."""
    from issuer.core.dump import load_dump, make_dump

    tree = load_dump(make_dump(leaves)).tree
    bid = leaves[0].batch_id
    first = leaves[0]  # the batch is anchored with its leaves' product and expiry (all leaves share them)
    world.registry.anchor_batch(bid, tree.root, len(leaves), b"\x00" * 32,  # sent and mined
                                ProductSpec(first.sku, first.face_value, first.currency), expiry=first.expiry)
    return "0x" + bid.hex()
