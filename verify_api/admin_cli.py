"""`cardproof arbiter grant|revoke|list`: the platform admin's commands over the escrow's arbiters, thin layers over
chain/escrow.py (``Escrow.grant_arbiter`` / ``revoke_arbiter`` / ``arbiters``).

An arbiter resolves disputes until their deadline (after it, anyone settles a dispute with the default outcome;
see contracts/ICardEscrow.sol). An arbiter may be an account or a contract (a multisig, say). The escrow is
deployed with one arbiter; these commands, run as the escrow's admin, grant and revoke the others. A command run
by an account without the role fails with one line that names the role and who holds it ("run this as the admin
0xf39F..."). Granting an arbiter twice or revoking a non-arbiter sends nothing.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from chain.cli_output import emit_json, say
from verify_api.order_cli import InvalidArgument, _address, _ctx, _tx

__all__ = ["arbiter_app", "register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
AccountArg = Annotated[str, typer.Argument(metavar="ADDRESS", help="The arbiter's address (an account or a "
                                                                   "contract).")]
EscrowOpt = Annotated[str | None, typer.Option("--escrow", help="The CardEscrow's address (default: the one "
                                                                "`cardproof deploy` recorded for this chain).")]

ZERO_ADDRESS = "0x" + "00" * 20

arbiter_app = typer.Typer(help="The escrow's arbiters, who resolve disputes before their deadline: grant, revoke, "
                               "list (grant and revoke as the escrow's admin).", no_args_is_help=True)


def _escrow(escrow_address: str | None) -> Any:
    from chain.escrow import Escrow

    ctx = _ctx()
    if escrow_address is not None:
        return Escrow(ctx.client, _address(escrow_address, "--escrow"))
    return ctx.escrow


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
            f"{account} is not an arbiter of the escrow {escrow.address}; nothing sent")
    if not arbiters:
        say("no arbiter is left: every dispute will end with the default outcome at its deadline "
            "(grant one with `cardproof arbiter grant ADDRESS`)")


@arbiter_app.command("grant")
def arbiter_grant(account: AccountArg, escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Grant the arbiter role to ADDRESS (run as the escrow's admin)."""
    _change("grant", account, escrow, json_out)


@arbiter_app.command("revoke")
def arbiter_revoke(account: AccountArg, escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """Revoke the arbiter role of ADDRESS (run as the escrow's admin); its disputes then end by their deadline."""
    _change("revoke", account, escrow, json_out)


@arbiter_app.command("list")
def arbiter_list(escrow: EscrowOpt = None, json_out: JsonOpt = False) -> None:
    """List the escrow's arbiters and admins, and how long an arbiter has to resolve a dispute."""
    from chain.escrow_view import format_duration

    esc = _escrow(escrow)
    arbiters = esc.arbiters()
    admins = esc.admins()
    period = esc.rules().dispute_resolution_period
    out = {"escrow": esc.address, "arbiters": arbiters, "admins": admins, "dispute_resolution_period": period}
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
    app.add_typer(arbiter_app, name="arbiter")
