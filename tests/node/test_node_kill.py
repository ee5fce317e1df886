"""``cardproof issuer node`` as a real process on anvil, SIGKILLed (``CARDPROOF_NODE_CRASH_AT``, the node's test
hook) at every step of a delivery while it fulfils several orders at once, then restarted (a new node in this
process): every order is delivered exactly once and published, none is lost, and no card is in two orders. Two
node processes at once on one database (SQLite, PostgreSQL) never give a card twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from chain.escrow import OrderStatus
from issuer.node.crash import STEPS
from issuer.storage.models import ChainAct, NodeOrder, SealedDelivery
from tests.node.conftest import WORLD_KEY, assert_disjoint, delivered_cards, open_orders
from tests.node.test_node import delivered_events
from tests.orders.sealedkit import record_escrow

pytestmark = pytest.mark.anvil
ROOT = Path(__file__).resolve().parents[2]


def node_env(sw, home: Path, **extra: str) -> dict[str, str]:
    record_escrow(home, sw.world, WORLD_KEY)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CARDPROOF_")},
        "CARDPROOF_HOME": str(home),
        "CARDPROOF_RPC_URL": sw.env.extra["node"].url,
        "CARDPROOF_PRIVATE_KEY": "0x" + sw.key("supplier").hex(),
        "CARDPROOF_DATABASE_URL": sw.sessions.kw["bind"].url.render_as_string(hide_password=False),
        "CARDPROOF_MASTER_KEY": sw.master_key._key.hex(),  # noqa: SLF001 - a test's key
        "CARDPROOF_PUBLIC_URL": sw.url,
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def run_node(env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cardproof", "issuer", "node", "--once"], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_every_step_restart_delivers_each_order_exactly_once(sw, make_node, tmp_path, step):
    m = sw.mint(40, sku="GC-NODE-KILL")
    orders = open_orders(sw, m.product_id, [3, 5, 2, 4])
    home = tmp_path / "node-home"
    killed = run_node(node_env(sw, home, CARDPROOF_NODE_CRASH_AT=step), tmp_path)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    with sw.sessions() as s:
        before = {int(r.order_id): r.state for r in s.scalars(sa.select(NodeOrder))}
    assert before and set(before.values()) != {"published"}, before  # killed mid-way
    for line in killed.stderr.splitlines():  # never a code on the log
        assert all(code not in line for code in m.codes)
    # The restart: a new node (nothing of the dead one's memory; its acts' leases still running).
    node, _ = make_node(sw)
    node.run_once()
    with sw.sessions() as s:
        after = {int(r.order_id): r.state for r in s.scalars(sa.select(NodeOrder))}
        uploaded = {int(r.order_id): r.uploaded_at for r in s.scalars(sa.select(SealedDelivery))}
        acts = [a for a in s.scalars(sa.select(ChainAct).where(ChainAct.kind == "deliver"))]
    assert after == {o: "published" for o in orders}, (before, after)
    assert all(uploaded[o] is not None for o in orders)
    escrow = sw.escrow()
    assert {escrow.order(o).status for o in orders} == {OrderStatus.DELIVERED}
    assert set(delivered_events(sw, orders).values()) == {1}  # each exactly once
    cards = delivered_cards(sw, orders)
    assert [len(cards[o][1]) for o in orders] == [3, 5, 2, 4]
    assert_disjoint(cards)
    assert sorted(acts_order for acts_order in (int(__import__("json").loads(a.payload)["order_id"])
                                                for a in acts)) == sorted(orders)  # one act per order


def test_two_node_processes_at_once_never_give_a_card_twice(any_db_sw, tmp_path):
    """Two `cardproof issuer node` processes on one database and one account (the database-level pick guard:
    SQLite BEGIN IMMEDIATE, PostgreSQL advisory lock): every order delivered once, no card in two orders."""
    sw = any_db_sw
    m = sw.mint(60, sku="GC-NODE-TWO")
    quantities = [1 + i % 4 for i in range(12)]
    orders = open_orders(sw, m.product_id, quantities)
    home = tmp_path / "node-home"
    env = node_env(sw, home)
    procs = [subprocess.Popen([sys.executable, "-m", "cardproof", "issuer", "node", "--once", *extra], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for extra in ((), ("--json",))]
    outs = [p.communicate(timeout=90) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [(o[0][-1000:], o[1][-3000:]) for o in outs]
    summary = json.loads(outs[1][0])
    assert set(summary["orders"]) <= {"seen", "picked", "delivered", "published"}
    assert all(line.startswith("cardproof node: ") for o in outs for line in o[1].splitlines())
    with sw.sessions() as s:
        states = {int(r.order_id): r.state for r in s.scalars(sa.select(NodeOrder))}
    if set(states.values()) != {"published"}:  # one pass each: an order the other process held is finished now
        again = run_node(env, tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
        with sw.sessions() as s:
            states = {int(r.order_id): r.state for r in s.scalars(sa.select(NodeOrder))}
    assert states == {o: "published" for o in orders}
    assert set(delivered_events(sw, orders).values()) == {1}
    cards = delivered_cards(sw, orders)
    assert [len(cards[o][1]) for o in orders] == quantities
    assert_disjoint(cards)
