"""The public service's tables and writes on PostgreSQL: its migrations, the scan writer (upserts), and
publishing a dump (binary COPY of the cards, a serial conflict surfacing from COPY, the rollback)."""

from __future__ import annotations

import datetime as dt
import secrets
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for dbutil
import dbutil  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_sessions():
    base = dbutil.postgres_base_url()
    if base is None:
        pytest.skip(dbutil.postgres_skip_reason())
    from issuer.storage.db import make_engine, session_factory
    from verify_api.storage.db import upgrade_public

    with dbutil.fresh_postgres_database(base, prefix="cardproof_api") as url:
        upgrade_public(url)
        engine = make_engine(url)
        try:
            yield session_factory(engine)
        finally:
            engine.dispose()


def test_public_migrations_match_the_models(pg_sessions):
    from sqlalchemy import inspect

    from verify_api.storage.models import import_all_models

    with pg_sessions() as s:
        tables = set(inspect(s.get_bind()).get_table_names())
    assert set(import_all_models().tables) <= tables
    assert not {"batches", "cards", "api_keys"} & tables  # nothing of the supplier's database


def test_scans_on_postgres(pg_sessions):
    from verify_api.models import CardStats
    from verify_api.scans import ScanRecorder

    rec = ScanRecorder(pg_sessions, b"k" * 32, flush_interval=60)
    for _ in range(3):
        rec.record("lookup", "SERIALA", client="c1", ua="Chrome", verdict="authentic")
    rec.record("page", "SERIALA", client="c1", ua="curl", verdict="authentic")
    rec.record("lookup", None, client="c2", ua="none", verdict="unknown")
    assert rec.flush() == 5
    rec.record("lookup", "SERIALA", client="c1", ua="curl", verdict="authentic")
    assert rec.flush() == 1
    with pg_sessions() as s:
        st = s.get(CardStats, "SERIALA")
        assert (st.scans, st.checks, st.failed_checks) == (5, 0, 0)
        assert st.first_scan_at.tzinfo is not None and st.first_scan_at <= dt.datetime.now(dt.UTC)
        assert rec.count(s) == 6
    fresh = ScanRecorder(pg_sessions, b"k" * 32)
    with pg_sessions() as s:
        got = fresh.stats(s, "SERIALA")
    assert got["scans"] == 5 and got["failed_checks"] == 0 and got["signal"] == "none"


def test_publish_on_postgres(pg_sessions, world):
    from issuer.core.dump import make_dump
    from issuer.core.serial import format_serial
    from tests.api.world import anchor_leaves, dump_of, leaves_of
    from verify_api.lookup import batch_record, find_card
    from verify_api.publish import DumpRejected, publish_dump

    main = world.batches["main"]
    dump = dump_of(world, main.batch_id)
    first = publish_dump(pg_sessions, world.registry, main.batch_id, dump)
    assert first.stored and first.cards == 60
    assert not publish_dump(pg_sessions, world.registry, main.batch_id, dump).stored
    serial = main.cards[7][0]
    with pg_sessions() as s:
        rec = find_card(s, serial.replace("-", ""))
        assert rec is not None and rec.serial == serial and rec.batch.batch_id == main.batch_id
        assert rec.batch.root == first.root and rec.leaf.batch_id.hex() == main.batch_id[2:]
        assert find_card(s, "0" * 20) is None

    # a second anchored batch reusing a published serial: 409 from the COPY, nothing of it stored
    leaves = leaves_of(dump)
    bid = bytes.fromhex(world.issuer_client.address[2:]) + secrets.token_bytes(12)
    copies = [replace(leaf, batch_id=bid, code_commitment=secrets.token_bytes(32)) for leaf in leaves[:2]]
    copy_id = anchor_leaves(world, copies)
    with pytest.raises(DumpRejected) as exc:
        publish_dump(pg_sessions, world.registry, copy_id, make_dump(copies))
    assert (exc.value.status, exc.value.code) == (409, "serial_conflict")
    with pg_sessions() as s:
        assert batch_record(s, copy_id) is None
        rec = find_card(s, format_serial(leaves[0].serial).replace("-", ""))
        assert rec.batch.batch_id == main.batch_id


def test_cold_lookups_query_on_the_event_loop_and_stand_aside_when_the_database_fails(pg_sessions, world,
                                                                                      monkeypatch):
    """A card nobody asked about is read on the event loop (psycopg's async pool), with the same answer as the
    blocking path; a failed query hands lookups to the blocking path for a while (it reports outages)."""
    import asyncio

    from sqlalchemy import text

    from verify_api import card_reader
    from tests.api.world import dump_of
    from verify_api.card_reader import CardReader
    from verify_api.publish import publish_dump

    main = world.batches["main"]
    publish_dump(pg_sessions, world.registry, main.batch_id, dump_of(world, main.batch_id))
    engine = pg_sessions.kw["bind"]
    serials = [s.replace("-", "") for s, *_ in main.cards[:4]]
    monkeypatch.setattr(card_reader, "ASYNC_PAUSE", 0.3)

    async def scenario():
        reader = CardReader(engine)
        assert await reader.read_async(serials[0]) is None  # no pool yet
        await reader.open_async(size=2)
        try:
            assert await reader.read_async(serials[0]) is None  # the decoy and the batch are not cached yet
            blocking, _stats = reader.read(serials[0])
            got = await reader.read_async(serials[1])
            assert got is not None
            record, _stats = got
            again, _ = reader.read(serials[1])
            assert record.leaf == again.leaf and record.proof == again.proof and record.proven_root is not None
            assert (await reader.read_async("0" * 17)) == (None, None)  # unknown: the decoy's work, no record
            with engine.connect() as conn:  # the database kills the pool's connections
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            assert await reader.read_async(serials[2]) is None  # failed: the blocking path answers
            assert await reader.read_async(serials[2]) is None  # ...for a pause, without trying again
            await asyncio.sleep(0.4)
            for _ in range(3):  # the pool replaces the dead connections
                got = await reader.read_async(serials[3])
                if got is not None:
                    break
                await asyncio.sleep(0.4)
            assert got is not None and got[0].index == reader.read(serials[3])[0].index
        finally:
            await reader.close_async()

    asyncio.run(scenario())


def test_workers_starting_together_agree_on_the_database_secret(pg_sessions):
    """Every worker makes the scan-hashing secret on first use; started together, one lost the race with a unique
    violation and died (seen under scripts/bench_api). Now all get the one stored."""
    import threading

    from verify_api.storage.repository import get_or_create_secret

    barrier = threading.Barrier(8)
    got, errors = [], []

    def worker():
        try:
            with pg_sessions.begin() as session:
                from verify_api.storage.models import PubMeta

                session.get(PubMeta, "race")  # every worker looks first, and finds nothing
                barrier.wait()
                got.append(get_or_create_secret(session, "race"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(got) == 8 and len(set(got)) == 1 and len(got[0]) == 32
    with pg_sessions() as session:
        assert get_or_create_secret(session, "race") == got[0]
