"""The `cardproof` console script: gathers every side's commands and presents errors as one line.

It sits above both sides (docs/two-sides.md): the chain's commands (`chain.cli`), the supplier's
(`issuer.cli`) and the public side's (`verify_api.cli`, and the order commands in `verify_api.order_cli`).

Commands are thin: they parse options, call a library function and present its result. One convention for every
command (README, "One convention for every command"):

* exit 0: done (also "already done" for a repeated idempotent command); 1: refused (any
  :class:`chain.errors.CardproofError` or core error, one line on stderr, never a traceback); 2: usage (bad
  option or argument); 130: interrupted (one line saying so). A few commands document more (``verify``: 3).
* with ``--json`` an error is JSON too: ``{"error": {"code": ..., "message": ...}}`` on stdout (the one line still
  goes to stderr), ``code`` a stable snake_case name (chain/cli_output.py).
* ``cardproof --help`` and ``cardproof GROUP --help`` stay quick: the command modules import web3, eth-account,
  SQLAlchemy and FastAPI only inside the commands that need them (tests/cli/test_console_fast_help.py).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

try:  # typer >= 0.2x vendors click as typer._click, with Exit/Abort in typer.exceptions
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException, NoArgsIsHelpError

import issuer.cli as issuer_cli  # the supplier's side
import verify_api.cli as verify_api_cli  # the public side
import verify_api.admin_cli as admin_cli  # the platform operator: admin ... (fee, tokens, windows), arbiter ...
import verify_api.order_cli as order_cli  # the public side: orders (buyer, platform), faucet, index
from cardproof.help_style import tidy_help
from chain import cli_output
from chain.cli import chain_app, deploy_command
from chain.errors import CardproofError, ChainUnreachable, NotDeployed
from issuer.core.errors import CoreError  # the pure core's errors (bad serial, leaf, proof) are user errors too

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _version_callback(value: bool) -> None:
    if value:
        cli_output.say(f"cardproof {package_version()}")
        raise typer.Exit(EXIT_OK)


def package_version() -> str:
    """The installed distribution's version (pyproject.toml), or "unknown" when run from a bare checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cardproof")
    except PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


app = typer.Typer(
    name="cardproof",
    help="Blockchain-anchored provenance and settlement for card keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version_callback,
                                       help="Print cardproof's version and exit.")) -> None:
    """Blockchain-anchored provenance and settlement for card keys."""


app.add_typer(chain_app, name="chain")
app.command("deploy")(deploy_command)

for _side in (issuer_cli, verify_api_cli, order_cli, admin_cli):
    _side.register(app)
# Delivering is the supplier's act, recorded in its database before broadcast (issuer.escrow_acts).
issuer_cli.register_order_commands(order_cli.order_app)


def _epilog() -> str:
    from chain.home import describe_home

    return (f"State (databases, keys, deployments, the local chain) lives in {describe_home()}. "
            "Exit codes: 0 done, 1 refused, 2 usage, 130 interrupted. See README.md.")


def _wants_json(argv: list[str]) -> bool:
    """Whether ``--json`` was given (before a ``--``): errors are then JSON on stdout too."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def _explain(exc: BaseException, message: str) -> str:
    """Add where to look to a few errors' line: CARDPROOF_RPC_URL when the URL it names fails for a wrong-URL reason
    (refused, unknown host, not JSON-RPC; a frozen node's time-out is not a wrong URL), the state folder when a
    deployment is missing."""
    if isinstance(exc, ChainUnreachable):
        from chain.rpc import WRONG_URL_REASONS

        url = (os.environ.get("CARDPROOF_RPC_URL") or "").strip().rstrip("/")
        if url and url in message and any(reason in message for reason in WRONG_URL_REASONS):
            return f"{message}; check CARDPROOF_RPC_URL"
    elif isinstance(exc, NotDeployed):
        from chain.home import describe_home

        return f"{message} (deployments are recorded in {describe_home()})"
    return message


def _fail(code: str, message: str, rc: int, json_mode: bool, where: str = "cardproof: ") -> int:
    sys.stderr.write(f"{where}{message}\n")
    if json_mode and not cli_output.json_was_emitted():
        cli_output.emit_error(code, message)
    return rc


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (what a BrokenPipeError usually means here): the
    pipe reports an error to poll(), or flushing it fails."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd is not None:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
            return True
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        return True
    except OSError:
        return False
    return False


def _invoke(command: Any, args: list[str]) -> Any:
    """What click's ``Command.main(standalone_mode=False)`` does, minus its handling of ^C (typer's turns it into a
    silent exit 130): shell completion requests first (they exit), then parse and run the command."""
    command._main_shell_completion({}, "cardproof")
    with command.make_context("cardproof", list(args)) as ctx:
        return command.invoke(ctx)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = _wants_json(args)
    cli_output.reset_json_emitted()
    command = typer.main.get_command(app)
    tidy_help(command)
    command.epilog = _epilog()
    try:
        rc = _invoke(command, args)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # a prompt turns ^C into Abort
            return _fail("interrupted", "interrupted", EXIT_INTERRUPTED, json_mode)
        return _fail("aborted", "aborted", EXIT_ERROR, json_mode)
    except EOFError:  # a prompt on a closed stdin
        return _fail("aborted", "aborted: no input", EXIT_ERROR, json_mode)
    except NoArgsIsHelpError as exc:
        exc.show()
        return EXIT_USAGE
    except ClickException as exc:
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) is not None else "cardproof: "
        message = " ".join(exc.format_message().split()).rstrip(".")
        return _fail(cli_output.error_code(exc), f"{message} (see --help)", EXIT_USAGE, json_mode, where)
    except (CardproofError, CoreError) as exc:
        message = " ".join(str(exc).split())
        message = _explain(exc, message)
        return _fail(cli_output.error_code(exc), message, EXIT_ERROR, json_mode)
    except KeyboardInterrupt:
        return _fail("interrupted", "interrupted", EXIT_INTERRUPTED, json_mode)
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a pipe or socket of the command's own broke: an error to report, not silence
            return _fail("broken_pipe", f"a connection broke ({' '.join(str(exc).split()) or 'broken pipe'})",
                         EXIT_ERROR, json_mode)
        # `cardproof batches | head -1`: the reader left; nothing more to say
        try:  # the interpreter flushes stdout at exit: point it at /dev/null (Python docs, "Note on SIGPIPE")
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, never a traceback
        if os.environ.get("CARDPROOF_DEBUG"):
            raise
        return _fail("internal_error", f"internal error ({type(exc).__name__}); set CARDPROOF_DEBUG=1 for details",
                     EXIT_ERROR, json_mode)
    return rc if isinstance(rc, int) else EXIT_OK


def entry() -> None:
    sys.exit(main())
