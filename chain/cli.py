"""`cardproof chain up|down|status` and `cardproof deploy`: thin layers over chain.local_node / deployments.

Imports stay light (typer, the standard library): web3 and the client load inside the commands that use them, so
`cardproof --help` answers at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from chain import local_node
from chain.cli_output import emit_json, say

if TYPE_CHECKING:
    from chain.settings import Settings

chain_app = typer.Typer(help="Manage the local anvil chain for this CARDPROOF_HOME.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def get_settings() -> Settings:  # pydantic loads when a command runs, not for --help
    from chain.settings import get_settings as _get_settings

    return _get_settings()


@chain_app.command("up")
def chain_up(port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default 8545, or a free one).")] = None,
             json_out: JsonOpt = False) -> None:
    """Start the local chain (state persisted under CARDPROOF_HOME/chain)."""
    home = get_settings().home
    info = local_node.start(home, port=port)
    if json_out:
        emit_json({"url": info.url, "pid": info.pid, "chain_id": info.chain_id, "state": info.state_path})
    else:
        say(f"chain running at {info.url} (chain id {info.chain_id}, pid {info.pid}); state in {info.state_path}")


@chain_app.command("down")
def chain_down(json_out: JsonOpt = False) -> None:
    """Stop the local chain, saving its state."""
    info = local_node.stop(get_settings().home)
    if json_out:
        emit_json({"stopped": info is not None, "pid": info.pid if info else None})
    else:
        say(f"chain stopped (pid {info.pid}); state saved" if info else "no chain was running")


@chain_app.command("status")
def chain_status(json_out: JsonOpt = False) -> None:
    """Say whether the local chain is running and answering (exit 3: not running; 4: running, not answering)."""
    info = local_node.recorded(get_settings().home)
    answering = info is not None and local_node.rpc_chain_id(info.url) is not None
    if json_out:
        emit_json({"running": info is not None, "answering": answering, "url": info.url if info else None,
                   "pid": info.pid if info else None, "chain_id": info.chain_id if info else None})
        if info is not None and not answering:
            raise typer.Exit(4)
        return
    if info is None:
        say("chain is not running (start it with `cardproof chain up`)")
        raise typer.Exit(3)
    if not answering:
        say(f"chain running at {info.url} (pid {info.pid}) but not answering: frozen or overloaded "
            "(`cardproof chain down` stops it)")
        raise typer.Exit(4)
    say(f"chain running at {info.url} (chain id {info.chain_id}, pid {info.pid})")


def deploy_command(arbiter: Annotated[str | None, typer.Option(
                       help="The escrow's first arbiter (default: the deploying account).")] = None,
                   json_out: JsonOpt = False) -> None:
    """Deploy the CardRegistry (and, on dev chains, a test stablecoin and the CardEscrow with an arbiter);
    idempotent: exit 0, "already deployed", when it is live."""
    from web3 import Web3

    from chain.client import connect
    from chain.errors import ConfigError
    from chain.platform import deploy_platform

    body = (arbiter or "")[2:]
    if arbiter is not None and not (Web3.is_address(arbiter) and (body == body.lower() or body == body.upper()
                                                                 or Web3.is_checksum_address(arbiter))):
        raise ConfigError(f"--arbiter: {arbiter!r} is not an address (0x + 40 hex digits, EIP-55 checksum if mixed "
                          "case)")
    settings = get_settings()
    client = connect(settings)
    platform = deploy_platform(client, settings.home, arbiter=Web3.to_checksum_address(arbiter) if arbiter else None)
    record = platform.registry
    if json_out:
        emit_json(platform.to_json())
        return
    verb = "deployed" if platform.registry_created else "already deployed"
    say(f"CardRegistry {verb} at {record.address} on chain {record.chain_id} (block {record.block_number})")
    if platform.escrow is not None and platform.stablecoin is not None:
        say(f"CardEscrow at {platform.escrow.address}; test stablecoin at {platform.stablecoin.address}")
