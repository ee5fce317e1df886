"""The API's tables and writes on PostgreSQL: migration, scan writer (upserts), API keys."""

from __future__ import annotations

import datetime as dt
import sys
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
    from issuer.storage.db import make_engine, session_factory, upgrade

    with dbutil.fresh_postgres_database(base, prefix="cardproof_api") as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield session_factory(engine)
        finally:
            engine.dispose()


def test_scans_and_keys_on_postgres(pg_sessions):
    from verify_api.auth import create_api_key, list_api_keys, revoke_api_key
    from verify_api.models import CardStats
    from verify_api.scans import ScanRecorder

    rec = ScanRecorder(pg_sessions, b"k" * 32, flush_interval=60)
    for _ in range(3):
        rec.record("lookup", "SERIALA", client="c1", ua="Chrome", verdict="authentic")
    rec.record("check", "SERIALA", client="c1", ua="curl", ok=False)
    rec.record("lookup", None, client="c2", ua="none", verdict="unknown")
    assert rec.flush() == 5
    rec.record("check", "SERIALA", client="c1", ua="curl", ok=True)
    assert rec.flush() == 1
    with pg_sessions() as s:
        st = s.get(CardStats, "SERIALA")
        assert (st.scans, st.checks, st.failed_checks) == (3, 2, 1)
        assert st.first_scan_at.tzinfo is not None and st.first_scan_at <= dt.datetime.now(dt.UTC)
        assert rec.count(s) == 6
    fresh = ScanRecorder(pg_sessions, b"k" * 32)
    with pg_sessions() as s:
        got = fresh.stats(s, "SERIALA")
    assert got["scans"] == 3 and got["failed_checks"] == 1 and got["signal"] == "elevated"

    with pg_sessions.begin() as s:
        key, row = create_api_key(s, "0x" + "ab" * 20, "pg")
    with pg_sessions.begin() as s:
        assert [k.key_id for k in list_api_keys(s)] == [row.key_id]
        assert revoke_api_key(s, key) and not revoke_api_key(s, key)
