"""`cardproof admin ...`: the platform operator's commands, thin layers over verify_api/admin_ops.py (changes),
verify_api/admin_view.py (what is set) and chain/escrow.py (arbiters).

* ``admin show``: fee, fee recipient, payment tokens, window rules, arbiters, and who holds each role;
* ``admin fee set``, ``admin fee-recipient set``, ``admin token allow|remove|list``, ``admin windows set``;
* ``admin arbiter grant|revoke|list``, also reachable as ``cardproof arbiter grant|revoke|list`` (the same
  commands).

Every change is made by the escrow's admin (the deployer unless `cardproof deploy` named another): a command run by
an account without the role fails with one line that names the role and who holds it ("run this as the admin
0xf39F..."), and sends nothing. Setting a value to what it already is sends nothing and says "already". Fees
read as percentages, windows as durations (``1h``, ``30d``), times as dates; ``--json`` gives the raw integers too.

An arbiter resolves disputes until their deadline (after it, anyone settles a dispute with the default outcome;
see contracts/ICardEscrow.sol). An arbiter may be an account or a contract (a multisig, say).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chain.cli_output import emit_json, say
from verify_api.order_cli import InvalidArgument, _address, _ctx, _tx

__all__ = ["admin_app", "arbiter_app", "register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
AccountArg = Annotated[str, typer.Argument(metavar="ADDRESS", help="The arbiter's address (an account or a "
                                                                   "contract).")]
EscrowOpt = Annotated[str | None, typer.Option("--escrow", help="The CardEscrow's address (default: the one "
                                                                "`cardproof deploy` recorded for this chain).")]
DurationOpt = Annotated[str | None, typer.Option(metavar="DURATION", help="With its unit: 90m, 12h, 7d, 2w, 1d12h.")]

ZERO_ADDRESS = "0x" + "00" * 20

admin_app = typer.Typer(help="Run the platform: the escrow's fee, fee recipient, payment tokens, window rules and "
                             "arbiters (changes run as the escrow's admin). `admin show` lists them all.",
                        no_args_is_help=True)
fee_app = typer.Typer(help="The platform fee of new orders, in percent (at most 1%).", no_args_is_help=True)
fee_recipient_app = typer.Typer(help="The account credited with the platform fees.", no_args_is_help=True)
token_app = typer.Typer(help="The stablecoins orders may be paid in.", no_args_is_help=True)
windows_app = typer.Typer(help="The window rules of new orders and disputes (each at least 1h).", no_args_is_help=True)
arbiter_app = typer.Typer(help="The escrow's arbiters, who resolve disputes before their deadline: grant, revoke, "
                               "list (grant and revoke as the escrow's admin).", no_args_is_help=True)
admin_app.add_typer(fee_app, name="fee")
admin_app.add_typer(fee_recipient_app, name="fee-recipient")
admin_app.add_typer(token_app, name="token")
admin_app.add_typer(windows_app, name="windows")
admin_app.add_typer(arbiter_app, name="arbiter")


def _escrow(escrow_address: str | None) -> Any:
    from chain.escrow import Escrow

    ctx = _ctx()
    if escrow_address is not None:
        return Escrow(ctx.client, _address(escrow_address, "--escrow"))
    return ctx.escrow


def _change_json(escrow: Any, change: Any, before: Any, after: Any) -> dict[str, Any]:
    return {"escrow": escrow.address, "setting": change.setting, "changed": change.changed, "tx": change.tx,
            "before": before, "after": after}


# ------------------------------------------------------------------------------------------------ show


@admin_app.command("show")
def admin_show(escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Show the fee, fee recipient, payment tokens, window rules and arbiters, and who holds each role (anyone)."""
    from verify_api.admin_view import platform_state, show_lines

    ctx = _ctx()
    esc = _escrow(escrow)
    state = platform_state(ctx.client, ctx.home, esc)
    if json_out:
        emit_json(state)
        return
    for line in show_lines(state):
        say(line)


# ------------------------------------------------------------------------------------------------ fee


@fee_app.command("set")
def fee_set(fee: Annotated[str, typer.Argument(metavar="FEE", help="In percent (0.25% or 0.25) or basis points "
                                                                   "(25bps); at most 1%.")],
            escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Set the platform fee of orders opened from now on. Run as the escrow's admin."""
    from verify_api.admin_ops import fee_json, format_fee, parse_fee, set_fee

    bps = parse_fee(fee)
    esc = _escrow(escrow)
    change = set_fee(esc, bps)
    if json_out:
        emit_json(_change_json(esc, change, fee_json(change.before), fee_json(change.after)))
    elif change.changed:
        say(f"fee set to {format_fee(change.after)} (was {format_fee(change.before)}) for orders opened from now on "
            f"(tx {change.tx})")
    else:
        say(f"the fee is already {format_fee(change.after)}; nothing sent")


# ------------------------------------------------------------------------------------------------ fee recipient


@fee_recipient_app.command("set")
def fee_recipient_set(address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The new fee recipient.")],
                      escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Set who is credited the platform fees; the fees accrued so far go to the previous recipient's credit.
    Run as the escrow's admin."""
    from verify_api.admin_ops import set_fee_recipient

    recipient = _address(address, "ADDRESS")
    esc = _escrow(escrow)
    change = set_fee_recipient(esc, recipient)
    if json_out:
        emit_json(_change_json(esc, change, change.before, change.after))
    elif change.changed:
        say(f"fee recipient set to {change.after} (was {change.before}; its accrued fees became its credit) "
            f"(tx {change.tx})")
    else:
        say(f"the fee recipient is already {change.after}; nothing sent")


# ------------------------------------------------------------------------------------------------ tokens


def _token_change(token_text: str, allowed: bool, escrow_address: str | None, json_out: bool) -> None:
    from verify_api.admin_ops import set_token_allowed

    token = _address(token_text, "TOKEN")
    esc = _escrow(escrow_address)
    change = set_token_allowed(esc, token, allowed)
    if json_out:
        emit_json({**_change_json(esc, change, change.before, change.after), "token": token})
    elif change.changed:
        say(f"token {token} {'allowed' if allowed else 'removed'}: new orders {'may' if allowed else 'may not'} "
            f"be paid in it (tx {change.tx})")
    else:
        say(f"token {token} is already {'allowed' if allowed else 'not allowed'}; nothing sent")


TokenArg = Annotated[str, typer.Argument(metavar="TOKEN", help="The ERC-20 token's address.")]


@token_app.command("allow")
def token_allow(token: TokenArg, escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Allow orders to be paid in TOKEN (an ERC-20). Run as the escrow's admin."""
    _token_change(token, True, escrow, json_out)


@token_app.command("remove")
def token_remove(token: TokenArg, escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Stop new orders from being paid in TOKEN; open orders in it settle as usual. Run as the escrow's admin."""
    _token_change(token, False, escrow, json_out)


@token_app.command("list")
def token_list(escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """List every token the escrow ever allowed, whether it still is, and the fees accrued in it (anyone)."""
    from verify_api.admin_view import token_line, token_rows

    esc = _escrow(escrow)
    rows = token_rows(esc)
    if json_out:
        emit_json({"escrow": esc.address, "tokens": rows})
        return
    if not rows:
        say(f"the escrow {esc.address} has allowed no token yet (`cardproof admin token allow TOKEN`)")
    for row in rows:
        say(token_line(row))


# ------------------------------------------------------------------------------------------------ windows


@windows_app.command("set")
def windows_set(max_delivery_period: DurationOpt = None, min_dispute_window: DurationOpt = None,
                max_dispute_window: DurationOpt = None, dispute_resolution_period: DurationOpt = None,
                escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Set window rules of orders opened (and disputes raised) from now on; the rules not given keep their values.
    Each is at least 1h; the dispute resolution period at most 90d. Run as the escrow's admin."""
    from chain.escrow_view import format_duration, parse_duration
    from verify_api.admin_ops import WINDOW_RULES, set_windows, windows_json

    given = {"max_delivery_period": max_delivery_period, "min_dispute_window": min_dispute_window,
             "max_dispute_window": max_dispute_window, "dispute_resolution_period": dispute_resolution_period}
    seconds = {name: parse_duration(text, what=f"--{name.replace('_', '-')}") if text is not None else None
               for name, text in given.items()}
    esc = _escrow(escrow)
    change = set_windows(esc, **seconds)
    if json_out:
        emit_json(_change_json(esc, change, windows_json(change.before), windows_json(change.after)))
        return
    shown = ", ".join(f"{label} {format_duration(change.after[name])}" for name, label in WINDOW_RULES.items())
    if change.changed:
        say(f"window rules set: {shown} (tx {change.tx})")
    else:
        say(f"the window rules are already {shown}; nothing sent")


# ------------------------------------------------------------------------------------------------ arbiters


def _account(text: str) -> str:
    account = _address(text, "ADDRESS")
    if account == ZERO_ADDRESS:
        raise InvalidArgument("ADDRESS: the zero address cannot be an arbiter")
    return account


def _change(command: str, account_text: str, escrow_address: str | None, json_out: bool) -> None:
    account = _account(account_text)
    escrow = _escrow(escrow_address)
    granting = command == "grant"
    tx = None
    if escrow.is_arbiter(account) != granting:  # otherwise there is nothing to change: send nothing
        receipt = escrow.grant_arbiter(account) if granting else escrow.revoke_arbiter(account)
        tx = _tx(receipt)
    arbiters = escrow.arbiters()
    out = {"escrow": escrow.address, "account": account, "role": "arbiter", "action": command,
           "changed": tx is not None, "tx": tx, "arbiters": arbiters}
    if json_out:
        emit_json(out)
        return
    if granting:
        say(f"{account} is now an arbiter of the escrow {escrow.address} (tx {tx})" if tx else
            f"{account} is already an arbiter of the escrow {escrow.address}; nothing sent")
    else:
        say(f"{account} is no longer an arbiter of the escrow {escrow.address} (tx {tx})" if tx else
            f"{account} is already not an arbiter of the escrow {escrow.address}; nothing sent")
    if not arbiters:
        say("no arbiter is left: every dispute will end with the default outcome at its deadline "
            "(grant one with `cardproof admin arbiter grant ADDRESS`)")


@arbiter_app.command("grant")
def arbiter_grant(account: AccountArg, escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Grant the arbiter role to ADDRESS. Run as the escrow's admin."""
    _change("grant", account, escrow, json_out)


@arbiter_app.command("revoke")
def arbiter_revoke(account: AccountArg, escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Revoke the arbiter role of ADDRESS; its disputes then end by their deadline. Run as the escrow's admin."""
    _change("revoke", account, escrow, json_out)


@arbiter_app.command("list")
def arbiter_list(escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """List the escrow's arbiters and admins, and how long an arbiter has to resolve a dispute (anyone)."""
    from chain.escrow_view import format_duration

    esc = _escrow(escrow)
    arbiters = esc.arbiters()
    admins = esc.admins()
    period = esc.rules().dispute_resolution_period
    out = {"escrow": esc.address, "arbiters": arbiters, "admins": admins, "dispute_resolution_period": period,
           "dispute_resolution_period_human": format_duration(period)}
    if json_out:
        emit_json(out)
        return
    say(f"escrow {esc.address}: {len(arbiters)} arbiter{'s' if len(arbiters) != 1 else ''}; a dispute waits "
        f"{format_duration(period)} for a ruling, then ends with the default outcome")
    for address in arbiters:
        say(f"  arbiter {address}")
    for address in admins:
        say(f"  admin   {address}")


def register(app: typer.Typer) -> None:
    """`cardproof admin ...`, and `cardproof arbiter ...` as an alias of `cardproof admin arbiter ...`."""
    app.add_typer(admin_app, name="admin")
    app.add_typer(arbiter_app, name="arbiter")
