"""Repeated `order deliver` and `order confirm` behave like `anchor` (issue 12): exit 0 saying "already", sending
nothing; refused (exit 1) only when the repeat conflicts, as other cards for a delivered order."""

from __future__ import annotations

from eth_account import Account

from tests.orders.test_orders_cli import BUYER_KEY, as_buyer, open_order, platform  # noqa: F401 - the fixture


def _sent(p, address: str) -> int:
    return p.admin.w3.eth.get_transaction_count(address)


def test_deliver_twice_says_already_and_other_cards_are_refused(cli, platform):  # noqa: F811
    p = platform
    open_order(cli, p, quantity=2)
    batch = p.batch(cards=4)
    first = cli.ok("order", "deliver", "1", "--batch", batch, "--range", "0:2", "--no-upload", "--json").json
    assert "already" not in first
    nonce = _sent(p, p.supplier)
    again = cli.ok("order", "deliver", "1", "--batch", batch, "--range", "0:2", "--no-upload")
    assert again.out.startswith("order 1 already delivered: 2 cards") and "nothing sent" in again.out
    data = cli.ok("order", "deliver", "1", "--batch", batch, "--range", "0:2", "--no-upload", "--json").json
    assert data["already"] is True and data["tx"] == first["tx"] and data["sealed_hash"] == first["sealed_hash"]
    assert _sent(p, p.supplier) == nonce
    r = cli.fails("order", "deliver", "1", "--batch", batch, "--range", "2:2", "--no-upload", rc=1)
    assert "other cards" in r.err
    assert _sent(p, p.supplier) == nonce
    assert p.escrow.order(1).status.name == "DELIVERED"


def test_confirm_twice_says_already_and_sends_nothing(cli, platform):  # noqa: F811
    p = platform
    open_order(cli, p, quantity=1)
    cli.ok("order", "deliver", "1", "--batch", p.batch(cards=2), "--range", "0:1", "--no-upload")
    buyer = Account.from_key(BUYER_KEY).address
    first = as_buyer(cli, "order", "confirm", "1", "--json")
    assert first.rc == 0 and first.json["status"] == "confirmed" and "already" not in first.json
    nonce = _sent(p, buyer)
    again = as_buyer(cli, "order", "confirm", "1")
    assert again.rc == 0 and again.err == "" and again.out == "order 1 already confirmed; nothing sent\n"
    data = as_buyer(cli, "order", "confirm", "1", "--json")
    assert data.rc == 0 and data.json == {"order_id": 1, "tx": None, "status": "confirmed", "already": True}
    assert _sent(p, buyer) == nonce
    # Not the buyer's repeat: the chain answers (only the buyer confirms), one line, exit 1.
    r = cli("order", "confirm", "1")
    assert r.rc == 1 and r.out == "" and r.err.count("\n") == 1 and "already" not in r.err
    # A released order is no confirmed one: a conflict.
    open_order(cli, p, "--dispute-window", "1h", quantity=1)
    cli.ok("order", "deliver", "2", "--batch", p.batch(cards=2), "--range", "0:1", "--no-upload")
    p.travel(3_700)
    cli.ok("order", "release", "2")
    r = as_buyer(cli, "order", "confirm", "2")
    assert r.rc == 1 and r.out == "" and "already" not in r.err
