"""The node's configuration: one TOML file or the environment.

File: ``--config FILE``, else ``CARDPROOF_NODE_CONFIG``, else ``$CARDPROOF_HOME/node.toml`` when present. Keys (the
file may put them at top level or under ``[node]``)::

    public_urls   = ["https://cards.example"]   # where sealed deliveries are published (default: CARDPROOF_PUBLIC_URL)
    escrow        = "0x..."                     # the CardEscrow to watch (default: the one `cardproof deploy` recorded)
    poll_interval = 0.5                         # SECONDS between passes over the chain (a number: 0.5 is half a second)
    workers       = 64                          # orders in hand at once (4 at a time read, seal and sign;
                                                # the others await receipts or upload)
    low_stock     = 100                         # stock.low fires when a product's available cards fall below it
    confirmations = 0                           # blocks on top of an OrderOpened before it is handled
    reorg_depth   = 12                          # blocks re-read every pass (reorganised-away orders are seen)
    start_block   = 0                           # first block to read OrderOpened from (default: 0)

Environment (used for what the file does not say): CARDPROOF_NODE_PUBLIC_URLS (comma list), CARDPROOF_NODE_ESCROW,
CARDPROOF_NODE_POLL_INTERVAL (seconds), CARDPROOF_NODE_WORKERS, CARDPROOF_NODE_LOW_STOCK,
CARDPROOF_NODE_CONFIRMATIONS, CARDPROOF_NODE_REORG_DEPTH, CARDPROOF_NODE_START_BLOCK. A bad value is a one-line
:class:`NodeConfigError`: an address must be 0x + 40 hex digits with a right EIP-55 checksum if it has mixed case
(chain/addresses.py); ``poll_interval`` is the one duration and its name says its unit: a number of seconds
(``0.2``), or with the unit said (``0.2s``, ``200ms``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chain.addresses import address_problem, parse_address
from chain.errors import ConfigError

ENV_PREFIX = "CARDPROOF_NODE_"
KEYS = ("public_urls", "escrow", "poll_interval", "workers", "low_stock", "confirmations", "reorg_depth",
        "start_block")


class NodeConfigError(ConfigError):
    """The node's configuration is invalid (one line)."""


@dataclass(frozen=True)
class NodeConfig:
    public_urls: tuple[str, ...] = ()
    #: The CardEscrow to watch (checksummed); None: the deployment recorded for this chain.
    escrow: str | None = None
    #: Seconds between passes over the chain.
    poll_interval: float = 0.5
    workers: int = 64
    low_stock: int = 100
    confirmations: int = 0
    reorg_depth: int = 12
    start_block: int = 0
    #: The file it was read from, if any.
    source: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["public_urls"] = list(self.public_urls)
        return d


def _bad(where: str, key: str, why: str) -> NodeConfigError:
    return NodeConfigError(f"node configuration ({where}): {key} {why}")


def _number(where: str, key: str, value: Any, kind: type, low: float, high: float | None = None) -> Any:
    if isinstance(value, bool):
        raise _bad(where, key, f"must be a number, not {value!r}")
    try:
        out = kind(value) if kind is float else int(str(value).strip()) if isinstance(value, str) else value
        if kind is int and (not isinstance(out, int) or isinstance(out, bool)):
            if isinstance(out, float) and out.is_integer():
                out = int(out)
            else:
                raise ValueError
    except (TypeError, ValueError):
        raise _bad(where, key, f"must be {'an integer' if kind is int else 'a number'}, not {value!r}") from None
    if out < low or (high is not None and out > high):
        raise _bad(where, key, f"must be between {low} and {high}" if high is not None else f"must be >= {low}")
    return out


def _seconds(where: str, key: str, value: Any, low: float, high: float) -> float:
    """A number of seconds (the key's name says the unit): ``0.2``, or ``"0.2s"`` / ``"200ms"`` with the unit."""
    if isinstance(value, str):
        raw = value.strip().lower()
        scale = 0.001 if raw.endswith("ms") else 1.0
        raw = raw.removesuffix("ms") if scale != 1.0 else raw.removesuffix("s")
        try:
            out = float(raw) * scale
        except ValueError:
            raise _bad(where, key, f"must be a number of seconds (like 0.5 or 500ms), not {value!r}") from None
    else:
        out = _number(where, key, value, float, low, high)
    if not low <= out <= high:
        raise _bad(where, key, f"must be between {low:g} and {high:g} seconds ({out:g} s given)")
    return out


def _address(where: str, key: str, value: Any) -> str:
    problem = address_problem(value)
    if problem is not None:
        raise _bad(where, key, f"{value!r} {problem}" if isinstance(value, str) and len(value) <= 100 else problem)
    return parse_address(value, key)


def _urls(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [u.strip() for u in value.split(",")]
    elif isinstance(value, list | tuple):
        items = [str(u).strip() for u in value]
    else:
        raise _bad(where, "public_urls", "must be a list of URLs")
    items = [u for u in items if u]
    for u in items:
        if not (u.startswith("http://") or u.startswith("https://")):
            raise _bad(where, "public_urls", f"has {u!r}, not an http(s) URL")
    return tuple(u.rstrip("/") for u in items)


def _validate(raw: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "public_urls":
            out[key] = _urls(where, value)
        elif key == "escrow":
            out[key] = _address(where, key, value)
        elif key == "poll_interval":
            out[key] = _seconds(where, key, value, 0.01, 3600)
        elif key == "workers":
            out[key] = _number(where, key, value, int, 1, 512)
        elif key in ("low_stock", "confirmations", "start_block"):
            out[key] = _number(where, key, value, int, 0)
        elif key == "reorg_depth":
            out[key] = _number(where, key, value, int, 0, 10_000)
        else:
            raise _bad(where, key, f"is not a setting (known: {', '.join(KEYS)})")
    return out


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NodeConfigError(f"cannot read the node configuration {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise NodeConfigError(f"node configuration {path} is not valid TOML: {str(exc).splitlines()[0]}") from None
    data = {k: v for k, v in data.items() if k != "webhooks"}  # the [webhooks] table is issuer.webhooks'
    if isinstance(data.get("node"), dict):
        rest = {k: v for k, v in data.items() if k != "node"}
        data = {**rest, **data["node"]}
    return _validate(data, str(path))


def _read_env(env: dict[str, str]) -> dict[str, Any]:
    raw = {key: env[ENV_PREFIX + key.upper()] for key in KEYS
           if env.get(ENV_PREFIX + key.upper(), "").strip() != ""}
    return _validate(raw, "environment")


def load_config(path: str | Path | None = None, *, settings: Any = None,
                env: dict[str, str] | None = None) -> NodeConfig:
    """The node's configuration: the file (``path``, CARDPROOF_NODE_CONFIG, or $CARDPROOF_HOME/node.toml if it
    exists), completed by the environment, then the defaults (public_urls: ``settings.public_url``)."""
    env = dict(os.environ) if env is None else env
    if settings is None:
        from chain.settings import get_settings

        settings = get_settings()
    chosen: Path | None = None
    if path is not None:
        chosen = Path(path).expanduser()
    elif env.get(ENV_PREFIX + "CONFIG", "").strip():
        chosen = Path(env[ENV_PREFIX + "CONFIG"].strip()).expanduser()
    elif (Path(settings.home) / "node.toml").is_file():
        chosen = Path(settings.home) / "node.toml"
    values = _read_env(env)
    if chosen is not None:
        values.update(_read_file(chosen))
    if not values.get("public_urls"):
        values["public_urls"] = _urls("settings", [settings.public_url]) if settings.public_url else ()
    return NodeConfig(**values, source=str(chosen) if chosen else None)
