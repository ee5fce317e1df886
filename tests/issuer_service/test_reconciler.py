"""The supplier's service reconciles by itself: a redemption it answered 200 and the chain then lost (a node
crash or a reorg, here a revert) is marked on chain again by the service's own reconcile pass."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from issuer.service.reconciler import Reconciler


def test_a_redemption_the_chain_lost_is_redone_by_the_service(world):
    key = world.api_key()
    serial, code = world.card()
    app = world.app(reconcile_interval=0)  # no timer: the pass is run by hand below
    with TestClient(app, base_url="http://testserver") as client:
        snap = world.chain.snapshot()
        r = client.post(f"/v1/cards/{serial}/redeem", json={"code": code}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert world.is_redeemed_on_chain(serial)
        world.chain.revert(snap)  # the chain loses the redemption (as a node crash or a reorg would)
        world.registry.client._next_nonce = None
        assert not world.is_redeemed_on_chain(serial)
        reconciler = app.state.reconciler
        assert reconciler.run_once()
        assert world.is_redeemed_on_chain(serial), reconciler.last_report
        assert reconciler.last_report.consistent and reconciler.passes == 1
        # redone once: a second pass finds nothing to do
        assert reconciler.run_once() and world.is_redeemed_on_chain(serial)
        assert all(f.status == "ok" for f in reconciler.last_report.findings)


def test_one_process_reconciles_at_a_time(tmp_path):
    lock = tmp_path / "reconcile.lock"
    entered, release = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        release.wait(10)

    first = Reconciler(slow, 0, lock)
    t = threading.Thread(target=first.run_once)
    t.start()
    assert entered.wait(10)
    try:
        assert Reconciler(lambda: None, 0, lock).run_once() is False  # another process holds the lock: skip
    finally:
        release.set()
        t.join(10)
    assert first.passes == 1
    assert Reconciler(lambda: None, 0, lock).run_once() is True


def test_a_failed_pass_is_reported_and_tried_again_later(tmp_path):
    def down() -> None:
        raise ConnectionError("the node does not answer")

    r = Reconciler(down, 0, tmp_path / "reconcile.lock")
    assert r.run_once() and r.passes == 0 and "ConnectionError" in r.last_error
