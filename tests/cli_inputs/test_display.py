"""What people read (issue 12): limits in human units, times as dates (ISO 8601, UTC), order statuses and
revocation reasons by name, in CLI output and error messages; --json keeps the raw integers."""

from __future__ import annotations

import csv
import re

from chain import errors
from chain.humanize import format_duration, format_time, status_name

DATE = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC"
UNIX_SECONDS = re.compile(r"\b1\d{9}\b")  # a unix time of 2001-2286, as it would show raw
DAY = 86_400


def test_the_formatters():
    assert format_time(1_796_195_400) == "2026-12-02 07:10 UTC"
    assert format_time(0) == "-" and format_time(None) == "-"
    assert (format_duration(3_600), format_duration(30 * DAY), format_duration(5_400)) == ("1h", "30d", "1h30m")
    assert (status_name(2), status_name(4), status_name(99)) == ("delivered", "confirmed", "status 99")


def test_decoded_errors_read_in_units_and_dates():
    window = errors.InvalidDisputeWindow(disputeWindow=60, minWindow=3_600, maxWindow=30 * DAY)
    assert str(window) == "dispute window must be between 1h and 30d (1m given) [InvalidDisputeWindow]"
    assert (window.dispute_window, window.min_window, window.max_window) == (60, 3_600, 30 * DAY)  # raw kept
    status = errors.InvalidOrderStatus(orderId=7, status=4, required=2)
    assert str(status) == "order 7 is confirmed; this needs it delivered [InvalidOrderStatus]"
    bounds = errors.WindowOutOfBounds(rule="disputeResolutionPeriod", window=1_800, floor=3_600, ceiling=90 * DAY)
    assert "disputeResolutionPeriod must be between 1h and 90d (30m given)" in str(bounds)
    assert "below its floor" in str(bounds)
    open_ = errors.DisputeWindowOpen(orderId=7, windowEnd=1_796_195_400)
    assert "window_end=2026-12-02 07:10 UTC" in str(open_) and "1796195400" not in str(open_)


def test_order_open_limits_read_in_units(market):
    base = ("order", "open", "--supplier", market.admin.address, "--sku", "GAME-10", "--face-value", "10.00",
            "--currency", "USD", "--quantity", "1", "--unit-price", "9.50")
    r = market.as_buyer(*base, "--dispute-window", "1m")
    assert r.rc == 1 and r.err == ("cardproof: dispute window must be between 1h and 30d (1m given) "
                                   "[InvalidDisputeWindow]\n"), r.err
    r = market.as_buyer(*base, "--deadline", "1000d")
    assert r.rc == 1 and "the delivery deadline must be at most " in r.err, r.err
    assert re.search(f"by {DATE} \\(1000d asked, until {DATE}\\)", r.err) and not UNIX_SECONDS.search(r.err), r.err
    assert market.escrow.order_count() == 0


def test_order_show_and_errors_name_statuses_and_show_dates(market):
    cli = market.cli
    opened = market.open_order("--dispute-window", "2h")
    oid = str(opened["order_id"])
    r = market.as_buyer("order", "confirm", oid)
    assert r.rc == 1 and f"order {oid} is funded; this needs it delivered" in r.err and "status=" not in r.err, r.err

    batch = cli.ok("batches", "--json").json[0]["batch_id"]
    cli.ok("order", "deliver", oid, "--batch", batch, "--range", "0:1", "--no-upload")
    shown = cli.ok("order", "show", oid, "--json").json
    assert shown["status"] == "delivered" and isinstance(shown["delivered_at"], int)  # JSON keeps raw integers
    human = cli.ok("order", "show", oid).out
    assert human.startswith(f"order {oid}: delivered\n"), human
    assert re.search(f"deliver by {DATE}; dispute window 2h", human), human
    assert f"dispute window ends {format_time(shown['dispute_window_end'])}" in human, human
    assert re.search(f"delivered {DATE}: batch {batch}", human), human
    assert not UNIX_SECONDS.search(human), human

    r = cli("order", "release", oid)
    assert r.rc == 1 and "DisputeWindowOpen" in r.err and format_time(shown["dispute_window_end"]) in r.err, r.err
    assert not UNIX_SECONDS.search(r.err), r.err

    assert market.as_buyer("order", "dispute", oid).rc == 0
    disputed = cli.ok("order", "show", oid).out
    deadline = cli.ok("order", "show", oid, "--json").json["dispute_deadline"]
    assert disputed.startswith(f"order {oid}: disputed\n") and f"dispute deadline {format_time(deadline)}" in disputed


def test_revoke_names_the_reason(market, tmp_path):
    cli = market.cli
    batch = cli.ok("batches", "--json").json[0]["batch_id"]
    cli.ok("export", batch, "--out", tmp_path / "out", "--no-qr")
    with open(tmp_path / "out" / "cards.csv", newline="") as f:
        serial = next(csv.DictReader(f))["serial"]
    revoked = cli.ok("revoke", serial, "--reason", "leaked").out
    expected = f"revoked 1 card\\(s\\) of {batch}, reason leaked \\(tx 0x[0-9a-f]{{64}}\\)\n"
    assert re.fullmatch(expected, revoked), revoked


def test_issuer_errors_name_the_reason_and_show_the_date():
    """A redeemer told a card is revoked reads why by name; told it is redeemed, reads when as a date."""
    import datetime as dt

    from issuer.errors import AlreadyRedeemed, CardRevoked

    revoked = str(CardRevoked("ABCD-EFGH", 2))
    assert "fraud" in revoked and "reason 2" not in revoked
    assert "code 9" in str(CardRevoked("ABCD-EFGH", 9))  # an unknown code still says something
    redeemed = str(AlreadyRedeemed("ABCD-EFGH", dt.datetime(2026, 12, 2, 7, 10, tzinfo=dt.UTC)))
    assert "2026-12-02 07:10 UTC" in redeemed
    assert "2026-12-02 07:10 UTC" in str(AlreadyRedeemed("ABCD-EFGH", 1796195400))
