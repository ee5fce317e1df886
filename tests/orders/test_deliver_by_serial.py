"""`cardproof order deliver ORDER --serials ... | --serials-from FILE | --auto` (issuer/delivery_pick.py): cards
chosen by serial (mapped through the supplier's database, not an exported CSV) or picked from stock by the node's
own picker, reserved as the node reserves them; every refusal is one line with nothing sent.

Runs on both chains (the package's ``world``); the supplier's database is SQLite, the public service runs on a
loopback port (tests/orders/sealedkit.py)."""

from __future__ import annotations

import csv
import json
import secrets

import pytest
from sqlalchemy import select

from chain.escrow import OrderStatus
from issuer.core.serial import format_serial, new_serial_value, parse_serial
from issuer.delivery_seal import stored_delivery
from issuer.node import NodeConfig
from issuer.node.fulfil import Fulfiller
from issuer.node.stock import Stock
from issuer.node.watcher import OrderWatcher
from issuer.storage.models import Batch, Card, NodeOrder
from tests.netkit import LiveServer
from tests.orders.conftest import WORLD_KEY
from tests.orders.sealedkit import Console, make_sealed_world, public_app
from verify_api.order_receive import receive


@pytest.fixture
def sw(world, tmp_path, sqlite_sessions, sqlite_template):
    s = make_sealed_world(world, tmp_path, sqlite_sessions, tmp_path / "index-sqlite.db", sqlite_template)
    with LiveServer(public_app(s)) as server:
        s.server = server
        yield s


@pytest.fixture
def cli(sw, tmp_path, monkeypatch, capsys) -> Console:
    c = Console(sw, monkeypatch, capsys, tmp_path / "cli-home", WORLD_KEY)
    c.as_supplier(sw)
    return c


def sku() -> str:
    """A product of the test's own (the package's escrow world is shared: orders of other tests stay open)."""
    return "GC-PICK-" + secrets.token_hex(3).upper()


def serials_of(sw, minted) -> list[str]:
    with sw.sessions() as s:
        stored = s.scalars(select(Card.serial).join(Batch, Card.batch_pk == Batch.id)
                           .where(Batch.batch_id == minted.hex).order_by(Card.index)).all()
    return [format_serial(parse_serial(x)) for x in stored]


def delivered(sw, order_id: int) -> tuple[str, list[int]]:
    batch_id, ranges = sw.escrow().delivery(order_id)
    return "0x" + batch_id.hex(), [i for r in ranges for i in range(r.start, r.start + r.length)]


def nothing_sent(sw, order_id: int) -> None:
    assert sw.escrow().order(order_id).status == OrderStatus.FUNDED
    with sw.sessions() as s:
        assert stored_delivery(s, sw.env.admin.chain_id, sw.world.escrow_address, order_id) is None


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_deliver_by_serials_buyer_receives_and_every_check_passes(sw, cli, tmp_path):
    minted = sw.mint(6, sku=sku())
    serials = serials_of(sw, minted)
    oid = sw.open(minted.product_id, 3)
    listing = tmp_path / "serials.txt"
    listing.write_text(f"# picked by hand\n{serials[2]}\n\n", encoding="utf-8")
    typed = serials[4].lower().replace("-", "")  # normalized as everywhere
    body = json.loads(cli.ok("order", "deliver", oid, "--serials", f"{typed}, {serials[1]}", "--serials-from",
                             listing, "--json").out)
    assert body["batch_id"] == minted.hex
    assert body["ranges"] == [{"start": 1, "length": 2}, {"start": 4, "length": 1}]
    assert body["uploaded"] is True
    order = sw.escrow().order(oid)
    assert order.status == OrderStatus.DELIVERED and "0x" + order.sealed_hash.hex() == body["sealed_hash"]
    assert delivered(sw, oid) == (minted.hex, [1, 2, 4])

    again = json.loads(cli.ok("order", "deliver", oid, "--serials", f"{serials[1]},{serials[2]},{serials[4]}",
                              "--json").out)  # a rerun settles, never sends twice
    assert again["tx"] == body["tx"] and again["sealed_hash"] == body["sealed_hash"]

    cli.as_buyer(sw)
    out = tmp_path / "cards.csv"
    got = json.loads(cli.ok("order", "receive", oid, "--out", out, "--json").out)
    assert got["ok"] is True and got["cards"] == 3 and got["passed"] == 3
    rows = read_csv(out)
    assert [(int(r["index"]), r["code"]) for r in rows] == [(i, minted.codes[i]) for i in (1, 2, 4)]
    assert {r["ok"] for r in rows} == {"yes"}


def test_a_csv_with_a_serial_column_is_read_by_serial_not_by_its_index(sw, cli, tmp_path):
    minted = sw.mint(4, sku=sku())
    serials = serials_of(sw, minted)
    oid = sw.open(minted.product_id, 2)
    sheet = tmp_path / "cards.csv"  # an index column that lies: the database says which card a serial is
    sheet.write_text(f"index,serial\n0,{serials[3]}\n1,{serials[2]}\n", encoding="utf-8")
    cli.ok("order", "deliver", oid, "--serials-from", sheet, "--json")
    assert delivered(sw, oid) == (minted.hex, [2, 3])


def test_serials_of_two_batches_unknown_given_twice_or_not_available_are_refused_with_nothing_sent(sw, cli,
                                                                                                    tmp_path):
    from issuer.revocation import parse_reason, revoke_serials

    product = sku()
    a, b = sw.mint(5, sku=product), sw.mint(3, sku=product)
    sa_, sb = serials_of(sw, a), serials_of(sw, b)
    first = sw.open(a.product_id, 1)
    cli.ok("order", "deliver", first, "--serials", sa_[0])
    revoke_serials(sw.sessions, sw.registry("supplier"), [sa_[4]], parse_reason("leaked"))
    oid = sw.open(a.product_id, 2)
    cases = [
        ((sa_[1] + "," + sb[1]), "2 batches"),
        ((sa_[1] + "," + format_serial(new_serial_value())), "no card with serial"),
        ((sa_[0] + "," + sa_[1]), "delivered or reserved for another order"),
        ((sa_[1] + "," + sa_[4]), "is revoked"),
        ((sa_[1] + "," + sa_[1].lower()), "given twice"),
        ((sa_[1] + ",ABCD-EFGH"), "serial #2 of those given is not a serial"),
        (sa_[1], "is for 2 cards; 1 serials given"),
    ]
    for listed, why in cases:
        cli.fails("order", "deliver", oid, "--serials", listed, match=why)
        nothing_sent(sw, oid)
    cli.fails("order", "deliver", oid, "--serials", sa_[1], "--auto", match="one way")
    cli.fails("order", "deliver", oid, "--serials-from", "/nonexistent/serials.txt", match="cannot read")
    codes = tmp_path / "codes.txt"  # codes given by mistake: refused without echoing one
    codes.write_text("\n".join(a.codes[:2]) + "\n", encoding="utf-8")
    r = cli.fails("order", "deliver", oid, "--serials-from", codes, match="serial #1 of those given is not a serial")
    assert not any(code in r.err for code in a.codes)
    nothing_sent(sw, oid)
    assert delivered(sw, first) == (a.hex, [0])

    cli.ok("order", "deliver", oid, "--serials", f"{sa_[2]},{sa_[1]}")
    assert delivered(sw, oid) == (a.hex, [1, 2])


def test_auto_picks_what_the_node_would_and_never_a_card_the_node_or_a_manual_delivery_gave(sw, cli, tmp_path):
    minted = sw.mint(8, sku=sku())
    serials = serials_of(sw, minted)
    escrow, registry = sw.escrow("supplier"), sw.registry("supplier")
    by_hand = sw.open(minted.product_id, 2)
    cli.ok("order", "deliver", by_hand, "--serials", f"{serials[2]},{serials[3]}")

    # The node sees an order and picks its cards (not delivered yet: a reservation only).
    start = sw.env.admin.block_number() + 1
    node_order = sw.open(minted.product_id, 2)
    config = NodeConfig(public_urls=(sw.url,), start_block=start, reorg_depth=0)
    watcher = OrderWatcher(sw.sessions, escrow, config)
    fulfiller = Fulfiller(sw.sessions, sw.master_key, escrow, registry, config)

    def node_row(order_id: int) -> int:
        watcher.scan()
        with sw.sessions() as s:
            return s.scalars(select(NodeOrder.id).where(NodeOrder.order_id == str(order_id))).one()

    node_row_id = node_row(node_order)
    assert fulfiller.pick_many([node_row_id]) == {node_row_id: "picked"}

    auto = sw.open(minted.product_id, 3)
    with sw.sessions() as s:  # what the node's picker takes for it now
        expected = Stock(escrow, registry, escrow.client.address, word_ttl=0).pick(
            s, minted.product_id, 0, 3, order=(escrow.address, str(auto)))
    assert expected is not None
    body = json.loads(cli.ok("order", "deliver", auto, "--auto", "--json").out)
    assert body["batch_id"] == minted.hex and [(r["start"], r["length"]) for r in body["ranges"]] == expected.ranges

    assert fulfiller.fulfil(node_row_id).state == "published"
    later = sw.open(minted.product_id, 1)  # the node never takes what the manual delivery reserved
    later_row = node_row(later)
    fulfiller.pick_many([later_row])
    assert fulfiller.fulfil(later_row).state == "published"

    given = {oid: delivered(sw, oid)[1] for oid in (by_hand, node_order, auto, later)}
    assert given[by_hand] == [2, 3]
    cards = [i for got in given.values() for i in got]
    assert len(cards) == len(set(cards)) == 8  # every card once, none twice

    received = receive(sw.escrow("buyer"), sw.registry("buyer"), auto, sw.key("buyer"), public_url=sw.url,
                       out=tmp_path / "auto.csv")
    assert received.report.ok and sorted(c.index for c in received.payload.cards) == given[auto]

    empty = sw.open(minted.product_id, 1)
    cli.fails("order", "deliver", empty, "--auto", match="no single batch holds 1 available cards")
    nothing_sent(sw, empty)


def test_the_pick_is_reserved_at_once_a_later_node_pick_avoids_it_and_the_delivery_reuses_it(sw, cli):
    from issuer.delivery_pick import reserve_delivery
    from issuer.node.stock import parse_ranges

    minted = sw.mint(4, sku=sku())
    escrow, registry = sw.escrow("supplier"), sw.registry("supplier")
    mine = sw.open(minted.product_id, 2)
    chosen = reserve_delivery(sw.sessions, sw.master_key, escrow, registry, mine, auto=True)
    assert chosen.batch_id == minted.batch_id and chosen.ranges == [(0, 2)] and not chosen.reused
    with sw.sessions() as s:  # committed with the pick: the sealed delivery is the reservation
        row = stored_delivery(s, sw.env.admin.chain_id, sw.world.escrow_address, mine)
        assert row is not None and parse_ranges(row.ranges) == [(0, 2)]
    assert sw.escrow().order(mine).status == OrderStatus.FUNDED  # reserved, not sent

    start = sw.env.admin.block_number() + 1
    theirs = sw.open(minted.product_id, 2)
    config = NodeConfig(start_block=start, reorg_depth=0)
    OrderWatcher(sw.sessions, escrow, config).scan()
    with sw.sessions() as s:
        row_id = s.scalars(select(NodeOrder.id).where(NodeOrder.order_id == str(theirs))).one()
    Fulfiller(sw.sessions, sw.master_key, escrow, registry, config).pick_many([row_id])
    with sw.sessions() as s:
        assert parse_ranges(s.get(NodeOrder, row_id).ranges) == [(2, 2)]

    again = reserve_delivery(sw.sessions, sw.master_key, escrow, registry, mine, auto=True)
    assert again.ranges == [(0, 2)] and again.reused
    cli.ok("order", "deliver", mine, "--auto")
    assert delivered(sw, mine) == (minted.hex, [0, 1])
    serials = serials_of(sw, minted)
    cli.fails("order", "deliver", theirs, "--serials", f"{serials[0]},{serials[1]}",
              match="already picked other cards for order")
    nothing_sent(sw, theirs)
    cli.ok("order", "deliver", theirs, "--serials", f"{serials[3]},{serials[2]}")  # the node's own pick
    assert delivered(sw, theirs) == (minted.hex, [2, 3])


def test_on_postgresql_the_pick_and_its_sealed_delivery_commit_together(sw, pg_database_url):
    """The same reservation on the supplier's PostgreSQL database (pg_advisory_xact_lock, the seal joined to the
    guarded transaction); a refused pick leaves nothing behind."""
    from dataclasses import replace

    from issuer.delivery_pick import PickRefused, reserve_delivery
    from issuer.node.stock import parse_ranges
    from issuer.storage.db import make_engine, session_factory, upgrade
    from tests import dbutil

    url = dbutil.create_schema(pg_database_url, prefix="pick")
    upgrade(url)
    engine = make_engine(url)
    try:
        pg = replace(sw, sessions=session_factory(engine), minted=[])
        minted = pg.mint(3, sku=sku())
        serials = serials_of(pg, minted)
        escrow, registry = pg.escrow("supplier"), pg.registry("supplier")
        first, second = pg.open(minted.product_id, 2), pg.open(minted.product_id, 2)
        chosen = reserve_delivery(pg.sessions, pg.master_key, escrow, registry, first,
                                  serials=[serials[2], serials[0]])
        assert chosen.ranges == [(0, 1), (2, 1)]
        with pg.sessions() as s:
            row = stored_delivery(s, pg.env.admin.chain_id, pg.world.escrow_address, first)
            assert row is not None and parse_ranges(row.ranges) == [(0, 1), (2, 1)]
        with pytest.raises(PickRefused, match="no single batch holds 2"):
            reserve_delivery(pg.sessions, pg.master_key, escrow, registry, second, auto=True)
        with pg.sessions() as s:
            assert stored_delivery(s, pg.env.admin.chain_id, pg.world.escrow_address, second) is None
        result = pg.deliver_sealed(first, minted, chosen.ranges)
        assert result.uploaded and delivered(pg, first) == (minted.hex, [0, 2])
        received = receive(pg.escrow("buyer"), pg.registry("buyer"), first, pg.key("buyer"), public_url=pg.url)
        assert received.report.ok
    finally:
        engine.dispose()
        dbutil.drop_schema(url)
