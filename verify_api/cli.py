"""`cardproof serve`, `cardproof verify` and `cardproof api-key ...`: thin layers over the API package."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated
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
    """Run the verification API and the QR landing pages (uvicorn, httptools, uvloop), and the event indexer."""
    import uvicorn

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
        from issuer.indexer import IndexerThread

        indexer = IndexerThread(get_settings(), interval=index_interval).start()
    try:
        uvicorn.run("verify_api.app:create_app", factory=True, host=host, port=port, workers=workers,
                    lifespan="on", access_log=False, log_level=log_level, proxy_headers=False, **kwargs)
    finally:
        if indexer is not None:
            indexer.stop()


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


def _registry(rpc: str | None, address: str):
    from eth_account import Account

    from chain.client import ETH_TESTER, ChainClient, guard, http_web3, resolve_rpc, shared_in_process_web3
    from chain.registry import Registry
    from chain.settings import get_settings

    url = rpc or resolve_rpc(get_settings())
    if url == ETH_TESTER:
        _, w3 = shared_in_process_web3()
    elif url.startswith(("http://", "https://")):
        w3 = http_web3(url, timeout=15)
    else:
        raise ConfigError(f"--rpc must be an http(s) URL, not {url!r}")
    chain_id = guard(lambda: w3.eth.chain_id)
    # Reads only: a throwaway address is enough; no key is ever needed to verify.
    return Registry(ChainClient(w3, Account.create(), _chain_id=chain_id), address)


def verify(target: Annotated[str | None, typer.Argument(metavar="SERIAL_OR_URL",
                                                        help="A serial, or the card's page/API URL.")] = None,
           api: Annotated[str | None, typer.Option(help="API base URL (default: from the URL, else "
                                                        "CARDPROOF_PUBLIC_URL).")] = None,
           rpc: Annotated[str | None, typer.Option(help="JSON-RPC URL of a node of the chain (default: "
                                                        "CARDPROOF_RPC_URL / the local chain).")] = None,
           registry: Annotated[str | None, typer.Option(help="Registry address to check against (default: "
                                                             "the one the answer names).")] = None,
           proof: Annotated[Path | None, typer.Option("--proof", help="Verify a saved API answer (JSON file) "
                                                                      "instead of asking the API.")] = None,
           json_out: JsonOpt = False) -> None:
    """Check an API answer about a card against the chain, claim by claim; exit 1 on any mismatch."""
    from web3 import Web3

    from verify_api.errors import VerificationMismatch
    from verify_api.verifier import mismatches, verify_answer

    serial = None
    if proof is not None:
        answer = load_answer(proof)
        if target:
            serial = split_target(target, api or "http://unused")[1]
        source = str(proof)
    else:
        if not target:
            raise ConfigError("give a SERIAL_OR_URL, or --proof FILE")
        base, serial = split_target(target, api)
        answer = fetch_answer(base, serial)
        source = base
    address = registry or (answer.get("batch") or {}).get("registry")
    if not address:
        if answer.get("verdict") == "unknown":
            address = None
        else:
            raise ConfigError("the answer names no registry: pass --registry ADDRESS")
    if address is not None and not Web3.is_address(address):
        raise ConfigError(f"not a registry address: {address!r}")
    if address is None:
        from verify_api.verifier import Claim

        claims = [Claim("no proof offered", True, "verdict 'unknown': the API claims no card with this serial")]
    else:
        reg = _registry(rpc, address)
        claims = verify_answer(answer, reg, serial=serial, registry_pinned=registry is not None)
    bad = mismatches(claims)
    if json_out:
        emit_json({"serial": answer.get("serial"), "verdict": answer.get("verdict"), "source": source,
                   "registry": address, "registry_from_answer": registry is None, "claims": [c.to_json() for c in claims],
                   "confirmed": not bad})
    else:
        say(f"{answer.get('serial')}: the API ({source}) says {answer.get('verdict')!r}")
        for c in claims:
            say(f"  {'✓' if c.confirmed else '✗'} {c.claim}: {c.detail}")
        if registry is None and address is not None:
            say(f"  (registry {address} as named by the answer; pin it with --registry)")
        if not bad:
            say(f"all {len(claims)} claims confirmed on chain")
    if bad:
        raise VerificationMismatch(f"{len(bad)} of {len(claims)} claims not confirmed on chain: "
                                   + "; ".join(c.claim for c in bad))


api_key_app = typer.Typer(help="API keys of issuers' redeemers (POST /v1/cards/{serial}/redeem).",
                          no_args_is_help=True)


@api_key_app.command("create")
def api_key_create(issuer: Annotated[str, typer.Option(help="The issuer whose cards the key may redeem.")],
                   label: Annotated[str, typer.Option(help="A note, e.g. the shop or till.")] = "",
                   json_out: JsonOpt = False) -> None:
    """Create a key; it is printed once and stored only hashed."""
    from issuer.runtime import Runtime
    from verify_api.auth import create_api_key

    with Runtime().sessions.begin() as session:
        key, row = create_api_key(session, issuer, label)
        info = {"key": key, "key_id": row.key_id, "issuer": row.issuer_address, "label": row.label}
    if json_out:
        emit_json(info)
    else:
        say(f"API key for issuer {info['issuer']} (shown once, keep it secret):\n{key}")


@api_key_app.command("list")
def api_key_list(issuer: Annotated[str | None, typer.Option(help="Only this issuer's keys.")] = None,
                 json_out: JsonOpt = False) -> None:
    """List keys (ids only; secrets are never stored)."""
    from issuer.runtime import Runtime
    from verify_api.auth import list_api_keys

    with Runtime().sessions() as session:
        rows = [{"key_id": k.key_id, "issuer": k.issuer_address, "label": k.label,
                 "created_at": k.created_at.isoformat(), "revoked": k.revoked_at is not None,
                 "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None}
                for k in list_api_keys(session, issuer)]
    if json_out:
        emit_json(rows)
        return
    for r in rows:
        say(f"{r['key_id']}  {r['issuer']}  {'revoked' if r['revoked'] else 'active'}  {r['label']}")
    if not rows:
        say("no API keys")


@api_key_app.command("revoke")
def api_key_revoke(key_id: Annotated[str, typer.Argument(help="The key id (or the whole key).")],
                   json_out: JsonOpt = False) -> None:
    """Revoke a key at once."""
    from issuer.runtime import Runtime
    from verify_api.auth import revoke_api_key

    with Runtime().sessions.begin() as session:
        done = revoke_api_key(session, key_id)
    if json_out:
        emit_json({"revoked": done})
    else:
        say("revoked" if done else "no such active key")
    if not done:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("verify")(verify)
    app.add_typer(api_key_app, name="api-key")
