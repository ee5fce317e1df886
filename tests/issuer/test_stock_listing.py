"""`cardproof stock` (issuer/stock_listing.py): the supplier's cards per product and batch, each counted once as
revoked, redeemed, delivered, reserved, expired or available, from its database and the chain (the node's
``issuer.node.stock``); the ERP API's ``/v1/erp/stock`` counts its available cards with the same function.

Runs on both chains with the escrow test world (tests/escrow/world.py) deployed for this module; the supplier's
database is SQLite (tests/orders/sealedkit.py)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from issuer.core.serial import format_serial, parse_serial
from issuer.delivery_pick import reserve_delivery
from issuer.node.stock import Stock
from issuer.redemption import redeem_card
from issuer.revocation import parse_reason, revoke_serials
from issuer.service.erp import stock as erp_stock
from issuer.stock_listing import STATES, stock_listing
from issuer.storage.models import Batch, Card
from tests.escrow.world import World, worlds_on_session_chains
from tests.orders.sealedkit import Console, make_sealed_world

WORLD_KEY = "stock_listing_world"


@pytest.fixture(scope="module")
def _stock_worlds(request) -> Iterator[None]:
    yield from worlds_on_session_chains(request, WORLD_KEY)


@pytest.fixture
def sw(_stock_worlds, chain_env, tmp_path, sqlite_template):
    s = make_sealed_world(World.of(chain_env, WORLD_KEY), tmp_path, None, None, sqlite_template)
    yield s
    s.sessions.kw["bind"].dispose()


def serials_of(sw, minted) -> list[str]:
    with sw.sessions() as s:
        stored = s.scalars(select(Card.serial).join(Batch, Card.batch_pk == Batch.id)
                           .where(Batch.batch_id == minted.hex).order_by(Card.index)).all()
    return [format_serial(parse_serial(x)) for x in stored]


def listing(sw, **kw):
    supplier = sw.world.addr("supplier")
    reader = Stock(sw.escrow("supplier"), sw.registry("supplier"), supplier, word_ttl=0)
    with sw.sessions() as s:
        return {p.sku: p for p in stock_listing(s, supplier, reader, **kw)}


def counts(product) -> dict[str, int]:
    return {k: v for k, v in product.counts.items() if v}


def mint_expiring(sw, sku: str, count: int, expires: str) -> str:
    from issuer.anchoring import anchor_batch
    from issuer.minting import MintRequest, mint_batch

    res = mint_batch(sw.sessions, sw.master_key, sw.world.addr("supplier"),
                     MintRequest(sku=sku, face_value="25.00", currency="USD", count=count, expires=expires))
    anchor_batch(sw.sessions, sw.registry("supplier"), res.batch_id)
    return res.batch_id


def test_counts_follow_deliveries_reservations_revocations_and_redemptions(sw):
    sku = "GC-STOCK-" + secrets.token_hex(3).upper()
    minted = sw.mint(10, sku=sku)
    serials = serials_of(sw, minted)
    assert counts(listing(sw)[sku]) == {"available": 10}

    sold = sw.open(minted.product_id, 3)
    sw.deliver_sealed(sold, minted, [(0, 3)], upload=False)
    assert counts(listing(sw)[sku]) == {"delivered": 3, "available": 7}

    held = sw.open(minted.product_id, 2)  # picked and sealed for an order, not sent: reserved
    chosen = reserve_delivery(sw.sessions, sw.master_key, sw.escrow("supplier"), sw.registry("supplier"), held,
                              auto=True)
    assert chosen.ranges == [(3, 2)]
    assert counts(listing(sw)[sku]) == {"delivered": 3, "reserved": 2, "available": 5}

    revoke_serials(sw.sessions, sw.registry("supplier"), [serials[5], serials[0]], parse_reason("leaked"))
    redeem_card(sw.sessions, sw.master_key, sw.registry("supplier"), serials[6], minted.codes[6],
                sw.world.addr("supplier"))
    product = listing(sw)[sku]
    assert counts(product) == {"revoked": 2, "redeemed": 1, "delivered": 2, "reserved": 2, "available": 3}
    assert product.product_id == minted.product_id and product.cards == 10
    [batch] = product.batches
    assert batch.batch_id == minted.hex and batch.counts == product.counts

    # The node's picker sees the same stock; the ERP API (database only) counts the same available cards.
    with sw.sessions() as s:
        reader = Stock(sw.escrow("supplier"), sw.registry("supplier"), sw.world.addr("supplier"), word_ttl=0)
        assert reader.stock_levels(s, minted.product_id)[minted.product_id]["available"] == 3
        [erp] = [p for p in erp_stock(s, sw.world.addr("supplier"), 100)["products"] if p["sku"] == sku]
    assert erp["available"] == 3 and erp["batches"][0]["available"] == 3


def test_expired_batches_and_the_cli(sw, tmp_path, monkeypatch, capsys):
    sku = "GC-STOCK-" + secrets.token_hex(3).upper()
    a = sw.mint(4, sku=sku)
    oid = sw.open(a.product_id, 1)
    sw.deliver_sealed(oid, a, [(2, 1)], upload=False)
    expiring = mint_expiring(sw, sku, 3, "2031-06-30")
    assert {b.batch_id: b.counts["available"] for b in listing(sw)[sku].batches} == {a.hex: 3, expiring: 3}
    later = listing(sw, now=2_000_000_000)[sku]  # 2033: the second batch expired, the first never does
    by_batch = {b.batch_id: b for b in later.batches}
    assert by_batch[expiring].counts == {**dict.fromkeys(STATES, 0), "expired": 3}
    assert by_batch[a.hex].counts["available"] == 3 and by_batch[a.hex].expiry is None
    assert counts(later) == {"delivered": 1, "expired": 3, "available": 3} and later.cards == 7

    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    cli.as_supplier(sw)
    body = json.loads(cli.ok("stock", "--json").out)
    assert body["supplier"] == sw.world.addr("supplier") and body["escrow"] == sw.world.escrow_address
    [p] = [p for p in body["products"] if p["sku"] == sku]
    assert p["available"] == 6 and p["delivered"] == 1 and p["cards"] == 7 and p["face_value"] == "25.00"
    assert p["product_id"] == a.product_id
    assert [(b["batch_id"], b["available"], b["expiry"] is None) for b in p["batches"]] == [(a.hex, 3, True),
                                                                                           (expiring, 3, False)]
    text = cli.ok("stock").out
    assert f"{sku} 25.00 USD (product {a.product_id}): available 6, expired 0, reserved 0, delivered 1" in text
