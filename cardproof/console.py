"""The `cardproof` console script: gathers every side's commands and presents errors as one line.

It sits above both sides (docs/two-sides.md): the chain's commands (`chain.cli`), the supplier's
(`issuer.cli`) and the public side's (`verify_api.cli`, and the order commands in `verify_api.order_cli`).

Commands are thin: they parse options, call a library function and present its result. Any
:class:`chain.errors.CardproofError` becomes one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer

try:  # typer >= 0.2x vendors click as typer._click, with Exit/Abort in typer.exceptions
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException, NoArgsIsHelpError

import issuer.cli as issuer_cli  # the supplier's side
import verify_api.cli as verify_api_cli  # the public side
import verify_api.admin_cli as admin_cli  # the platform admin: arbiters
import verify_api.order_cli as order_cli  # the public side: orders (buyer, platform), faucet, index
from chain.cli import chain_app, deploy_command
from chain.errors import CardproofError
from issuer.core.errors import CoreError  # the pure core's errors (bad serial, leaf, proof) are user errors too

app = typer.Typer(
    name="cardproof",
    help="Blockchain-anchored provenance and settlement for card keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(chain_app, name="chain")
app.command("deploy")(deploy_command)

for _side in (issuer_cli, verify_api_cli, order_cli, admin_cli):
    _side.register(app)
# Delivering is the supplier's act, recorded in its database before broadcast (issuer.escrow_acts).
issuer_cli.register_order_commands(order_cli.order_app)

EXIT_ERROR = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        rc = command.main(args=argv, prog_name="cardproof", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("cardproof: aborted\n")
        return EXIT_ERROR
    except NoArgsIsHelpError as exc:
        exc.show()
        return EXIT_USAGE
    except ClickException as exc:
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) is not None else "cardproof: "
        message = " ".join(exc.format_message().split())
        sys.stderr.write(f"{where}{message} (see --help)\n")
        return EXIT_USAGE
    except (CardproofError, CoreError) as exc:
        sys.stderr.write(f"cardproof: {' '.join(str(exc).split())}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("cardproof: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, never a traceback
        if os.environ.get("CARDPROOF_DEBUG"):
            raise
        sys.stderr.write(f"cardproof: internal error ({type(exc).__name__}); set CARDPROOF_DEBUG=1 for details\n")
        return EXIT_ERROR
    return rc if isinstance(rc, int) else 0


def entry() -> None:
    sys.exit(main())
