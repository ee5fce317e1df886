"""`cardproof serve` and `cardproof verify`: thin layers over the API package.

(Redeemers' API keys are the supplier's: `cardproof issuer api-key ...` in ``issuer/cli.py``.)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from chain.cli_output import emit_json, say
from chain.errors import CardproofError, ConfigError

__all__ = ["register", "ApiUnreachable", "load_answer", "split_target"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON value.")]


class ApiUnreachable(CardproofError):
    """The verification API could not be reached or gave no usable answer."""

    code = "api_unreachable"


class ProofFileError(CardproofError):
    code = "invalid_proof_file"


def serve(host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
          log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
          index: Annotated[bool, typer.Option("--index/--no-index", help="Also run the event indexer (orders' "
                                                                          "timelines) in a background thread.")] = True,
          index_interval: Annotated[float, typer.Option(min=0.05, help="Seconds between indexer passes.")] = 2.0
          ) -> None:
    """Run the verification API and the QR landing pages (uvicorn, httptools, uvloop), and the event indexer.

    The public service holds no secret: it refuses to start with a key of the supplier's side in its environment."""
    import uvicorn

    refuse_secrets(os.environ)

    os.environ.setdefault("CARDPROOF_API_TUNE_GC", "true")  # a process of its own: GC tuned for latency
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cardproof-metrics-")
    kwargs = {}
    try:
        import httptools  # noqa: F401

        kwargs["http"] = "httptools"
    except ImportError:  # pragma: no cover
        pass
    try:
        import uvloop  # noqa: F401

        kwargs["loop"] = "uvloop"
    except ImportError:  # pragma: no cover
        pass
    say(f"cardproof API on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})")
    indexer = None
    if index:  # one indexer in this (the main) process, whatever the number of workers; never fatal
        from chain.settings import get_settings
        from verify_api.indexer import IndexerThread

        indexer = IndexerThread(get_settings(), interval=index_interval).start()
    try:
        options = dict(factory=True, host=host, port=port, workers=workers, lifespan="on", access_log=False,
                       log_level=log_level, proxy_headers=False, **kwargs)
        from verify_api import serving

        if workers > 1 and serving.supported():  # a socket per worker: connections spread evenly
            serving.run_workers(uvicorn.Config("verify_api.app:create_app", **options))
        else:
            uvicorn.run("verify_api.app:create_app", **options)
    finally:
        if indexer is not None:
            indexer.stop()


class SecretInEnvironment(ConfigError):
    """A secret of the supplier's side is in the public service's environment."""

    code = "secret_in_environment"


def secret_env_names() -> list[str]:
    """The environment variables that carry secrets (every ``SecretStr`` setting of ``chain.settings``)."""
    from pydantic import SecretStr

    from chain.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return sorted(f"{prefix}{name}".upper() for name, field in Settings.model_fields.items()
                  if SecretStr in getattr(field.annotation, "__args__", (field.annotation,)))


def refuse_secrets(environ: Any) -> None:
    """Refuse to run the public service with a supplier's secret (key, signing key) in its environment: it
    needs none, and a breach of it must expose none."""
    found = [name for name in secret_env_names() if environ.get(name)]
    if found:
        raise SecretInEnvironment(f"{', '.join(found)} is set: the public service holds no secret; run it "
                                  "without the supplier's keys (they belong to `cardproof issuer serve`)")


_SERIAL_IN_PATH = re.compile(r"/(?:c|v1/cards)/([^/?#]+)")


def split_target(target: str, api: str | None) -> tuple[str, str]:
    """(api base URL, serial) from a serial or a page/API URL."""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        m = _SERIAL_IN_PATH.search(parts.path)
        if not m:
            raise ConfigError(f"cannot find a serial in {target!r} (expected .../c/SERIAL or .../v1/cards/SERIAL)")
        from urllib.parse import unquote

        return (api or f"{parts.scheme}://{parts.netloc}").rstrip("/"), unquote(m.group(1))
    if not api:
        from chain.settings import get_settings

        api = get_settings().public_url
    return api.rstrip("/"), target


def fetch_answer(api: str, serial: str, timeout: float = 15.0) -> dict:
    import httpx

    from issuer.core.serial import format_serial, parse_serial

    display = format_serial(parse_serial(serial))
    url = f"{api}/v1/cards/{display}"
    try:
        r = httpx.get(url, timeout=timeout, headers={"User-Agent": "cardproof-verify/1", "Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ApiUnreachable(f"cannot reach the API at {api} ({type(exc).__name__})") from None
    try:
        body = r.json()
    except ValueError:
        raise ApiUnreachable(f"{url} answered {r.status_code} without JSON") from None
    if r.status_code != 200:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        raise ApiUnreachable(f"{url} answered {r.status_code} {err.get('code', '')}: {err.get('message', '')}".strip())
    return body


def load_answer(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProofFileError(f"no such file: {path}") from None
    except (OSError, ValueError) as exc:
        raise ProofFileError(f"{path} is not a JSON answer of the API ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "verdict" not in data:
        raise ProofFileError(f"{path} is not a JSON answer of GET /v1/cards/{{serial}}")
    return data


def _chain_client(rpc: str | None):
    """A read-only client of the chain at ``rpc`` (default: CARDPROOF_RPC_URL / the local chain)."""
    from eth_account import Account

    from chain.client import (ETH_TESTER, ChainClient, dev_account_for, guard, http_web3, resolve_rpc,
                              shared_in_process_web3)
    from chain.settings import get_settings

    url = rpc or resolve_rpc(get_settings())
    if url == ETH_TESTER:
        _, w3 = shared_in_process_web3()
    elif url.startswith(("http://", "https://")):
        w3 = http_web3(url)  # CARDPROOF_RPC_TIMEOUT
    else:
        raise ConfigError(f"--rpc must be an http(s) URL, not {url!r}")
    chain_id = guard(lambda: w3.eth.chain_id)
    # Reads only: no key is ever needed to verify. A throwaway address, or on a dev chain its well-known first
    # account (eth-tester refuses calls from an account that cannot pay for their gas).
    return ChainClient(w3, dev_account_for(w3, chain_id) or Account.create(), _chain_id=chain_id)


def _read_card_secret(code: str | None):
    """The card's code and opening from stdin for ``--code -``; never from the command line, never echoed."""
    if code is None:
        return None
    if code != "-":
        raise ConfigError("give the card's code on stdin with --code - (first line: the code, second line: its "
                          "opening); a code on the command line would stay in shell history and process lists")
    import sys

    from verify_api.verifier import read_card_secret

    return read_card_secret(sys.stdin.read())


def verify(target: Annotated[str | None, typer.Argument(metavar="SERIAL_OR_URL",
                                                        help="A serial, or the card's page/API URL.")] = None,
           api: Annotated[str | None, typer.Option(help="API base URL (default: from the URL, else "
                                                        "CARDPROOF_PUBLIC_URL).")] = None,
           rpc: Annotated[str | None, typer.Option(help="JSON-RPC URL of a node of the chain (default: "
                                                        "CARDPROOF_RPC_URL / the local chain).")] = None,
           registry: Annotated[str | None, typer.Option(help="Trust this CardRegistry for this run (default: the "
                                                             "one pinned for the chain, see `cardproof registry`). "
                                                             "Never taken from the answer.")] = None,
           proof: Annotated[Path | None, typer.Option("--proof", help="Verify a saved API answer (JSON file) "
                                                                      "instead of asking the API.")] = None,
           code: Annotated[str | None, typer.Option("--code", metavar="-",
                                                    help="'-': read the card's code (first line) and its opening "
                                                         "(second line) from stdin and check that they open the "
                                                         "leaf's commitment. Never printed.")] = None,
           json_out: JsonOpt = False) -> None:
    """Check an API answer about a card against the chain, claim by claim.

    Exit 0: every claim confirmed; 1: a claim contradicted, an unknown card (no card has this serial: not genuine,
    or not published), or an error; 3: some claim unverifiable, none contradicted.
    """
    import sys

    from verify_api.errors import VerificationMismatch
    from verify_api.trust import trusted_registry
    from verify_api.verifier import EXIT_UNVERIFIABLE, Outcome, UnknownCard, mismatches, printable, unverifiable
    from verify_api.verifier import verify as check_answer

    secret = _read_card_secret(code)
    if proof is None and not target:
        raise ConfigError("give a SERIAL_OR_URL, or --proof FILE")
    serial = None
    if target:
        base, serial = split_target(target, api or ("http://unused" if proof is not None else None))
    client = _chain_client(rpc)
    reg, pin = trusted_registry(client, registry)  # never the registry the answer names
    if proof is not None:
        answer = load_answer(proof)
        source = str(proof)
    else:
        answer = fetch_answer(base, serial)
        source = base
    result = check_answer(answer, reg, serial=serial, secret=secret)
    claims, outcome = result.claims, result.outcome
    shown_serial = serial or printable(answer.get("serial"), 40)
    if json_out:
        emit_json({"serial": shown_serial, "verdict": answer.get("verdict"), "source": source,
                   "registry": pin.to_json(), **result.to_json()})
    else:
        say(f"{shown_serial}: the API ({source}) says {printable(answer.get('verdict'), 30)}")
        say(f"  registry {pin.address} on chain {pin.chain_id}, pinned by {pin.source}: "
            "its runtime code is cardproof's CardRegistry")
        if pin.overrides_shipped:
            say(f"  note: this pin overrides the registry shipped with cardproof for chain {pin.chain_id} "
                f"({pin.overrides_shipped})")
        if result.issuer is not None:
            name = f"name on chain {printable(result.issuer_name)}" if result.issuer_name else "no name on chain"
            role = ("holds ISSUER_ROLE" if result.issuer_has_role
                    else "does NOT hold ISSUER_ROLE (struck off, or never an issuer)")
            say(f"  issuer {result.issuer}: {role}; {name}")
        for c in claims:
            say(f"  {c.mark} {c.claim}: {c.detail}")
        if outcome is Outcome.CONFIRMED:
            say(f"all {len(claims)} claims confirmed on chain")
        elif outcome is Outcome.UNKNOWN:
            say(f"{shown_serial}: UNKNOWN card: not genuine (or not published); nothing to confirm")
    if outcome is Outcome.UNKNOWN:
        raise UnknownCard(f"{shown_serial} is an unknown card: no card with this serial is known ({source}); "
                          "not genuine, or not published yet")
    if outcome is Outcome.MISMATCH:
        bad = mismatches(claims)
        raise VerificationMismatch(f"{len(bad)} of {len(claims)} claims contradicted by the chain: "
                                   + "; ".join(c.claim for c in bad))
    if outcome is Outcome.UNVERIFIABLE:
        open_ = unverifiable(claims)
        sys.stderr.write(f"cardproof: not confirmed: the chain cannot confirm {len(open_)} of {len(claims)} claims "
                         f"(none is contradicted): {'; '.join(c.claim for c in open_)}\n")
        raise typer.Exit(EXIT_UNVERIFIABLE)


registry_app = typer.Typer(help="The CardRegistry that `cardproof verify` trusts, pinned per chain id "
                                "(verify_api/trust.py).", no_args_is_help=True)


@registry_app.command("pin")
def registry_pin(address: Annotated[str, typer.Argument(metavar="ADDRESS", help="The platform's CardRegistry.")],
                 rpc: Annotated[str | None, typer.Option(help="JSON-RPC URL of a node of the chain (default: "
                                                              "CARDPROOF_RPC_URL / the local chain).")] = None,
                 json_out: JsonOpt = False) -> None:
    """Pin ADDRESS as the CardRegistry of the chain at --rpc, once its code is checked to be cardproof's.

    Written to $CARDPROOF_REGISTRIES, else $CARDPROOF_HOME/registries.json; other chains' pins are kept."""
    from verify_api.trust import pin_registry

    pin, path = pin_registry(_chain_client(rpc), address)
    if json_out:
        emit_json({**pin.to_json(), "file": str(path)})
        return
    say(f"pinned CardRegistry {pin.address} for chain {pin.chain_id} in {path}")
    if pin.overrides_shipped:
        say(f"note: this overrides the registry shipped with cardproof for chain {pin.chain_id} "
            f"({pin.overrides_shipped})")


@registry_app.command("list")
def registry_list(json_out: JsonOpt = False) -> None:
    """The pinned registries: yours (they win) and those shipped with cardproof."""
    from verify_api.trust import list_pins, user_registries_path

    pins = list_pins()
    if json_out:
        emit_json([p.to_json() for p in pins])
        return
    for p in pins:
        say(f"chain {p.chain_id}  {p.address}  pinned by {p.source}"
            + (f" (overrides shipped {p.overrides_shipped})" if p.overrides_shipped else ""))
    if not pins:
        say(f"no registry pinned: `cardproof registry pin 0xADDRESS --rpc URL` (writes {user_registries_path()})")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("verify")(verify)
    app.add_typer(registry_app, name="registry")
