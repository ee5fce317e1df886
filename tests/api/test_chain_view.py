"""ChainView: word-level caching kept current by events, stale mode, never-read batches."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from issuer.revocation import RevokeReason, revoke_serials
from tests.api.world import flaky_registry, mint
from verify_api.chain_view import MISSING, ChainView


def _bid(world, name="main") -> bytes:
    return bytes.fromhex(world.batches[name].batch_id[2:])


def _index(world, serial: str) -> int:
    from verify_api.lookup import find_card

    with world.public_sessions() as s:  # the published card, as the public service reads it
        return find_card(s, serial.replace("-", "")).index


def test_events_update_cached_words_without_reading_again(world):
    view = ChainView(world.registry, ttl=0.1)
    serial, _ = world.card()
    idx = _index(world, serial)
    assert view.bits(_bid(world), idx) == (False, False)
    reads = view.reads
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(1))
    assert view.peek_bits(_bid(world), idx) == (False, False)  # not polled yet
    view.poll()
    assert view.peek_bits(_bid(world), idx) == (True, False)
    assert view.reads == reads  # the CardsRevoked event updated the cached word


def test_words_are_read_at_the_polled_block_and_reconciled(world):
    view = ChainView(world.registry, ttl=0.1)
    view.poll()
    serial, _ = world.card()
    idx = _index(world, serial)
    # A revocation mined after the last poll: a read pinned to the polled head does not see it ...
    revoke_serials(world.sessions, world.registry, [serial], RevokeReason(2))
    assert view.bits(_bid(world), idx) == (False, False)
    # ... and the next poll brings it in.
    view.poll()
    assert view.bits(_bid(world), idx) == (True, False)


def test_status_live_then_stale_then_live(world):
    reg, provider = flaky_registry(world)
    view = ChainView(reg, ttl=0.05, stale_after=30)
    assert view.status().state == "unavailable"
    head = view.poll()
    assert head is not None and view.status().state == "live" and view.status().last_block == head
    batch = view.batch(_bid(world))
    assert batch.anchored
    provider.down = True
    assert view.poll() is None
    st = view.status()
    assert st.state == "stale" and st.last_block == head and "ConnectionError" in (st.error or "")
    # Keeps answering from what it read.
    assert view.batch(_bid(world)) == batch
    # Never read: nothing to answer with.
    assert view.batch(b"\x01" * 32) is None
    assert view.bits(b"\x01" * 32, 0) == (None, None)
    provider.down = False
    assert view.poll() is not None and view.status().state == "live"


def test_chain_going_back_clears_the_cache(world):
    view = ChainView(world.registry, ttl=0.05)
    snap = world.tester.take_snapshot()
    world.tester.mine_blocks(3)
    view.poll()
    view.batch(_bid(world))
    assert view.peek_batch(_bid(world)) is not MISSING
    world.tester.revert_to_snapshot(snap)
    view.poll()
    assert view.peek_batch(_bid(world)) is MISSING


def test_api_answers_stale_with_last_block_and_never_authentic_unseen(world):
    reg, provider = flaky_registry(world)
    app = world.app(registry=reg, api=world.api_settings(chain_ttl=0.05, chain_stale_after=30))
    serial, _ = world.card()
    with TestClient(app) as client:
        live = client.get(f"/v1/cards/{serial}").json()
        assert live["verdict"] == "authentic" and live["chain"]["state"] == "live"
        # A batch anchored while the API cannot see the chain.
        provider.down = True
        late = mint(world, "late", 3)
        time.sleep(0.2)
        stale = client.get(f"/v1/cards/{serial}").json()
        assert stale["chain"]["state"] == "stale"
        assert stale["chain"]["last_block"] == live["chain"]["last_block"]
        assert stale["verdict"] == "authentic"  # from what it last read, and it says so
        unseen = client.get(f"/v1/cards/{late.cards[0][0]}").json()
        assert unseen["verdict"] == "not_yet_anchored" and unseen["reason"] == "chain_unavailable"
        assert unseen["chain"]["state"] == "stale"
        page = client.get(f"/c/{serial}")
        assert page.status_code == 200 and str(stale["chain"]["last_block"]) in page.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["chain"].startswith("unreachable")
        provider.down = False
        deadline = time.monotonic() + 5
        while client.get(f"/v1/cards/{late.cards[0][0]}").json()["verdict"] != "authentic":
            assert time.monotonic() < deadline, "the API did not recover"
            time.sleep(0.05)
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("state", ["stale"])
def test_readyz_reports_database(world, state):
    with TestClient(world.app()) as client:
        body = client.get("/readyz").json()
    assert body["database"] == "ok" and body["status"] == "ready"


@pytest.mark.anvil
def test_prefetch_reads_all_words_in_json_rpc_batches(_anvil_session):
    env = _anvil_session
    reg = env.registry("issuer")
    bid = bytes.fromhex(env.address("issuer")[2:]) + b"\x51" * 12
    reg.anchor_batch(bid, b"\x11" * 32, 1000, b"\x22" * 32)
    reg.revoke_cards(bid, [3, 700], 1)
    reg.mark_redeemed(bid, [5])
    view = ChainView(reg, ttl=0.05)
    view.prefetch_min_cards = 1
    view.poll()
    assert view.batch(bid).card_count == 1000
    view._run_prefetch()  # what the poller thread does after a poll
    reads = view.reads
    assert reads >= 8  # 4 words x 2 bitmaps, in one JSON-RPC batch
    assert view.peek_bits(bid, 3) == (True, False) and view.peek_bits(bid, 700) == (True, False)
    assert view.peek_bits(bid, 5) == (False, True) and view.peek_bits(bid, 999) == (False, False)
    reg.revoke_cards(bid, [999], 2)
    view.poll()
    assert view.bits(bid, 999) == (True, False) and view.reads == reads  # from the event
