"""Durations (issue 12): a duration says its unit. A bare number is refused with a hint (``--deadline 3`` was
once read as 3 seconds); the node's poll interval, whose name says its unit (seconds), stays a number of seconds."""

from __future__ import annotations

import pytest

from chain.escrow_view import DurationError, parse_duration
from issuer.node.config import NodeConfigError, load_config


@pytest.mark.parametrize(("text", "seconds"), [("3d", 259_200), ("12h", 43_200), ("90m", 5_400), ("45s", 45),
                                               ("1d12h", 129_600), ("2w", 1_209_600), (" 1D 2H ", 93_600)])
def test_durations_with_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3", "86400", " 7 "])
def test_a_bare_number_is_refused_with_a_hint(text):
    n = text.strip()
    with pytest.raises(DurationError, match=f"{n} what\\? say {n}d, {n}h, {n}m or {n}s") as info:
        parse_duration(text, what="--deadline")
    assert str(info.value).startswith("--deadline ") and info.value.code == "invalid_duration"


def test_zero_is_refused_whatever_its_unit():
    for text in ("0", "0d", "0h0m"):
        with pytest.raises(DurationError, match="longer than zero"):
            parse_duration(text)


def test_order_open_refuses_a_deadline_without_unit(market):
    block = market.block()
    for option in ("--deadline", "--dispute-window"):
        r = market.as_buyer("order", "open", "--supplier", market.admin.address, "--sku", "GAME-10", "--face-value",
                            "10.00", "--currency", "USD", "--quantity", "1", "--unit-price", "9.50", option, "3")
        assert r.rc == 1 and r.out == "" and r.err.count("\n") == 1, r
        assert r.err == f"cardproof: {option} '3' has no unit: 3 what? say 3d, 3h, 3m or 3s\n", r.err
    r = market.as_buyer("order", "open", "--supplier", market.admin.address, "--sku", "GAME-10", "--face-value",
                        "10.00", "--currency", "USD", "--quantity", "1", "--unit-price", "9.50", "--min-expiry", "2027")
    assert r.rc == 1 and "--min-expiry: '2027' is a bare number; give a date, YYYY-MM-DD" in r.err, r  # not 1970
    assert market.block() == block and market.escrow.order_count() == 0  # nothing approved, nothing opened
    opened = market.open_order("--deadline", "3h", "--dispute-window", "2h")
    assert opened["order"]["dispute_window"] == 7_200
    assert 3 * 3_600 - 60 <= opened["order"]["delivery_deadline"] - market.now() <= 3 * 3_600


def test_the_node_poll_interval_is_in_seconds(tmp_path):
    from chain.settings import get_settings

    settings = get_settings(home=tmp_path)
    for value, seconds in (("0.2", 0.2), ("0.2s", 0.2), ("200ms", 0.2), ("2", 2.0)):
        assert load_config(settings=settings, env={"CARDPROOF_NODE_POLL_INTERVAL": value}).poll_interval == seconds
    for value in ("7200", "0.001", "0"):
        with pytest.raises(NodeConfigError, match="between 0.01 and 3600 seconds"):
            load_config(settings=settings, env={"CARDPROOF_NODE_POLL_INTERVAL": value})
    for value in ("soon", "2h"):
        with pytest.raises(NodeConfigError, match="must be a number of seconds"):
            load_config(settings=settings, env={"CARDPROOF_NODE_POLL_INTERVAL": value})
