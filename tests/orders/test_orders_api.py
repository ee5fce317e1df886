"""GET /v1/orders/{id} and the order page /o/{id} on the ASGI app: the chain's state of an order plus its
timeline from the indexed events, in every status; errors (404 order_not_found, 422, 503) and never a 500;
the page in all languages (Arabic right to left); stale chain answers."""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from chain.client import ChainClient, dev_account_for, new_in_process_web3
from chain.errors import ChainUnreachable
from chain.escrow import MAX_UINT256, Escrow, faucet
from chain.platform import deploy_platform
from chain.registry import ProductSpec, Registry
from chain.settings import get_settings
from verify_api.indexer import Indexer, followed_contracts
from verify_api.storage.db import open_public_database
from verify_api.app import create_app
from verify_api.config import ApiSettings
from verify_api.deps import AppDeps
from verify_api.i18n import LANGUAGES, LOCALES_DIR
from verify_api.order_view import OrderView
from verify_api.ratelimit import MemoryLimiter

EXPLORER = "https://explorer.test"
PRICE = 9_500_000  # 9.50
HOUR = 3_600
GENEROUS = {"lookup_rate": "100000/minute", "publish_rate": "100000/minute"}


@dataclass
class OrdersWorld:
    home: Path
    settings: Any
    tester: Any
    admin: ChainClient
    buyer: ChainClient
    escrow: Escrow
    coin: str
    registry: Registry
    sessions: Any  # the public database, where the indexer writes
    engine: Any
    ids: dict[str, int] = field(default_factory=dict)

    def deps(self, settings=None) -> AppDeps:
        return AppDeps(settings=settings or self.settings, api=ApiSettings(**GENEROUS), sessions=self.sessions,
                       registry=self.registry, limiter=MemoryLimiter(),
                       background=False)


@pytest.fixture(scope="module")
def ow() -> OrdersWorld:
    home = Path(tempfile.mkdtemp(prefix="cardproof-orders-"))
    settings = get_settings(home=home, public_url="http://cards.test", explorer_url=EXPLORER + "/",
                            database_url=f"sqlite:///{home / 'cardproof.db'}",
                            public_database_url=f"sqlite:///{home / 'public.db'}", redis_url=None)
    tester, w3 = new_in_process_web3()
    admin = ChainClient(w3, dev_account_for(w3, w3.eth.chain_id), backend="eth-tester")
    platform = deploy_platform(admin, home)
    registry = Registry(admin, platform.registry.address)
    registry.grant_issuer(admin.address)
    escrow = Escrow(admin, platform.escrow.address)
    escrow.set_fee(100)
    escrow.grant_arbiter(admin.address)
    coin = platform.stablecoin.address
    buyer = admin.with_account(Account.from_key(b"\x0b" * 32))
    admin.wait(admin.send_value(buyer.address, 10**19).tx_hash)
    faucet(admin, coin, buyer.address, 1_000 * 10**6)
    Escrow(buyer, escrow.address).approve(coin, MAX_UINT256)
    engine, sessions = open_public_database(settings)
    world = OrdersWorld(home, settings, tester, admin, buyer, escrow, coin, registry, sessions, engine)
    build_orders(world)
    yield world
    engine.dispose()


def build_orders(w: OrdersWorld) -> None:
    b_escrow = Escrow(w.buyer, w.escrow.address)
    now = int(w.admin.w3.eth.get_block("latest")["timestamp"])
    batch_id = bytes.fromhex(w.admin.address[2:]) + (1).to_bytes(12, "big")
    w.registry.anchor_batch(batch_id, b"\x42" * 32, 100, b"\0" * 32, ProductSpec.of("GAME-10", 1000, "USD"))
    w.ids["batch"] = batch_id  # type: ignore[assignment]
    next_card = iter(range(0, 100, 2))

    def open_(name: str, deadline: int = 86_400, window: int = HOUR) -> int:
        oid = b_escrow.open_order(w.admin.address, 1, 2, w.coin, PRICE, now + deadline, window)  # the batch's product
        w.ids[name] = oid
        return oid

    def deliver(oid: int) -> None:
        w.escrow.deliver(oid, batch_id, [(next(next_card), 2)], sealed_hash=bytes([oid]) * 32)

    open_("funded")
    deliver(open_("delivered", window=30 * 86_400))
    oid = open_("confirmed")
    deliver(oid)
    _, ranges = w.escrow.delivery(oid)
    w.registry.revoke_cards(batch_id, [ranges[0].start + 1], 1)  # one revoked card: refunded at settlement
    b_escrow.confirm(oid)
    oid = open_("resolved", window=30 * 86_400)
    deliver(oid)
    b_escrow.dispute(oid)
    w.escrow.resolve(oid, 5_000_000, 2 * PRICE - 5_000_000)
    open_("cancelled", deadline=2 * HOUR)
    deliver(open_("released", window=HOUR))
    w.tester.time_travel(now + 3 * HOUR)
    b_escrow.cancel(w.ids["cancelled"])
    w.escrow.release(w.ids["released"])
    Indexer(w.admin, w.sessions, followed_contracts(w.admin, w.home)).run_once()
    open_("unindexed")  # after the indexer's pass


@pytest.fixture(scope="module")
def api(ow) -> TestClient:
    with TestClient(create_app(ow.settings, deps=ow.deps()), base_url="http://testserver") as client:
        yield client


def steps(body: dict) -> list[str]:
    return [s["step"] for s in body["timeline"]]


# ---------------------------------------------------------------------------------------------- JSON


def test_confirmed_order_with_timeline_amounts_and_transactions(api, ow):
    oid = ow.ids["confirmed"]
    r = api.get(f"/v1/orders/{oid}")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["order_id"] == oid and body["status"] == "confirmed" and body["sku"] == "GAME-10"
    assert body["buyer"] == ow.buyer.address and body["supplier"] == ow.admin.address
    assert body["token"] == {"address": ow.coin, "symbol": "tUSD", "decimals": 6}
    assert body["quantity"] == 2 and body["fee_bps"] == 100
    assert body["unit_price"] == {"amount": "9.50", "units": "9500000", "symbol": "tUSD"}
    assert body["amount"]["amount"] == "19.00"
    assert body["delivery"]["batch_id"] == "0x" + ow.ids["batch"].hex()
    # The card revoked before the buyer confirmed shows as an informational "revoked" step.
    assert steps(body) == ["opened", "funded", "delivered", "revoked", "confirmed"]
    opened, funded, delivered, revoked, confirmed = body["timeline"]
    assert revoked["informational"] is True and revoked["contract"] == "CardRegistry"
    assert revoked["details"]["cards"] == 1 and revoked["details"]["phase"] == "while_order_open"
    assert opened["tx"] == funded["tx"] and opened["details"]["quantity"] == 2
    assert opened["amounts"]["unit_price"]["amount"] == "9.50" and funded["amounts"]["amount"]["amount"] == "19.00"
    assert delivered["details"]["cards"] == 2 and delivered["details"]["batch_id"] == body["delivery"]["batch_id"]
    assert confirmed["details"]["revoked_cards"] == 1
    # 1 card paid (9.50) less the 1% fee; the revoked card refunded.
    assert confirmed["amounts"]["to_supplier"]["amount"] == "9.405"
    assert confirmed["amounts"]["fee"]["amount"] == "0.095"
    assert confirmed["amounts"]["to_buyer"]["amount"] == "9.50"
    blocks = [s["block"] for s in body["timeline"]]
    assert blocks == sorted(blocks)
    for s in body["timeline"]:
        assert re.fullmatch(r"0x[0-9a-f]{64}", s["tx"]) and s["tx_url"] == f"{EXPLORER}/tx/{s['tx']}"
        assert s["time"] == ow.admin.w3.eth.get_block(s["block"])["timestamp"]
        receipt = ow.admin.w3.eth.get_transaction_receipt(s["tx"])
        assert receipt["blockNumber"] == s["block"]
    assert body["indexer"]["complete"] is True and body["indexer"]["missing"] == []
    assert body["chain"]["state"] == "live" and body["chain"]["escrow"] == ow.escrow.address
    assert body["links"] == {"self": f"/v1/orders/{oid}", "page": f"http://cards.test/o/{oid}"}


@pytest.mark.parametrize("name,expected", [
    ("funded", ["opened", "funded"]),
    ("delivered", ["opened", "funded", "delivered"]),
    ("resolved", ["opened", "funded", "delivered", "disputed", "resolved"]),
    ("cancelled", ["opened", "funded", "refunded"]),
    ("released", ["opened", "funded", "delivered", "released"]),
])
def test_every_status_has_its_timeline(api, ow, name, expected):
    body = api.get(f"/v1/orders/{ow.ids[name]}").json()
    assert body["status"] == name and steps(body) == expected and body["indexer"]["complete"] is True
    last = body["timeline"][-1]
    if name == "resolved":
        assert last["amounts"]["to_buyer"]["amount"] == "5.00"
        assert last["amounts"]["fee"]["amount"] == "0.14"  # 1% of 14.00
        assert last["amounts"]["to_supplier"]["amount"] == "13.86"
        assert last["details"]["arbiter"] == ow.admin.address
    if name == "cancelled":
        assert last["amounts"]["to_buyer"]["amount"] == "19.00"
    if name == "released":
        assert last["amounts"]["to_supplier"]["amount"] == "18.81" and last["details"]["caller"] == ow.admin.address
    if name == "delivered":
        assert body["dispute_window_end"] == body["delivered_at"] + 30 * 86_400


def test_an_order_the_indexer_has_not_seen_says_so(api, ow):
    body = api.get(f"/v1/orders/{ow.ids['unindexed']}").json()
    # The indexer has not seen it, but the product is read from the chain.
    assert body["status"] == "funded" and body["timeline"] == [] and body["sku"] == "GAME-10"
    idx = body["indexer"]
    assert idx["complete"] is False and idx["missing"] == ["opened", "funded"]
    assert idx["behind"] >= 1 and idx["chain_block"] == idx["indexed_block"] + idx["behind"]
    page = api.get(f"/o/{ow.ids['unindexed']}")
    assert page.status_code == 200 and 'id="indexer-note"' in page.text
    assert f"indexed up to block {idx['indexed_block']}" in page.text


@pytest.mark.parametrize("path,status,code", [
    ("/v1/orders/999", 404, "order_not_found"),
    ("/v1/orders/0", 404, "order_not_found"),
    ("/v1/orders/" + str(2**256 - 1), 404, "order_not_found"),
    ("/v1/orders/abc", 422, "invalid_order_id"),
    ("/v1/orders/-1", 422, "invalid_order_id"),
    ("/v1/orders/1.5", 422, "invalid_order_id"),
    ("/v1/orders/0x01", 422, "invalid_order_id"),
    ("/v1/orders/" + str(2**256), 422, "invalid_order_id"),
    ("/v1/orders/" + "9" * 101, 422, "invalid_request"),
    ("/v1/orders/%20", 422, "invalid_order_id"),
])
def test_errors_have_stable_codes(api, path, status, code):
    r = api.get(path)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_escrow_not_deployed_is_503_not_500(ow):
    settings = get_settings(home=Path(tempfile.mkdtemp(prefix="cardproof-noescrow-")), explorer_url=None,
                            database_url=ow.settings.database_url, redis_url=None)
    with TestClient(create_app(settings, deps=ow.deps(settings))) as client:
        r = client.get("/v1/orders/1")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_deployed"
        page = client.get("/o/1")
        assert page.status_code == 503 and 'data-code="not_deployed"' in page.text


class _Flaky:
    """An Escrow whose reads fail while ``down``."""

    def __init__(self, escrow: Escrow) -> None:
        self._escrow = escrow
        self.down = False
        self.client = escrow.client
        self.address = escrow.address
        self.registry_address = escrow.registry_address

    def order(self, *args):
        if self.down:
            raise ChainUnreachable("the chain does not answer (test)")
        return self._escrow.order(*args)

    def delivery(self, *args):
        return self._escrow.delivery(*args)


def test_cached_and_stale_answers(ow):
    now = [0.0]
    flaky = _Flaky(ow.escrow)
    view = OrderView(flaky, ow.sessions, ttl=2.0, max_age=60.0, clock=lambda: now[0])
    oid = ow.ids["funded"]
    assert view.answer(oid)["chain"]["state"] == "live" and view.reads == 1
    view.answer(oid)
    assert view.reads == 1  # cached for ttl
    now[0] += 3
    flaky.down = True
    stale = view.answer(oid)
    assert stale["chain"]["state"] == "stale" and stale["status"] == "funded"
    with pytest.raises(ChainUnreachable):
        view.answer(ow.ids["delivered"])  # never read: nothing to serve
    flaky.down = False
    settled = ow.ids["confirmed"]
    view.answer(settled)
    now[0] += 30  # settled orders cannot change: cached for max_age
    reads = view.reads
    assert view.answer(settled)["status"] == "confirmed" and view.reads == reads
    view.forget()
    view.answer(settled)
    assert view.reads == reads + 1


# ---------------------------------------------------------------------------------------------- the page


def test_order_page_in_english(api, ow):
    oid = ow.ids["confirmed"]
    r = api.get(f"/o/{oid}", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    html = r.text
    assert '<html lang="en" dir="ltr">' in html
    assert 'data-status="confirmed"' in html and "Completed" in html and f"Order #{oid}" in html
    assert "19.00 tUSD" in html and "9.50 tUSD" in html and "9.405 tUSD" in html
    assert re.findall(r'data-step="(\w+)"', html) == ["opened", "funded", "delivered", "revoked", "confirmed"]
    body = api.get(f"/v1/orders/{oid}").json()
    for s in body["timeline"]:
        assert f'href="{EXPLORER}/tx/{s["tx"]}"' in html
    assert "GAME-10" in html and 'id="indexer-note"' not in html


def test_order_page_in_arabic_is_right_to_left(api, ow):
    r = api.get(f"/o/{ow.ids['resolved']}", headers={"Accept-Language": "ar"})
    assert r.status_code == 200
    assert '<html lang="ar" dir="rtl">' in r.text
    assert "تمت تسوية النزاع" in r.text  # "dispute resolved"
    assert "tUSD" in r.text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_order_page_in_every_language(api, ow, lang):
    r = api.get(f"/o/{ow.ids['released']}", headers={"Accept-Language": lang})
    assert r.status_code == 200 and f'lang="{lang}"' in r.text
    own = json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))
    assert own["order.step.released"] in r.text and own["order.status.released"] in r.text
    assert not re.search(r">\s*order\.[a-z_.]+\s*<", r.text)  # no untranslated key shown


@pytest.mark.parametrize("path,status,code", [("/o/999", 404, "order_not_found"),
                                              ("/o/nope", 422, "invalid_order_id"),
                                              ("/o/" + "9" * 300, 422, "invalid_order_id")])
def test_order_page_errors(api, path, status, code):
    r = api.get(path, headers={"Accept-Language": "es"})
    assert r.status_code == status and r.headers["content-type"].startswith("text/html")
    assert f'data-code="{code}"' in r.text and 'lang="es"' in r.text


def test_every_locale_has_every_order_message():
    en = json.loads((LOCALES_DIR / "en.json").read_text(encoding="utf-8"))
    keys = {k for k in en if k.startswith("order.")}
    assert len(keys) > 40
    for lang in LANGUAGES:
        own = json.loads((LOCALES_DIR / f"{lang}.json").read_text(encoding="utf-8"))
        assert keys <= set(own), (lang, keys - set(own))
        for k in keys:
            assert set(re.findall(r"\{(\w+)\}", own[k])) == set(re.findall(r"\{(\w+)\}", en[k])), (lang, k)
