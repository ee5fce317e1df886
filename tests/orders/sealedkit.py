"""A sealed-delivery world for tests/orders/test_sealed_delivery.py, on top of the package's escrow ``world``
(tests/escrow/world.py, both chains): the supplier's own database with a master key (it mints and anchors real
batches and seals deliveries, as `cardproof order deliver` does), the public service's database and the public
FastAPI app on a loopback port (it takes and serves sealed deliveries), plus hand-built (dishonest) deliveries and
a `cardproof` console runner pointed at the world's chain and escrow."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import Web3

from chain.escrow import Escrow, account_seal_key
from chain.registry import ProductSpec, Registry
from chain.settings import get_settings
from issuer.anchoring import anchor_batch
from issuer.core.commitment import code_commitment
from issuer.core.leaf import CODE_FORM_EXACT, LEAF_VERSION, CardLeaf, leaf_hash
from issuer.core.merkle import build_tree
from issuer.core.multiproof import multiproof
from issuer.core.sealed import DeliveryCard, DeliveryPayload, seal
from issuer.minting import MintRequest, mint_batch
from issuer.secrets_store import MasterKey
from tests.escrow.world import DAY, PRICE, World
from tests.netkit import LiveServer
from verify_api.app import create_app
from verify_api.config import ApiSettings
from verify_api.deps import AppDeps
from verify_api.order_view import OrderView
from verify_api.ratelimit import MemoryLimiter

GENEROUS = {"lookup_rate": "100000/minute", "publish_rate": "100000/minute"}


@dataclass
class Minted:
    batch_id: bytes
    codes: list[str]
    product_id: int

    @property
    def hex(self) -> str:
        return "0x" + self.batch_id.hex()


@dataclass
class SealedWorld:
    world: World
    home: Path
    sessions: Any  # the supplier's database
    master_key: MasterKey
    public_sessions: Any  # the public service's database
    public_db: Path
    server: LiveServer | None = None
    minted: list[Minted] = field(default_factory=list)

    # ------------------------------------------------------------------ handles

    @property
    def env(self):  # noqa: ANN201
        return self.world.env

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def escrow(self, who: str = "admin") -> Escrow:
        return self.world.escrow(who)

    def registry(self, who: str = "admin") -> Registry:
        return self.env.registry(who)

    def key(self, who: str) -> bytes:
        """The private key of a role account (a buyer's default seal key)."""
        return bytes(self.env.accounts[who].key)

    # ------------------------------------------------------------------ the supplier

    def mint(self, count: int, *, sku: str = "GC-SEALED", face_value: str = "25.00",
             anchor: bool = True) -> Minted:
        """The supplier mints a batch of ``count`` known codes (CSV import) and anchors it."""
        tag = secrets.token_hex(4).upper()
        codes = [f"SD{tag}-{i:05d}-{secrets.token_hex(5).upper()}" for i in range(count)]
        csv = self.home / f"codes-{tag}.csv"
        csv.write_text("code\n" + "\n".join(codes) + "\n", encoding="utf-8")
        res = mint_batch(self.sessions, self.master_key, self.world.addr("supplier"),
                         MintRequest(sku=sku, face_value=face_value, currency="USD", codes_csv=csv))
        batch_id = bytes.fromhex(res.batch_id[2:])
        product_id = 0
        if anchor:
            anchor_batch(self.sessions, self.registry("supplier"), res.batch_id)
            product_id = self.registry().batch(batch_id).product_id
        m = Minted(batch_id, codes, product_id)
        self.minted.append(m)
        return m

    def open(self, product_id: int, quantity: int, who: str = "buyer", **kw: Any) -> int:
        return self.world.open(who, product_id=product_id, quantity=quantity, **kw)

    def deliver_sealed(self, order_id: int, minted: Minted, ranges: list[tuple[int, int]], *,
                       upload: bool = True):  # noqa: ANN201
        from issuer.delivery_seal import deliver_sealed

        return deliver_sealed(self.sessions, self.master_key, self.escrow("supplier"), self.registry("supplier"),
                              order_id, minted.batch_id, ranges, public_url=self.url if upload else None)

    def gas_used(self, tx_hash: str) -> int:
        return int(self.env.admin.w3.eth.get_transaction_receipt(tx_hash)["gasUsed"])


def make_sealed_world(world: World, tmp_path: Path, public_sessions: Any, public_db: Path,
                      sqlite_template: Path) -> SealedWorld:
    from issuer.storage.db import session_factory
    from tests import dbutil

    home = tmp_path / "supplier"
    home.mkdir()
    engine = dbutil.sqlite_engine_from(sqlite_template, home / "cardproof.db")
    return SealedWorld(world, home, session_factory(engine), MasterKey(secrets.token_bytes(32)), public_sessions,
                       public_db)


def public_app(sw: SealedWorld):  # noqa: ANN201
    """The public service's app over the world's chain: its own database, the registry and the world's escrow read
    through a client that holds nothing (the stranger's)."""
    home = sw.home.parent / "public-home"
    home.mkdir(exist_ok=True)
    settings = get_settings(home=home, public_url="http://cards.test", redis_url=None,
                            database_url=f"sqlite:///{home / 'unused.db'}",
                            public_database_url=f"sqlite:///{sw.public_db}")
    reader = sw.env.client("stranger")
    deps = AppDeps(settings=settings, api=ApiSettings(**GENEROUS, chain_ttl=0.2, chain_stale_after=5.0),
                   sessions=sw.public_sessions, registry=Registry(reader, sw.env.registry_address),
                   limiter=MemoryLimiter(), background=False)
    app = create_app(settings, deps=deps)
    app.state.orders = OrderView(Escrow(reader, sw.world.escrow_address), sw.public_sessions, ttl=0.0)
    return app


# ---------------------------------------------------------------------------------------------- dishonest suppliers


@dataclass(frozen=True)
class HandCard:
    """A card a dishonest supplier makes up: its leaf and the code and opening it claims."""

    leaf: CardLeaf
    code: str
    opening: bytes


def hand_card(batch_id: bytes, index: int, code: str, *, product: ProductSpec, expiry: int = 0,
              serial: int | None = None) -> HandCard:
    opening = secrets.token_bytes(16)
    leaf = CardLeaf(LEAF_VERSION, batch_id, index, serial if serial is not None else 10**15 + index, product.sku,
                    product.face_value, product.currency, expiry, CODE_FORM_EXACT,
                    code_commitment(opening, code, CODE_FORM_EXACT))
    return HandCard(leaf, code, opening)


def hand_tree(cards: list[HandCard]):  # noqa: ANN201
    """The Merkle tree of these leaves (input index = position in ``cards``)."""
    return build_tree([leaf_hash(c.leaf) for c in cards])


def hand_payload(escrow: Escrow, order_id: int, batch_id: bytes, cards: list[HandCard],
                 delivered: list[int]) -> DeliveryPayload:
    """A delivery payload of the ``delivered`` cards (positions in ``cards``) with the multiproof of ``cards``' own
    tree: it reaches the anchored root only if that tree is what was anchored."""
    tree = hand_tree(cards)
    mp = multiproof(tree, delivered)
    return DeliveryPayload(chain_id=escrow.client.chain_id, escrow=escrow.address, order_id=order_id,
                           batch_id=batch_id, root=tree.root,
                           cards=tuple(DeliveryCard(cards[i].leaf, cards[i].code, cards[i].opening)
                                       for i in mp.value_indices),
                           proof=mp.proof, flags=mp.flags)


def seal_to_buyer(sw: SealedWorld, payload: DeliveryPayload, buyer: str = "buyer") -> bytes:
    """Seal to the buyer's default seal key (its account key), as named in its OrderOpened event."""
    opened = sw.escrow().opened_event(payload.order_id)
    key = bytes(opened["sealKey"])
    assert key == account_seal_key(sw.env.client(buyer))
    return seal(payload, key)


def post_blob(url: str, order_id: int, blob: bytes):  # noqa: ANN201
    import httpx

    return httpx.put(f"{url}/v1/orders/{order_id}/delivery", content=blob,
                      headers={"content-type": "application/octet-stream"}, timeout=30)


def get_blob(url: str, order_id: int):  # noqa: ANN201
    import httpx

    return httpx.get(f"{url}/v1/orders/{order_id}/delivery", timeout=30)


# ---------------------------------------------------------------------------------------------- a lying service


def lying_service(blobs: dict[int, bytes]) -> LiveServer:
    """A 'public service' that answers GET /v1/orders/{id}/delivery with whatever bytes it likes."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def get(request):  # noqa: ANN001, ANN202
        oid = int(request.path_params["oid"])
        if oid not in blobs:
            return Response(status_code=404)
        return Response(blobs[oid], media_type="application/octet-stream",
                        headers={"X-Sealed-Hash": "0x" + Web3.keccak(blobs[oid]).hex().removeprefix("0x")})

    return LiveServer(Starlette(routes=[Route("/v1/orders/{oid}/delivery", get)]))


# ---------------------------------------------------------------------------------------------- the console

CLEARED = ("CARDPROOF_DATABASE_URL", "CARDPROOF_PRIVATE_KEY", "CARDPROOF_MASTER_KEY", "CARDPROOF_KEYSTORE",
           "CARDPROOF_KEYSTORE_PASSWORD", "CARDPROOF_CHAIN_ID", "CARDPROOF_CONFIRMATIONS", "CARDPROOF_PUBLIC_URL",
           "CARDPROOF_DEBUG", "CARDPROOF_EXPLORER_URL", "CARDPROOF_REDIS_URL", "CARDPROOF_RPC_URL")


def _creation_tx(w3: Any, address: str, last_block: int) -> str:
    for n in range(last_block, -1, -1):
        block = w3.eth.get_block(n, full_transactions=True)
        for tx in block["transactions"]:
            if not tx.get("to"):
                receipt = w3.eth.get_transaction_receipt(tx["hash"])
                if receipt.get("contractAddress") and \
                        Web3.to_checksum_address(receipt["contractAddress"]) == Web3.to_checksum_address(address):
                    return "0x" + bytes(tx["hash"]).hex()
    raise AssertionError(f"no creation transaction of {address}")


def record_escrow(home: Path, world: World, key: str) -> None:
    """Record the world's escrow in ``home``/deployments.json (as `cardproof deploy` would have), so that the
    console's `Escrow.deployed` finds it."""
    from chain.artifacts import load_artifact
    from chain.escrow import ESCROW

    env = world.env
    chain_id = env.admin.chain_id
    tx = _creation_tx(env.admin.w3, world.escrow_address, env.extra[key]["block"])
    record = {"name": ESCROW, "chain_id": chain_id, "address": world.escrow_address, "block_number": 0,
              "tx_hash": tx, "deployer": env.admin.address, "source_hash": load_artifact(ESCROW).source_hash,
              "deployed_at": time.time()}
    # The registry's record, as tests/chainkit.py deployed it (in the env's home).
    recorded = json.loads((env.home / "deployments.json").read_text(encoding="utf-8"))[str(chain_id)]
    home.mkdir(parents=True, exist_ok=True)
    (home / "deployments.json").write_text(json.dumps({str(chain_id): {**recorded, ESCROW: record}}),
                                           encoding="utf-8")


@dataclass
class Run:
    rc: int
    out: str
    err: str


class Console:
    """`cardproof` in process (cardproof.console.main), on the world's chain: the in-process chain of the
    eth-tester session (put in place of the shared one) or the anvil node's URL."""

    def __init__(self, sw: SealedWorld, monkeypatch: Any, capsys: Any, home: Path, world_key: str) -> None:
        self.capsys, self.monkeypatch = capsys, monkeypatch
        for name in CLEARED:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("CARDPROOF_HOME", str(home))
        env = sw.env
        if env.backend == "eth-tester":
            import chain.client as client_mod

            monkeypatch.setattr(client_mod, "_in_process", (env.extra["tester"], env.admin.w3))
            monkeypatch.setenv("CARDPROOF_RPC_URL", "eth-tester")
        else:
            monkeypatch.setenv("CARDPROOF_RPC_URL", env.extra["node"].url)
        if sw.server is not None:
            monkeypatch.setenv("CARDPROOF_PUBLIC_URL", sw.url)
        record_escrow(home, sw.world, world_key)

    def act_as(self, key: bytes) -> None:
        self.monkeypatch.setenv("CARDPROOF_PRIVATE_KEY", "0x" + key.hex())

    def as_supplier(self, sw: SealedWorld) -> None:
        """The supplier's configuration: its account, its database and its master key."""
        self.act_as(sw.key("supplier"))
        self.monkeypatch.setenv("CARDPROOF_DATABASE_URL", str(sw.sessions.kw["bind"].url))
        self.monkeypatch.setenv("CARDPROOF_MASTER_KEY", sw.master_key._key.hex())  # noqa: SLF001 - a test's key

    def as_buyer(self, sw: SealedWorld, who: str = "buyer") -> None:
        self.act_as(sw.key(who))
        for name in ("CARDPROOF_DATABASE_URL", "CARDPROOF_MASTER_KEY"):
            self.monkeypatch.delenv(name, raising=False)

    def ok(self, *args: Any) -> Run:
        r = self(*args)
        assert r.rc == 0 and r.err == "", r
        return r

    def __call__(self, *args: Any) -> Run:
        from cardproof import console

        self.capsys.readouterr()
        rc = console.main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return Run(rc, out, err)

    def fails(self, *args: Any, match: str | None = None, report: bool = False) -> Run:
        """A failure: non-zero exit, one line on stderr and no traceback; nothing on stdout unless the command
        printed a report first (``report``)."""
        r = self(*args)
        assert r.rc != 0, r
        if not report:
            assert r.out == "", r
        assert "Traceback" not in r.err and r.err.endswith("\n") and r.err.count("\n") == 1, r.err
        assert r.err.startswith("cardproof"), r.err
        if match is not None:
            assert match in r.err, r.err
        return r


def other_key() -> bytes:
    return bytes(Account.create().key)


__all__ = ["Console", "DAY", "GENEROUS", "HandCard", "Minted", "PRICE", "SealedWorld", "get_blob", "hand_card",
           "hand_payload", "hand_tree", "lying_service", "make_sealed_world", "other_key", "post_blob",
           "public_app", "record_escrow", "seal_to_buyer"]
