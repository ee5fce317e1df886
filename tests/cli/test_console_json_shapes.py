"""One `--json` shape per concept (chain/cli_output.py): amounts as {"amount", "units", "symbol"|"currency"}, the
shape the escrow commands print."""

from __future__ import annotations

from chain.cli_output import amount_json
from chain.escrow_view import TokenMeta


def test_amounts_are_exact_and_display_with_their_decimals():
    assert amount_json(2500, 2, currency="USD") == {"amount": "25.00", "units": "2500", "currency": "USD"}
    assert amount_json(5, 6, symbol="tUSD") == {"amount": "0.000005", "units": "5", "symbol": "tUSD"}
    assert amount_json(9_500_000, 6, symbol="tUSD")["amount"] == "9.50"
    assert amount_json(0, 2) == {"amount": "0.00", "units": "0"}
    assert amount_json(1500, 0, currency="JPY")["amount"] == "1500"
    big = 2**200 + 1
    assert amount_json(big, 18)["units"] == str(big)  # exact past 2**53


def test_token_amounts_of_the_escrow_commands_have_the_same_shape():
    meta = TokenMeta("0x" + "11" * 20, "tUSD", 6)
    for units in (0, 1, 9_500_000, 2**255):
        assert meta.money(units) == amount_json(units, 6, symbol="tUSD")
