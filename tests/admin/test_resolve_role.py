"""`cardproof order resolve` by an account that is no arbiter names the arbiters (chain/reverts.py), as every
role-gated command does; the order stays disputed. Reuses the order world of tests/orders/test_orders_cli.py."""

from __future__ import annotations

from chain.escrow import ARBITER_ROLE, OrderStatus
from tests.orders.test_orders_cli import as_buyer, open_order, platform  # noqa: F401 - `platform` is a fixture


def test_resolve_by_a_non_arbiter_names_the_arbiters(cli, platform):  # noqa: F811 - the imported fixture
    p = platform
    open_order(cli, p, quantity=2, price="10")
    cli.ok("order", "deliver", "1", "--batch", p.batch(), "--range", "0:2")
    assert as_buyer(cli, "order", "dispute", "1", "--json").json["status"] == "disputed"
    block = p.admin.block_number()
    failed = as_buyer(cli, "order", "resolve", "1", "--buyer-amount", "20", "--supplier-amount", "0")
    assert failed.rc == 1 and failed.out == ""
    assert failed.err == (f"cardproof: {p.buyer} is not an arbiter of the escrow {p.escrow.address}: run this as one "
                          f"of the arbiters {p.admin.address} (its deployer), {p.arbiter}\n")
    assert ARBITER_ROLE.hex() not in failed.err
    assert p.admin.block_number() == block and p.escrow.order(1).status == OrderStatus.DISPUTED
