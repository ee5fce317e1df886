"""The issuer's acts on sold cards, made visible (verify_api/registry_acts.py): revocations and redemptions of an
order's cards in its timeline (GET /v1/orders/{id}, /o/{id}) and the issuer's track record
(GET /v1/issuers/{address} ``track_record``), split into "while the order was open" and "after the sale".

On both chains (eth-tester, anvil) and both databases through the package's ``world`` and ``sessions``
fixtures; over HTTP on the order API's eth-tester world (tests/orders/test_orders_api.py)."""

from __future__ import annotations

import re

import pytest

from issuer.revocation import RevokeReason
from tests.orders.conftest import make_indexer
from tests.orders.test_orders_api import api, ow  # noqa: F401 - the order API's world, built again for this module
from verify_api.indexer import Indexer, followed_contracts
from verify_api.order_view import OrderView
from verify_api.registry_acts import REASONS, Act, Delivery, track_record, word_bits

ZERO_RECORD = {"revoked_in_open_orders": 0, "redeemed_in_open_orders": 0, "revoked_after_sale": 0,
               "redeemed_after_sale": 0}


def steps(body: dict) -> list[str]:
    return [s["step"] for s in body["timeline"]]


def acts(body: dict) -> list[dict]:
    return [s for s in body["timeline"] if s["informational"]]


def record(world, sessions, who: str = "supplier") -> dict:
    with sessions() as s:
        return track_record(s, world.env.admin.chain_id, world.addr(who))


# ---------------------------------------------------------------------------------------------- both chains


def test_card_revoked_while_open_is_a_timeline_step_and_counted(world, sessions):
    order_id, batch, _ = world.delivered_order(quantity=3)  # cards 0, 1, 2
    reg = world.env.registry("supplier")
    reg.revoke_cards(batch, [1], int(RevokeReason.FRAUD))
    # Acts on cards in no order: the same batch's cards 500 and 501, a whole other batch.
    reg.revoke_cards(batch, [500], int(RevokeReason.LEAKED))
    reg.mark_redeemed(batch, [501])
    reg.revoke_batch(world.anchor(), int(RevokeReason.RECALLED))
    make_indexer(world, sessions).run_once()

    body = OrderView(world.escrow(), sessions).answer(order_id)
    assert body["status"] == "delivered"
    assert steps(body) == ["opened", "funded", "delivered", "revoked"]
    revoked = body["timeline"][-1]
    assert revoked["informational"] is True and revoked["event"] == "CardsRevoked"
    assert revoked["contract"] == "CardRegistry" and re.fullmatch(r"0x[0-9a-f]{64}", revoked["tx"])
    assert revoked["details"] == {"batch_id": "0x" + batch.hex(), "cards": 1, "indices": [1], "whole_batch": False,
                                  "phase": "while_order_open", "while_order_open": True, "reason": 2,
                                  "reason_name": "fraud"}
    assert revoked["time"] == world.env.admin.w3.eth.get_block(revoked["block"])["timestamp"]
    assert body["indexer"]["complete"] is True and body["indexer"]["missing"] == []
    assert not any(s["informational"] for s in body["timeline"][:3])

    rec = record(world, sessions)
    assert rec == {**ZERO_RECORD, "revoked_in_open_orders": 1, "orders": 1, "cards_sold": 3,
                   "source": "chain events", "chain_id": world.env.admin.chain_id,
                   "indexed_to_block": world.env.admin.block_number()}
    # Another issuer (the buyer never issued anything) has sold nothing.
    assert record(world, sessions, "buyer") == {**rec, **ZERO_RECORD, "orders": 0, "cards_sold": 0}


def test_redeemed_after_confirmation_counts_as_after_sale(world, sessions):
    order_id, batch, _ = world.delivered_order(quantity=2)  # cards 0, 1
    world.escrow("buyer").confirm(order_id)
    world.env.registry("supplier").mark_redeemed(batch, [0, 7])  # 7: in no order
    make_indexer(world, sessions).run_once()

    body = OrderView(world.escrow(), sessions).answer(order_id)
    assert steps(body) == ["opened", "funded", "delivered", "confirmed", "redeemed"]
    redeemed = body["timeline"][-1]
    assert redeemed["event"] == "CardsRedeemed" and redeemed["details"]["cards"] == 1
    assert redeemed["details"]["indices"] == [0] and redeemed["details"]["by"] == world.addr("supplier")
    assert redeemed["details"]["phase"] == "after_sale" and redeemed["details"]["while_order_open"] is False
    assert body["indexer"]["complete"] is True

    rec = record(world, sessions)
    assert {k: rec[k] for k in ZERO_RECORD} == {**ZERO_RECORD, "redeemed_after_sale": 1}
    assert rec["cards_sold"] == 2 and rec["orders"] == 1


def test_batch_revocation_and_redemption_while_open_count_each_card_once(world, sessions):
    first, batch, _ = world.delivered_order(quantity=4)  # cards 0..3
    second, _, _ = world.delivered_order(quantity=2, batch_id=batch, start=256)  # cards 256, 257 (bitmap word 1)
    reg = world.env.registry("supplier")
    reg.mark_redeemed(batch, [257])  # before the buyer confirmed: suspicious
    reg.revoke_cards(batch, [0, 300], int(RevokeReason.DAMAGED))  # 300: in no order
    reg.revoke_batch(batch, int(RevokeReason.RECALLED))
    make_indexer(world, sessions).run_once()

    view = OrderView(world.escrow(), sessions)
    one = acts(view.answer(first))
    assert [(a["step"], a["details"]["cards"], a["details"]["whole_batch"]) for a in one] == [
        ("revoked", 1, False), ("revoked", 4, True)]
    assert one[1]["event"] == "BatchRevoked" and one[1]["details"]["indices"] is None
    assert one[1]["details"]["reason_name"] == "recalled"
    two = acts(view.answer(second))
    assert [(a["step"], a["details"]["cards"], a["details"]["indices"]) for a in two] == [
        ("redeemed", 1, [257]), ("revoked", 2, None)]
    assert {a["details"]["phase"] for a in one + two} == {"while_order_open"}

    rec = record(world, sessions)
    # card 0 revoked twice counts once; 300 is in no order
    assert {k: rec[k] for k in ZERO_RECORD} == {**ZERO_RECORD, "revoked_in_open_orders": 6,
                                                "redeemed_in_open_orders": 1}
    assert rec["cards_sold"] == 6 and rec["orders"] == 2


def test_nothing_indexed_is_unknown_not_zero(world, sessions):
    rec = record(world, sessions)
    assert rec["indexed_to_block"] is None and rec["cards_sold"] is None and rec["revoked_after_sale"] is None
    with sessions() as s:
        assert track_record(s, None, world.addr("supplier"))["orders"] is None


# ---------------------------------------------------------------------------------------------- HTTP


def test_issuer_track_record_and_order_page_over_http(api, ow):  # noqa: F811
    batch = ow.ids["batch"]
    # In build_orders one card of the "confirmed" order was revoked before the buyer confirmed. Now, after the
    # sales: its other card is redeemed and a card of the "released" order revoked; cards 97 and 99 are in no order.
    _, ranges = ow.escrow.delivery(ow.ids["confirmed"])
    ow.registry.mark_redeemed(batch, [ranges[0].start])
    _, ranges = ow.escrow.delivery(ow.ids["released"])
    ow.registry.revoke_cards(batch, [ranges[0].start], int(RevokeReason.LEAKED))
    ow.registry.revoke_cards(batch, [99], int(RevokeReason.LEAKED))
    ow.registry.mark_redeemed(batch, [97])
    Indexer(ow.admin, ow.sessions, followed_contracts(ow.admin, ow.home)).run_once()

    r = api.get(f"/v1/issuers/{ow.admin.address.lower()}")
    assert r.status_code == 200, r.text
    rec = r.json()["track_record"]
    assert rec == {"orders": 4, "cards_sold": 8, "revoked_in_open_orders": 1, "redeemed_in_open_orders": 0,
                   "revoked_after_sale": 1, "redeemed_after_sale": 1, "source": "chain events",
                   "chain_id": ow.admin.chain_id, "indexed_to_block": ow.admin.block_number()}

    oid = ow.ids["confirmed"]
    body = api.get(f"/v1/orders/{oid}").json()
    assert steps(body) == ["opened", "funded", "delivered", "revoked", "confirmed", "redeemed"]
    assert [a["details"]["phase"] for a in acts(body)] == ["while_order_open", "after_sale"]
    page = api.get(f"/o/{oid}", headers={"Accept-Language": "en"}).text
    assert re.findall(r'data-step="(\w+)"', page) == steps(body)
    assert re.findall(r'data-phase="(\w+)"', page) == ["while_order_open", "after_sale"]
    assert "Cards revoked by the issuer" in page and "Cards marked redeemed by the issuer" in page
    assert "this is the normal use of a card" in page
    released = api.get(f"/o/{ow.ids['released']}", headers={"Accept-Language": "en"}).text
    assert 'data-phase="after_sale"' in released and "codes leaked" in released
    assert "the escrow does not refund them" in released

    doc = api.get("/openapi.json").json()["components"]["schemas"]["TrackRecord"]["properties"]
    assert "normal use" in doc["redeemed_after_sale"]["description"]
    assert "suspicious" in doc["redeemed_in_open_orders"]["description"]
    assert "refund risk" in doc["revoked_after_sale"]["description"]


@pytest.mark.parametrize("lang", ["ar", "zh-CN", "th"])
def test_order_page_acts_in_other_languages(api, ow, lang):  # noqa: F811
    r = api.get(f"/o/{ow.ids['confirmed']}", headers={"Accept-Language": lang})
    assert r.status_code == 200 and 'data-step="revoked"' in r.text
    assert not re.search(r">\s*order\.[a-z_.]+\s*<", r.text)  # no untranslated key shown


# ---------------------------------------------------------------------------------------------- the arithmetic


class _Row:
    def __init__(self, event: str, args: str, block: int, log_index: int = 0) -> None:
        self.event, self.args, self.block_number, self.log_index = event, args, block, log_index
        self.address, self.batch_id = "0xEscrow", "0x" + "ab" * 32


def test_cards_of_a_range_across_bitmap_words():
    assert word_bits([(250, 10)], 0) == sum(1 << i for i in range(250, 256))
    assert word_bits([(250, 10)], 1) == 0b1111
    assert word_bits([(250, 10)], 2) == 0
    assert word_bits([(0, 1), (3, 2)], 0) == 0b11001
    d = Delivery.of(_Row("OrderDelivered", '{"orderId": 5, "batchId": "0x' + "AB" * 32 + '", "ranges": '
                         '[{"start": 250, "length": 10}]}', 10))
    assert d.batch_id == "0x" + "ab" * 32 and d.cards == 10 and d.order_id == 5
    d.settled = (20, 3)
    assert d.phase((9, 0)) == "before_delivery" and d.phase((10, 1)) == "while_order_open"
    assert d.phase((20, 2)) == "while_order_open" and d.phase((20, 3)) == "after_sale"
    act = Act.of(_Row("CardsRevoked", '{"wordIndex": 1, "mask": 6, "reason": 1}', 11))  # cards 257, 258
    assert d.touched(act) == [257, 258] and d.tally(act) == 2 and d.tally(act) == 0
    whole = Act.of(_Row("BatchRevoked", '{"reason": 3}', 12))
    assert d.count(whole) == 10 and d.tally(whole) == 8 and d.tally(whole) == 0
    redeemed = Act.of(_Row("CardsRedeemed", '{"wordIndex": 0, "mask": ' + str(1 << 255) + ', "by": "0x1"}', 13))
    assert d.tally(redeemed) == 1  # revocations and redemptions are counted apart


def test_reason_names_follow_the_issuer_codes():
    assert REASONS == {int(r): r.name.lower() for r in RevokeReason}
