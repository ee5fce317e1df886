"""The verifier's trust anchor: which CardRegistry `cardproof verify` believes, per chain id.

An API answer names a registry, but a counterfeiter's API can name a look-alike contract of its own. So the
verifier never takes the registry from the answer. It uses the registry *pinned* for the chain it talks to:

1. ``--registry ADDR`` on the command line (this run only), else
2. the user's file: ``$CARDPROOF_REGISTRIES`` if set, else ``$CARDPROOF_HOME/registries.json``
   (written by ``cardproof registry pin ADDR``), else
3. the list shipped with the package, ``verify_api/registries.json``.

With none of them for the chain, verification stops (:class:`NoPinnedRegistry`, one line saying how to pin).

Whatever its source, the pinned address must hold exactly the contract cardproof ships: its runtime bytecode
(``eth_getCode``) must equal the ``deployedBytecode`` of ``chain/artifacts/CardRegistry.json`` byte for byte,
metadata hash included. CardRegistry has no immutables, so a genuine deployment's runtime code *is* the
artifact's (``tests/api/test_verifier_attacks.py`` checks this on both chains); any other contract, including
one built from modified sources or by another compiler, is refused (:class:`NotTheRegistry`).

File format (the shipped list and the user's file alike)::

    {
      "format": "cardproof-registries/1",
      "registries": {"<decimal chain id>": "0x<40 hex digits>"}
    }

Other top-level keys (``"about"``) are ignored. A mixed-case address must carry a valid EIP-55 checksum.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexbytes import HexBytes
from web3 import Web3

from chain.artifacts import load_artifact
from chain.client import ChainClient, guard
from chain.deployments import REGISTRY
from chain.errors import CardproofError
from chain.registry import Registry

__all__ = [
    "FORMAT",
    "REGISTRIES_ENV",
    "SHIPPED_REGISTRIES",
    "InvalidRegistryAddress",
    "NoContractAtAddress",
    "NoPinnedRegistry",
    "NotTheRegistry",
    "PinnedRegistry",
    "RegistriesFileError",
    "TrustError",
    "check_registry_code",
    "list_pins",
    "load_pins",
    "pin_registry",
    "resolve_pin",
    "trusted_registry",
    "user_registries_path",
]

FORMAT = "cardproof-registries/1"
#: Environment variable naming the user's registries file (default ``$CARDPROOF_HOME/registries.json``).
REGISTRIES_ENV = "CARDPROOF_REGISTRIES"
#: The list shipped with the package.
SHIPPED_REGISTRIES = Path(__file__).resolve().parent / "registries.json"

SOURCE_OPTION = "--registry"
SOURCE_SHIPPED = "shipped with cardproof"


class TrustError(CardproofError):
    """The verifier has no registry it may trust for this chain, or the one pinned is not a CardRegistry."""

    code = "trust_error"


class NoPinnedRegistry(TrustError):
    """No registry is pinned for the chain the verifier talks to."""

    code = "no_pinned_registry"


class RegistriesFileError(TrustError):
    """A registries file (shipped or the user's) is unreadable or malformed."""

    code = "invalid_registries_file"


class InvalidRegistryAddress(TrustError, ValueError):
    """A registry address is not an Ethereum address."""

    code = "invalid_registry_address"


class NotTheRegistry(TrustError):
    """The contract at the pinned address is not the CardRegistry that cardproof ships."""

    code = "registry_code_mismatch"


class NoContractAtAddress(NotTheRegistry):
    """There is no contract at all at the pinned address on this chain."""

    code = "no_contract"


@dataclass(frozen=True)
class PinnedRegistry:
    """The registry the verifier trusts on ``chain_id``, and why."""

    chain_id: int
    address: str
    #: ``--registry``, ``shipped with cardproof`` or the path of the user's file.
    source: str
    #: The shipped list's address for this chain when the pin overrides a different one, else None.
    overrides_shipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "address": self.address, "pinned_by": self.source,
                "overrides_shipped": self.overrides_shipped}


def check_address(text: Any, where: str = "registry address") -> str:
    """The checksummed address, or InvalidRegistryAddress (the text is public: it may be quoted)."""
    if not isinstance(text, str) or not Web3.is_address(text.strip()):
        shown = text if isinstance(text, str) and len(text) <= 64 else type(text).__name__
        raise InvalidRegistryAddress(f"{where}: {shown!r} is not an address (0x and 40 hex digits; a mixed-case "
                                     "address needs a valid checksum)")
    return Web3.to_checksum_address(text.strip())


def user_registries_path() -> Path:
    """``$CARDPROOF_REGISTRIES``, else ``registries.json`` in CARDPROOF_HOME (see chain/settings.py)."""
    env = os.environ.get(REGISTRIES_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    from chain.settings import get_settings

    return get_settings().home / "registries.json"


def load_pins(path: Path, *, missing_ok: bool = True) -> dict[int, str]:
    """chain id -> checksummed address from a registries file; {} for a missing file when ``missing_ok``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise RegistriesFileError(f"no registries file at {path}") from None
    except OSError as exc:
        raise RegistriesFileError(f"cannot read the registries file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise RegistriesFileError(f"{path} is not JSON (expected {{\"format\": \"{FORMAT}\", "
                                  "\"registries\": {\"<chain id>\": \"0x...\"}})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("registries"), dict):
        raise RegistriesFileError(f"{path} is not a registries file (expected {{\"format\": \"{FORMAT}\", "
                                  "\"registries\": {\"<chain id>\": \"0x...\"}})")
    pins: dict[int, str] = {}
    for key, value in data["registries"].items():
        if not (isinstance(key, str) and key.isdecimal() and 0 < int(key) < 2**64):
            raise RegistriesFileError(f"{path}: {key!r} is not a chain id (a decimal number)")
        try:
            pins[int(key)] = check_address(value, f"{path}, chain {key}")
        except InvalidRegistryAddress as exc:
            raise RegistriesFileError(str(exc)) from None
    return pins


def resolve_pin(chain_id: int, override: str | None = None, *, user_file: Path | None = None,
                shipped_file: Path | None = None) -> PinnedRegistry:
    """The registry pinned for ``chain_id``: ``override`` (--registry), else the user's file, else the shipped
    list; NoPinnedRegistry when none has it."""
    shipped = load_pins(shipped_file or SHIPPED_REGISTRIES).get(chain_id)
    if override is not None:
        address, source = check_address(override, SOURCE_OPTION), SOURCE_OPTION
    else:
        path = user_file or user_registries_path()
        address = load_pins(path).get(chain_id)
        source = str(path)
        if address is None and shipped is not None:
            address, source = shipped, SOURCE_SHIPPED
        if address is None:
            raise NoPinnedRegistry(
                f"no CardRegistry is pinned for chain {chain_id}: pin the platform's registry with "
                f"`cardproof registry pin 0xADDRESS` (writes {path}), or pass --registry 0xADDRESS")
    return PinnedRegistry(chain_id, address, source, shipped if shipped not in (None, address) else None)


def check_registry_code(client: ChainClient, address: str) -> None:
    """NotTheRegistry unless the runtime code at ``address`` is exactly the shipped artifact's deployedBytecode."""
    code = HexBytes(guard(lambda: client.w3.eth.get_code(Web3.to_checksum_address(address))))
    expected = HexBytes(load_artifact(REGISTRY).deployed_bytecode)
    if not code:
        raise NoContractAtAddress(f"there is no contract at {address} on chain {client.chain_id}: "
                                  "it cannot be the CardRegistry")
    if code != expected:
        raise NotTheRegistry(
            f"the contract at {address} on chain {client.chain_id} is not the CardRegistry this cardproof ships: "
            f"its runtime bytecode differs ({len(code)} bytes, keccak {bytes(Web3.keccak(code))[:8].hex()}…; "
            f"expected {len(expected)} bytes, keccak {bytes(Web3.keccak(expected))[:8].hex()}…)")


def trusted_registry(client: ChainClient, override: str | None = None, *,
                     user_file: Path | None = None) -> tuple[Registry, PinnedRegistry]:
    """The registry pinned for the client's chain, its code checked: the only one the verifier reads."""
    pin = resolve_pin(client.chain_id, override, user_file=user_file)
    check_registry_code(client, pin.address)
    return Registry(client, pin.address), pin


def pin_registry(client: ChainClient, address: str, *, user_file: Path | None = None) -> tuple[PinnedRegistry, Path]:
    """Check that ``address`` holds the shipped CardRegistry on the client's chain, then pin it there in the
    user's file (created if needed; other chains' pins are kept). Returns the pin and the file."""
    address = check_address(address)
    check_registry_code(client, address)
    path = user_file or user_registries_path()
    pins = load_pins(path)
    pins[client.chain_id] = address
    data = {"format": FORMAT, "registries": {str(k): v for k, v in sorted(pins.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    shipped = load_pins(SHIPPED_REGISTRIES).get(client.chain_id)
    overrides = shipped if shipped not in (None, address) else None
    return PinnedRegistry(client.chain_id, address, str(path), overrides), path


def list_pins(*, user_file: Path | None = None) -> list[PinnedRegistry]:
    """Every pin, by chain id: the user's (overriding) and the shipped list's."""
    path = user_file or user_registries_path()
    shipped = load_pins(SHIPPED_REGISTRIES)
    mine = load_pins(path)
    out = []
    for chain_id in sorted(set(shipped) | set(mine)):
        if chain_id in mine:
            s = shipped.get(chain_id)
            out.append(PinnedRegistry(chain_id, mine[chain_id], str(path), s if s not in (None, mine[chain_id])
                                      else None))
        else:
            out.append(PinnedRegistry(chain_id, shipped[chain_id], SOURCE_SHIPPED))
    return out
