"""`cardproof order list` (verify_api/order_list.py): the escrow's orders read from the chain (OrderOpened logs and
``order(id)``), for the buyer, the supplier and the platform: status by name, amounts in token units, the product,
the deadline as a date; filters by buyer, supplier and status. Both chains (the package's ``world``)."""

from __future__ import annotations

import datetime as dt
import json
import secrets

import pytest

from tests.escrow.world import DAY
from tests.netkit import LiveServer
from tests.orders.conftest import WORLD_KEY
from tests.orders.sealedkit import Console, make_sealed_world, public_app
from verify_api.order_list import OrderFilterError, list_orders


@pytest.fixture
def sw(world, tmp_path, sqlite_sessions, sqlite_template):
    s = make_sealed_world(world, tmp_path, sqlite_sessions, tmp_path / "index-sqlite.db", sqlite_template)
    with LiveServer(public_app(s)) as server:
        s.server = server
        yield s


def by_id(rows: list[dict]) -> dict[int, dict]:
    return {r["order_id"]: r for r in rows}


def test_order_list_shows_status_names_amounts_products_dates_and_filters(sw, tmp_path, monkeypatch, capsys):
    sku = "GC-LIST-" + secrets.token_hex(3).upper()
    minted = sw.mint(4, sku=sku, face_value="25.00")
    deadline = sw.env.now() + 2 * DAY
    confirmed = sw.open(minted.product_id, 2, deadline=deadline)
    delivered = sw.open(minted.product_id, 1, who="buyer2")
    funded = sw.open(minted.product_id, 1, supplier="issuer2")
    sw.deliver_sealed(confirmed, minted, [(0, 2)])
    sw.escrow("buyer").confirm(confirmed)
    sw.deliver_sealed(delivered, minted, [(2, 1)])
    mine = {confirmed, delivered, funded}

    cli = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    cli.as_buyer(sw)
    rows = json.loads(cli.ok("order", "list", "--buyer", "me", "--json").out)
    assert {r["buyer"] for r in rows} == {sw.world.addr("buyer")}
    got = by_id(rows)
    assert confirmed in got and funded in got and delivered not in got
    row = got[confirmed]
    assert row["status"] == "confirmed" and row["quantity"] == 2 and row["supplier"] == sw.world.addr("supplier")
    assert row["amount"]["amount"] == "5.00" and row["amount"]["units"] == "5000000"
    assert row["product"] == {"sku": sku, "face_value": "25.00", "currency": "USD"}
    assert row["product_id"] == minted.product_id
    assert row["delivery_deadline"] == deadline
    assert row["deadline_date"] == dt.datetime.fromtimestamp(deadline, dt.UTC).strftime("%Y-%m-%d")
    assert got[funded]["status"] == "funded" and got[funded]["supplier"] == sw.world.addr("issuer2")

    to_issuer2 = json.loads(cli.ok("order", "list", "--supplier", sw.world.addr("issuer2"), "--json").out)
    assert {r["supplier"] for r in to_issuer2} == {sw.world.addr("issuer2")}
    assert set(by_id(to_issuer2)) & mine == {funded}

    in_delivery = json.loads(cli.ok("order", "list", "--status", "DELIVERED", "--json").out)
    assert {r["status"] for r in in_delivery} == {"delivered"}
    assert set(by_id(in_delivery)) & mine == {delivered}
    both = json.loads(cli.ok("order", "list", "--buyer", sw.world.addr("buyer2"), "--status", "delivered",
                             "--json").out)
    assert set(by_id(both)) & mine == {delivered}

    text = cli.ok("order", "list", "--buyer", "me", "--status", "confirmed").out
    line = next(ln for ln in text.splitlines() if ln.split()[0] == str(confirmed))
    assert "confirmed" in line and sku in line and "5.00" in line and row["deadline_date"] in line

    cli.fails("order", "list", "--status", "shipped", match="not an order status")
    cli.fails("order", "list", "--buyer", "0x12", match="--buyer")


def test_list_orders_from_a_block_on_reads_only_the_chain(sw):
    start = sw.env.admin.block_number() + 1
    minted = sw.mint(2, sku="GC-LIST-" + secrets.token_hex(3).upper())
    oid = sw.open(minted.product_id, 1)
    rows = list_orders(sw.escrow("stranger"), sw.registry("stranger"), from_block=start)
    assert [(r.order_id, r.status) for r in rows] == [(oid, "funded")]
    sw.deliver_sealed(oid, minted, [(1, 1)])
    assert [r.status for r in list_orders(sw.escrow("stranger"), None, from_block=start)] == ["delivered"]
    assert list_orders(sw.escrow("stranger"), None, from_block=start, status="cancelled") == []
    with pytest.raises(OrderFilterError):
        list_orders(sw.escrow("stranger"), None, status="none")
