"""`cardproof admin ...` through the console on the in-process chain: what `admin show` tells the operator (roles
by holder, fee in percent, windows as durations), every change (fee, fee recipient, tokens, windows, arbiters)
made on chain, idempotent ("already ...", nothing sent), and bad values refused before anything is sent."""

from __future__ import annotations

from chain.artifacts import load_artifact
from chain.escrow import Escrow

HOUR, DAY = 3_600, 86_400
ZERO = "0x" + "00" * 20


def test_show_names_every_role_holder_in_human_units(deployed):
    d = deployed
    state = d.cli.ok("admin", "show", "--json").json
    admin = d.admin.address
    assert state["registry"]["address"] == d.registry.address and state["escrow"]["address"] == d.escrow.address
    assert state["registry"]["admins"] == state["escrow"]["admins"] == state["escrow"]["arbiters"] == [admin]
    assert state["registry"]["deployment"]["deployer"] == admin
    assert state["registry"]["issuers"] == []
    d.cli.ok("issuer", "add", "--name", "Acme Cards", "--address", d.stranger)
    state = d.cli.ok("admin", "show", "--json").json
    assert state["registry"]["issuers"] == [{"address": d.stranger, "name": "Acme Cards"}]
    assert state["fee"] == {"bps": 0, "percent": "0%"} and state["max_fee"] == {"bps": 100, "percent": "1%"}
    assert state["fee_recipient"] == admin
    assert state["windows"] == {
        "max_delivery_period": {"seconds": 90 * DAY, "human": "90d"},
        "min_dispute_window": {"seconds": HOUR, "human": "1h"},
        "max_dispute_window": {"seconds": 30 * DAY, "human": "30d"},
        "dispute_resolution_period": {"seconds": 7 * DAY, "human": "7d"},
    }
    assert [(t["address"], t["symbol"], t["allowed"]) for t in state["tokens"]] == [(d.coin, "tUSD", True)]
    text = d.cli.ok("admin", "show").out
    assert f"admin (grants and removes issuers): {admin} (the deployer)" in text
    assert f"arbiters: {admin} (the deployer)" in text
    assert f"issuers (1): {d.stranger} (Acme Cards)" in text
    assert "fee 0% (cap 1%)" in text and "dispute window 1h to 30d" in text and "max delivery period 90d" in text
    assert "3600" not in text and "7776000" not in text
    assert str(int(state["registry"]["deployment"]["deployed_at"])) not in text  # times as dates
    assert state["registry"]["deployment"]["deployed_at_human"] in text


def test_fee_set_in_percent_is_idempotent_and_capped(deployed):
    d = deployed
    changed = d.cli.ok("admin", "fee", "set", "0.25%", "--json").json
    assert (changed["changed"], changed["before"], changed["after"]) == (True, {"bps": 0, "percent": "0%"},
                                                                         {"bps": 25, "percent": "0.25%"})
    assert changed["tx"].startswith("0x") and d.escrow.rules().fee_bps == 25
    block = d.block()
    assert d.cli.ok("admin", "fee", "set", "0.25").out == "the fee is already 0.25%; nothing sent\n"
    again = d.cli.ok("admin", "fee", "set", "25bps", "--json").json
    assert (again["changed"], again["tx"]) == (False, None) and d.block() == block
    d.cli.fails("admin", "fee", "set", "2%", match="2% is above the escrow's cap of 1%")
    d.cli.fails("admin", "fee", "set", "0.001%", match="whole number of basis points")
    d.cli.fails("admin", "fee", "set", "--", "-1%", match="'-1%' is below 0%")
    d.cli.fails("admin", "fee", "set", "lots", match="not a percentage")
    assert d.block() == block and d.escrow.rules().fee_bps == 25
    assert "fee set to 1% (was 0.25%)" in d.cli.ok("admin", "fee", "set", "1%").out


def test_fee_recipient_set(deployed):
    d = deployed
    changed = d.cli.ok("admin", "fee-recipient", "set", d.stranger.lower(), "--json").json
    assert (changed["changed"], changed["before"], changed["after"]) == (True, d.admin.address, d.stranger)
    assert d.escrow.rules().fee_recipient == d.stranger
    block = d.block()
    assert "already" in d.cli.ok("admin", "fee-recipient", "set", d.stranger).out and d.block() == block
    d.cli.fails("admin", "fee-recipient", "set", ZERO, match="zero address")
    d.cli.fails("admin", "fee-recipient", "set", "0x1234", match="not an address")
    assert d.block() == block and d.escrow.rules().fee_recipient == d.stranger


def _new_coin(d) -> str:
    art = load_artifact("TestStablecoin")
    sent = d.admin.send_deploy(art.abi, art.bytecode, "Other USD", "oUSD", d.admin.address, gas=3_000_000)
    return d.admin.wait(sent.tx_hash)["contractAddress"]


def test_token_allow_remove_list(deployed):
    d = deployed
    coin = _new_coin(d)
    allowed = d.cli.ok("admin", "token", "allow", coin, "--json").json
    assert (allowed["changed"], allowed["token"], allowed["after"]) == (True, coin, True)
    assert d.escrow.is_token_allowed(coin)
    block = d.block()
    assert d.cli.ok("admin", "token", "allow", coin).out == f"token {coin} is already allowed; nothing sent\n"
    assert d.block() == block
    listed = d.cli.ok("admin", "token", "list", "--json").json["tokens"]
    assert [(t["symbol"], t["allowed"]) for t in listed] == [("tUSD", True), ("oUSD", True)]
    assert listed[1]["fees_accrued"] == {"amount": "0.00", "units": "0", "symbol": "oUSD"}

    removed = d.cli.ok("admin", "token", "remove", d.coin, "--json").json
    assert (removed["changed"], removed["before"], removed["after"]) == (True, True, False)
    assert not d.escrow.is_token_allowed(d.coin)
    assert "already not allowed" in d.cli.ok("admin", "token", "remove", d.coin).out
    text = d.cli.ok("admin", "token", "list").out
    assert f"{d.coin}  tUSD     removed" in text and f"{coin}  oUSD     allowed" in text

    block = d.block()
    d.cli.fails("admin", "token", "allow", d.stranger, match="is not an ERC-20 token")  # an account, no code
    d.cli.fails("admin", "token", "allow", ZERO, match="zero address")
    d.cli.fails("admin", "token", "remove", "tUSD", match="not an address")
    assert d.block() == block and not d.escrow.is_token_allowed(d.stranger)


def test_windows_set_takes_durations_and_keeps_the_rest(deployed):
    d = deployed
    changed = d.cli.ok("admin", "windows", "set", "--min-dispute-window", "2h", "--dispute-resolution-period", "3d",
                       "--json").json
    assert changed["changed"] is True
    assert changed["before"]["min_dispute_window"] == {"seconds": HOUR, "human": "1h"}
    assert changed["after"]["min_dispute_window"] == {"seconds": 2 * HOUR, "human": "2h"}
    assert changed["after"]["max_delivery_period"] == {"seconds": 90 * DAY, "human": "90d"}  # kept
    rules = d.escrow.rules()
    assert (rules.max_delivery_period, rules.min_dispute_window, rules.max_dispute_window,
            rules.dispute_resolution_period) == (90 * DAY, 2 * HOUR, 30 * DAY, 3 * DAY)
    block = d.block()
    again = d.cli.ok("admin", "windows", "set", "--min-dispute-window", "120m").out
    assert again.startswith("the window rules are already max delivery period 90d, min dispute window 2h")
    assert again.endswith("nothing sent\n") and d.block() == block

    d.cli.fails("admin", "windows", "set", "--max-delivery-period", "30m", match="30m is below the floor of 1h")
    d.cli.fails("admin", "windows", "set", "--dispute-resolution-period", "91d", match="above the ceiling of 90d")
    d.cli.fails("admin", "windows", "set", "--min-dispute-window", "31d",
                match="the min dispute window (31d) is longer than the max dispute window (30d)")
    d.cli.fails("admin", "windows", "set", "--min-dispute-window", "3", match="has no unit")
    d.cli.fails("admin", "windows", "set", match="give at least one window")
    assert d.block() == block and d.escrow.rules() == rules
    out = d.cli.ok("admin", "windows", "set", "--max-dispute-window", "14d").out
    assert out.startswith("window rules set: ") and "max dispute window 14d" in out


def test_arbiter_commands_are_one_implementation_under_two_names(deployed):
    d = deployed
    granted = d.cli.ok("admin", "arbiter", "grant", d.stranger, "--json").json
    assert granted["changed"] and granted["arbiters"] == [d.admin.address, d.stranger]
    assert "already an arbiter" in d.cli.ok("arbiter", "grant", d.stranger).out
    listed = d.cli.ok("admin", "arbiter", "list", "--json").json
    assert listed == d.cli.ok("arbiter", "list", "--json").json
    assert (listed["dispute_resolution_period"], listed["dispute_resolution_period_human"]) == (7 * DAY, "7d")
    assert d.cli.ok("arbiter", "revoke", d.stranger, "--json").json["arbiters"] == [d.admin.address]
    assert Escrow(d.admin, d.escrow.address).arbiters() == [d.admin.address]


def test_every_change_refused_to_a_non_admin_names_the_admin(deployed):
    d = deployed
    admin = d.admin.address
    expected = f"{d.stranger} is not the admin of the escrow {d.escrow.address}: run this as the admin {admin} " \
               f"(its deployer)"
    for command in (("admin", "fee", "set", "0.5%"), ("admin", "fee", "set", "0%"),  # "0%" holds: still refused
                    ("admin", "fee-recipient", "set", d.stranger), ("admin", "token", "remove", d.coin),
                    ("admin", "token", "allow", d.coin), ("admin", "windows", "set", "--min-dispute-window", "2h"),
                    ("admin", "arbiter", "grant", d.stranger), ("arbiter", "revoke", admin)):
        failed = d.as_stranger(*command)
        assert failed.err == f"cardproof: {expected}\n", command
        assert "0x" + "00" * 32 not in failed.err
    rules = d.escrow.rules()
    assert (rules.fee_bps, rules.fee_recipient, rules.min_dispute_window) == (0, admin, HOUR)
    assert d.escrow.is_token_allowed(d.coin) and d.escrow.arbiters() == [admin]
    # Reading needs no role.
    d.cli.act_as("0x" + "5a" * 32)
    try:
        assert d.cli.ok("admin", "show", "--json").json["escrow"]["admins"] == [admin]
    finally:
        d.cli.act_as(None)


def test_every_admin_command_says_who_runs_it():
    from typer.testing import CliRunner

    from cardproof.console import app

    runner = CliRunner()
    for command in (["admin", "fee", "set"], ["admin", "fee-recipient", "set"], ["admin", "token", "allow"],
                    ["admin", "token", "remove"], ["admin", "windows", "set"], ["admin", "arbiter", "grant"],
                    ["admin", "arbiter", "revoke"], ["arbiter", "grant"], ["issuer", "remove"]):
        result = runner.invoke(app, [*command, "--help"], terminal_width=200)
        assert result.exit_code == 0, result.output
        help_text = " ".join(result.output.split())
        assert "Run as the escrow's admin" in help_text or "run as the registry's admin" in help_text, command
    for command in (["admin", "show"], ["admin", "token", "list"], ["admin", "arbiter", "list"]):
        assert "(anyone)" in " ".join(runner.invoke(app, [*command, "--help"], terminal_width=200).output.split())
