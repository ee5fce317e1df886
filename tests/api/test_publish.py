"""Publishing a batch: ``PUT /v1/batches/{batch_id}/dump``, on the ASGI app and on a live uvicorn server
(fixture ``api``), plain and gzipped. The chain is the only authentication: a dump is stored only if its root
is the one anchored for that batch id over that many cards; every refusal is a 4xx with a stable code, never a
5xx, and stores nothing. Also: the public service runs with no master key anywhere."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import secrets
import warnings
from dataclasses import replace

import httpx
import pytest

from issuer.core.dump import make_dump
from tests.api.world import anchor_leaves, dump_of, leaves_of, mint

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

_names = itertools.count()


def fresh_batch(world, count: int = 5):
    """A batch minted and anchored but not yet published: its cards are unknown to the public service."""
    return mint(world, f"pub{next(_names)}", count, publish_it=False)


def put_dump(api, batch_id: str, dump, *, gz: bool = False, raw: bytes | None = None) -> httpx.Response:
    body = raw if raw is not None else json.dumps(dump).encode()
    headers = {"content-type": "application/json"}
    if gz:
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    r = api.put(f"/v1/batches/{batch_id}/dump", content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text)
    return r


def error(r: httpx.Response) -> tuple[int, str]:
    body = r.json()
    assert set(body["error"]) == {"code", "message"}
    return r.status_code, body["error"]["code"]


def verdict(api, serial: str) -> dict:
    r = api.get(f"/v1/cards/{serial}")
    assert r.status_code == 200
    return r.json()


def assert_not_published(api, batch) -> None:
    assert api.get(f"/v1/batches/{batch.batch_id}").status_code == 404
    body = verdict(api, batch.cards[0][0])
    assert (body["verdict"], body["reason"]) == ("unknown", "no_such_card")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_good_dump_is_stored_once_and_its_cards_are_authentic(api, world, gz):
    batch = fresh_batch(world)
    serial = batch.cards[0][0]
    assert verdict(api, serial)["verdict"] == "unknown"  # not published yet (and now in the card cache)
    dump = dump_of(world, batch.batch_id)
    r = put_dump(api, batch.batch_id, dump, gz=gz)
    assert r.status_code == 200, r.text
    root = "0x" + world.registry.batch(bytes.fromhex(batch.batch_id[2:])).root.hex()
    assert r.json() == {"batch_id": batch.batch_id, "cards": 5, "root": root, "stored": True, "superseded": []}
    for serial, _code in batch.cards:
        body = verdict(api, serial)
        assert (body["verdict"], body["reason"]) == ("authentic", "ok"), body
        assert body["batch"]["id"] == batch.batch_id and body["batch"]["root"] == root
        assert body["batch"]["anchored_root"] == root and body["issuer"]["name"] == "Acme Gift Cards"
    b = api.get(f"/v1/batches/{batch.batch_id}").json()
    assert b["root"] == root and b["card_count"] == 5 and b["on_chain"]["root_matches"] is True
    assert b["anchor_tx"] and b["anchor_block"]
    # the same dump again (plain or gzipped): idempotent, nothing changes
    for again_gz in (False, True):
        again = put_dump(api, batch.batch_id, dump, gz=again_gz)
        assert again.status_code == 200 and again.json() == {**r.json(), "stored": False}
    assert verdict(api, serial)["verdict"] == "authentic"


def test_dump_with_a_batch_id_in_either_case_or_without_0x(api, world):
    batch = fresh_batch(world, 2)
    bare = batch.batch_id[2:].upper()
    r = put_dump(api, bare, dump_of(world, batch.batch_id))
    assert r.status_code == 200 and r.json()["batch_id"] == batch.batch_id and r.json()["stored"] is True


def _tampered(world, batch, change) -> dict:
    leaves = leaves_of(dump_of(world, batch.batch_id))
    return make_dump([change(i, leaf) for i, leaf in enumerate(leaves)])


def test_root_not_the_anchored_one_is_refused_and_nothing_stored(api, world):
    batch = fresh_batch(world)
    # the whole batch claims another face value: a consistent tree, but not the anchored root
    dearer = _tampered(world, batch, lambda _i, leaf: replace(leaf, face_value=leaf.face_value * 4))
    assert error(put_dump(api, batch.batch_id, dearer)) == (422, "root_mismatch")
    assert_not_published(api, batch)
    # one card's commitment swapped for another: same product, not the anchored root either
    swapped = _tampered(world, batch, lambda i, leaf: replace(leaf, code_commitment=secrets.token_bytes(32))
                        if i == 0 else leaf)
    assert error(put_dump(api, batch.batch_id, swapped, gz=True)) == (422, "root_mismatch")
    assert_not_published(api, batch)
    # a single leaf with another face value is not even one batch's dump
    one = _tampered(world, batch, lambda i, leaf: replace(leaf, face_value=leaf.face_value + 1) if i == 0 else leaf)
    status, code = error(put_dump(api, batch.batch_id, one))
    assert status == 422 and code in ("dump_not_a_batch", "root_mismatch")
    assert_not_published(api, batch)
    # fewer cards than anchored (a sub-batch with its own consistent tree)
    fewer = make_dump(leaves_of(dump_of(world, batch.batch_id))[:-1])
    assert error(put_dump(api, batch.batch_id, fewer)) == (422, "root_mismatch")
    assert_not_published(api, batch)
    # the genuine dump is still accepted afterwards
    assert put_dump(api, batch.batch_id, dump_of(world, batch.batch_id)).json()["stored"] is True


def test_batch_not_anchored_is_409(api, world):
    pending = world.batches["pending"]
    r = put_dump(api, pending.batch_id, dump_of(world, pending.batch_id))
    assert error(r) == (409, "batch_not_anchored")
    assert_not_published(api, pending)


def test_leaves_of_another_batch_are_422(api, world):
    batch, other = fresh_batch(world), fresh_batch(world)
    r = put_dump(api, other.batch_id, dump_of(world, batch.batch_id))
    assert error(r) == (422, "dump_not_a_batch")
    assert_not_published(api, batch)
    assert_not_published(api, other)
    # a batch id that nobody anchored, with leaves of a real batch
    nobody = "0x" + secrets.token_hex(32)
    assert error(put_dump(api, nobody, dump_of(world, batch.batch_id))) == (422, "dump_not_a_batch")


def test_index_gaps_and_repeated_serials_are_not_a_batch(api, world):
    batch = fresh_batch(world, 4)
    leaves = leaves_of(dump_of(world, batch.batch_id))
    twice = make_dump([replace(leaf, index=0) for leaf in leaves])
    assert error(put_dump(api, batch.batch_id, twice)) == (422, "dump_not_a_batch")
    same_serial = make_dump([replace(leaf, serial=leaves[0].serial) for leaf in leaves])
    assert error(put_dump(api, batch.batch_id, same_serial)) == (422, "dump_not_a_batch")
    assert_not_published(api, batch)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b"[1, 2"], ids=["broken", "empty", "binary", "open"])
def test_malformed_json_is_400(api, world, raw):
    batch = world.batches["main"]
    assert error(put_dump(api, batch.batch_id, None, raw=raw)) == (400, "invalid_json")


def _broken_trees(dump: dict):
    tree = list(dump["tree"])
    yield "node changed", {**dump, "tree": ["0x" + "ab" * 32, *tree[1:]]}
    yield "node missing", {**dump, "tree": tree[:-1]}
    yield "leaf hash changed", {**dump, "tree": [*tree[:-1], "0x" + "cd" * 32]}
    yield "tree index wrong", {**dump, "values": [{**v, "treeIndex": 0} for v in dump["values"]]}
    yield "no values", {**dump, "values": []}
    yield "wrong format", {**dump, "format": "standard-v2"}
    yield "wrong encoding", {**dump, "leafEncoding": ["uint256"]}
    yield "not a dump", {"hello": "world"}
    yield "a list", [1, 2, 3]
    yield "a string", "dump"
    yield "null", None
    yield "value too short", {**dump, "values": [{**v, "value": v["value"][:-1]} for v in dump["values"]]}
    yield "value not a number", {**dump, "values": [{**v, "value": ["x", *v["value"][1:]]} for v in dump["values"]]}


def test_broken_tree_is_422_invalid_dump(api, world):
    batch = fresh_batch(world, 3)
    dump = dump_of(world, batch.batch_id)
    for what, bad in _broken_trees(dump):
        r = put_dump(api, batch.batch_id, bad)
        assert error(r) == (422, "invalid_dump"), what
    assert_not_published(api, batch)


def test_bad_gzip_is_400(api, world):
    batch = fresh_batch(world, 2)
    body = json.dumps(dump_of(world, batch.batch_id)).encode()
    for raw in (b"not gzip at all", gzip.compress(body)[:-12] + b"\x00" * 12, gzip.compress(body)[:20]):
        r = api.put(f"/v1/batches/{batch.batch_id}/dump", content=raw,
                    headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert r.status_code == 400, (r.status_code, r.text)
        assert r.json()["error"]["code"] in ("invalid_gzip", "invalid_json")
    assert_not_published(api, batch)


def test_leaves_of_another_product_than_anchored_are_refused(api, world):
    """The "wrong product" attack: the issuer anchors a root over leaves claiming 100.00 USD, with the batch's
    product on chain 1.00 USD. The root matches, but CardRegistry.verifyCard rejects every such leaf: the
    public service must not store the dump, nor answer 'authentic' with a face value of 100.00."""
    from chain.registry import ProductSpec
    from issuer.core.dump import load_dump
    from issuer.core.serial import format_serial

    source = leaves_of(dump_of(world, fresh_batch(world, 3).batch_id))
    bid = bytes.fromhex(world.issuer_client.address[2:]) + secrets.token_bytes(12)
    dearer = [replace(leaf, batch_id=bid, face_value=100_00, code_commitment=secrets.token_bytes(32))
              for leaf in source]
    first = dearer[0]
    world.registry.anchor_batch(bid, load_dump(make_dump(dearer)).tree.root, len(dearer), b"\x00" * 32,
                                ProductSpec(first.sku, 1_00, first.currency), expiry=first.expiry)
    onchain = world.registry.batch(bid)
    assert world.registry.product(onchain.product_id).face_value == 1_00
    r = put_dump(api, "0x" + bid.hex(), make_dump(dearer))
    assert r.status_code == 422, r.text
    assert api.get(f"/v1/batches/0x{bid.hex()}").status_code == 404
    assert verdict(api, format_serial(first.serial))["verdict"] == "unknown"


def test_a_serial_already_published_is_409_serial_conflict(api, world):
    main = world.batches["main"]
    leaves = leaves_of(dump_of(world, main.batch_id))[:3]
    # an anchored batch of this issuer that reuses the first three serials of the published "main" batch
    bid = bytes.fromhex(world.issuer_client.address[2:]) + secrets.token_bytes(12)
    copies = [replace(leaf, batch_id=bid, code_commitment=secrets.token_bytes(32)) for leaf in leaves]
    copy_id = anchor_leaves(world, copies)
    r = put_dump(api, copy_id, make_dump(copies))
    assert error(r) == (409, "serial_conflict")
    assert api.get(f"/v1/batches/{copy_id}").status_code == 404
    body = verdict(api, main.cards[0][0])
    assert body["batch"]["id"] == main.batch_id  # still the first batch's card
    # a mix of a new serial and an already published one: nothing of it is stored
    from issuer.core.serial import format_serial, new_serial_value

    new_serial = new_serial_value()
    bid2 = bytes.fromhex(world.issuer_client.address[2:]) + secrets.token_bytes(12)
    mixed = [replace(leaves[0], batch_id=bid2, index=0, serial=new_serial,
                     code_commitment=secrets.token_bytes(32)),
             replace(leaves[1], batch_id=bid2, index=1, code_commitment=secrets.token_bytes(32))]
    mixed_id = anchor_leaves(world, mixed)
    assert error(put_dump(api, mixed_id, make_dump(mixed), gz=True)) == (409, "serial_conflict")
    assert api.get(f"/v1/batches/{mixed_id}").status_code == 404
    assert verdict(api, format_serial(new_serial))["verdict"] == "unknown"
    assert verdict(api, main.cards[1][0])["batch"]["id"] == main.batch_id


def test_the_earliest_anchor_owns_a_serial(api, world):
    """A squatter copies the serials of a batch anchored before it and publishes first: when the rightful
    batch is published, the squatting batch is removed and the cards answer with the rightful batch."""
    rightful = fresh_batch(world, 4)  # minted and anchored, not published: its serials are not public yet
    leaves = leaves_of(dump_of(world, rightful.batch_id))
    bid = bytes.fromhex(world.issuer_client.address[2:]) + secrets.token_bytes(12)
    copies = [replace(leaf, batch_id=bid, code_commitment=secrets.token_bytes(32)) for leaf in leaves]
    squatter = anchor_leaves(world, copies)  # anchored in a later block
    r = put_dump(api, squatter, make_dump(copies))
    assert r.status_code == 200 and r.json()["stored"], r.text
    assert verdict(api, rightful.cards[0][0])["batch"]["id"] == squatter
    r = put_dump(api, rightful.batch_id, dump_of(world, rightful.batch_id))
    assert r.status_code == 200, r.text
    assert r.json()["stored"] and r.json()["superseded"] == [squatter]
    assert api.get(f"/v1/batches/{squatter}").status_code == 404
    for serial, _code in rightful.cards:
        body = verdict(api, serial)
        assert (body["verdict"], body["batch"]["id"]) == ("authentic", rightful.batch_id), body
    # and the squatter cannot come back: its serials now belong to a batch anchored before it
    assert error(put_dump(api, squatter, make_dump(copies))) == (409, "serial_conflict")


@pytest.mark.parametrize("bad", ["nope", "0x" + "zz" * 32, "0x" + "00" * 31, "0x" + "00" * 33])
def test_invalid_batch_id_is_4xx(api, world, bad):
    r = put_dump(api, bad, dump_of(world, world.batches["main"].batch_id))
    status, code = error(r)
    assert status in (404, 422) and code in ("invalid_batch_id", "not_found", "invalid_request")


def test_no_master_key_anywhere(world, monkeypatch, tmp_path):
    """The public service starts, publishes and answers in a home that holds no key, with no key in the
    environment, and leaves none behind."""
    from chain.settings import get_settings
    from verify_api.app import create_app
    from verify_api.deps import AppDeps

    for name in list(os.environ):
        if "MASTER" in name.upper() or (name.startswith("CARDPROOF") and "KEY" in name.upper()):
            monkeypatch.delenv(name)
    assert "CARDPROOF_MASTER_KEY" not in os.environ
    home = tmp_path / "public-home"
    home.mkdir()
    settings = get_settings(home=home, public_url="http://cards.test", redis_url=None,
                            public_database_url=f"sqlite:///{home / 'public.db'}",
                            database_url=f"sqlite:///{home / 'never-opened.db'}")
    app = create_app(settings, deps=AppDeps(settings=settings, api=world.api_settings(), registry=world.registry))
    main = world.batches["main"]
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        assert verdict(client, main.cards[0][0])["verdict"] == "unknown"  # its own, empty database
        r = put_dump(client, main.batch_id, dump_of(world, main.batch_id))
        assert r.status_code == 200 and r.json()["stored"] is True
        assert verdict(client, main.cards[0][0])["verdict"] == "authentic"
        assert client.get(f"/c/{main.cards[0][0]}").status_code == 200
    assert (home / "public.db").exists()
    assert not (home / "master.key").exists()
    assert not (home / "never-opened.db").exists()  # the supplier's database is never opened
    assert not list(home.rglob("*.key")) and not list(home.rglob("master*"))
