"""What the platform operator sees of the platform: the escrow's fee, fee recipient, payment tokens and window
rules, its arbiters, the registry's issuers, and who holds each role of both contracts (`cardproof admin show`).

JSON keeps the raw integers (basis points, seconds, Unix times) next to the forms people read (``"0.25%"``,
``"1h"``, ``"2026-12-02 07:10 UTC"``); :func:`show_lines` writes the latter.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from chain.deployments import Deployment, recorded
from chain.escrow import ESCROW, Escrow
from chain.escrow_view import TokenMeta, format_duration, token_meta
from chain.errors import ChainError
from chain.registry import Registry
from verify_api.admin_ops import fee_json, windows_json, windows_of

__all__ = ["format_date", "issuers", "platform_state", "show_lines", "token_line", "token_rows"]


def format_date(timestamp: float | int | None) -> str:
    """Unix seconds -> ``"2026-12-02 07:10 UTC"``; ``"-"`` when unknown."""
    if not timestamp:
        return "-"
    return dt.datetime.fromtimestamp(int(timestamp), dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _deployment_json(record: Deployment | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"deployer": record.deployer, "block_number": record.block_number, "tx_hash": record.tx_hash,
            "deployed_at": int(record.deployed_at), "deployed_at_human": format_date(record.deployed_at)}


def _meta(client: Any, address: str) -> TokenMeta | None:
    try:
        return token_meta(client, address)
    except ChainError:  # listed once, no ERC-20 (any more): show the address only
        return None


def token_rows(escrow: Escrow) -> list[dict[str, Any]]:
    """Every token the escrow ever listed: allowed or not, its symbol, and the platform fees accrued in it."""
    rows = []
    for address in escrow.token_list():
        meta = _meta(escrow.client, address)
        accrued = escrow.fees_accrued(address)
        rows.append({"address": address, "symbol": meta.symbol if meta else "",
                     "allowed": escrow.is_token_allowed(address),
                     "fees_accrued": meta.money(accrued) if meta else {"units": str(accrued)}})
    return rows


def issuers(registry: Registry) -> list[dict[str, str]]:
    """The accounts holding the registry's issuer role now, with the display names recorded on chain."""
    from chain.registry import ISSUER_ROLE
    from chain.reverts import role_holders

    holders = role_holders(registry.client, registry.address, ISSUER_ROLE, contract="CardRegistry")
    return [{"address": a, "name": registry.issuer_name(a)} for a in holders]


def platform_state(client: Any, home: Path, escrow: Escrow) -> dict[str, Any]:
    """The escrow's rules and roles, and the registry's admins, as one JSON-ready object."""
    rules = escrow.rules()
    registry = Registry(client, escrow.registry_address)
    registry_record = recorded(home, client.chain_id, "CardRegistry")
    escrow_record = recorded(home, client.chain_id, ESCROW)
    return {
        "chain_id": client.chain_id,
        "registry": {
            "address": registry.address,
            "admins": registry.admins(),
            "issuers": issuers(registry),
            "deployment": _deployment_json(registry_record if registry_record is not None
                                           and registry_record.address == registry.address else None),
        },
        "escrow": {
            "address": escrow.address,
            "admins": escrow.admins(),
            "arbiters": escrow.arbiters(),
            "deployment": _deployment_json(escrow_record if escrow_record is not None
                                           and escrow_record.address == escrow.address else None),
        },
        "fee": fee_json(rules.fee_bps),
        "max_fee": fee_json(rules.max_fee_bps),
        "fee_recipient": rules.fee_recipient,
        "tokens": token_rows(escrow),
        "windows": windows_json(windows_of(rules)),
        "window_floor": {"seconds": rules.window_floor, "human": format_duration(rules.window_floor)},
        "max_dispute_resolution_period": {"seconds": rules.max_dispute_resolution_period,
                                          "human": format_duration(rules.max_dispute_resolution_period)},
        "max_quantity": rules.max_quantity,
        "max_ranges": rules.max_ranges,
    }


def _who(accounts: list[str], deployment: dict[str, Any] | None) -> str:
    if not accounts:
        return "nobody"
    deployer = (deployment or {}).get("deployer", "").lower()
    return ", ".join(f"{a} (the deployer)" if a.lower() == deployer else a for a in accounts)


def token_line(row: dict[str, Any]) -> str:
    fees = row["fees_accrued"]
    accrued = f"{fees['amount']} {fees['symbol']}".strip() if "amount" in fees else f"{fees['units']} units"
    return (f"{row['address']}  {row['symbol'] or '?':8} {'allowed' if row['allowed'] else 'removed':8} "
            f"fees accrued {accrued}")


def show_lines(state: dict[str, Any]) -> list[str]:
    """`cardproof admin show` for people."""
    reg, esc, win = state["registry"], state["escrow"], state["windows"]
    lines = [
        f"chain {state['chain_id']}",
        f"registry {reg['address']}"
        + (f" (deployed {reg['deployment']['deployed_at_human']})" if reg["deployment"] else ""),
        f"  admin (grants and removes issuers): {_who(reg['admins'], reg['deployment'])}",
        f"  issuers ({len(reg['issuers'])}): "
        + (", ".join(f"{i['address']} ({i['name'] or 'no name'})" for i in reg["issuers"]) or "none"),
        f"escrow {esc['address']}"
        + (f" (deployed {esc['deployment']['deployed_at_human']})" if esc["deployment"] else ""),
        f"  admin (fee, tokens, windows, arbiters): {_who(esc['admins'], esc['deployment'])}",
        f"  arbiters: {_who(esc['arbiters'], esc['deployment'])}",
        f"fee {state['fee']['percent']} (cap {state['max_fee']['percent']}), paid to {state['fee_recipient']}",
        f"windows: max delivery period {win['max_delivery_period']['human']}, dispute window "
        f"{win['min_dispute_window']['human']} to {win['max_dispute_window']['human']}, dispute resolution period "
        f"{win['dispute_resolution_period']['human']} (floor {state['window_floor']['human']}, resolution at most "
        f"{state['max_dispute_resolution_period']['human']})",
        f"tokens ({len(state['tokens'])}):" if state["tokens"] else "tokens: none listed",
    ]
    lines += [f"  {token_line(row)}" for row in state["tokens"]]
    return lines
