"""Turn backend-specific revert exceptions into typed :class:`chain.errors.ContractRevert` errors.

eth-tester raises ``eth_tester.exceptions.TransactionFailed`` whose message embeds the revert bytes as a
Python bytes literal; JSON-RPC nodes (anvil) make web3 raise ``ContractCustomError`` /
``ContractLogicError`` carrying hex ``data``. Both end up here as the same typed error.

A missing role is explained here too, for every contract (:func:`naming_roles`, :func:`role_required`): the
error names the role ("admin", "issuer", "arbiter") and the accounts holding it, read from the contract (its role
members, or its RoleGranted events) and marked "(its deployer)" when the deployments file says so; never a role
hash.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector, keccak, to_checksum_address

from chain.artifacts import available_artifacts, load_artifact
from chain.errors import (
    AccessControlUnauthorizedAccount,
    ContractRevert,
    Panic,
    RevertReason,
    RoleRequired,
    TransactionReverted,
)

if TYPE_CHECKING:
    from chain.client import ChainClient

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
_HEX_RE = re.compile(r"0x[0-9a-fA-F]{8,}")
#: Messages of py-evm's non-revert VM errors (out of gas, invalid opcode, bad jump, stack limits, static-call
#: writes). eth-tester raises them as TransactionFailed(text), just like a decoded Error(string) reason, but they
#: are no revert: a JSON-RPC node reports them without revert data.
_PYEVM_VM_ERROR_RE = re.compile(
    r"^\(?'?(?:Out of gas: Needed \d+|Net-metered SSTORE always fails|Invalid opcode 0x[0-9a-f]+ @ \d+"
    r"|Invalid Jump Destination|Jump resulted in invalid instruction|Stack limit reached"
    r"|Stack depth limit reached|Wanted \d+ stack items?,|Insufficient stack items for "
    r"|Cannot modify state while inside of a STATICCALL context)"
)


def _abi_type(param: dict[str, Any]) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


@cache
def error_table() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """4-byte selector -> (error name, param names, param types), over every known contract ABI."""
    table: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in available_artifacts():
        for item in load_artifact(name).abi:
            if item.get("type") != "error":
                continue
            types = [_abi_type(p) for p in item["inputs"]]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            table[selector] = (item["name"], [p["name"] for p in item["inputs"]], types)
    return table


def decode_revert_data(data: bytes) -> TransactionReverted:
    """Decode raw revert data into the matching typed error (or a generic one)."""
    if not data:
        return TransactionReverted("transaction reverted without a reason", data)
    selector, payload = data[:4], data[4:]
    if selector == ERROR_STRING_SELECTOR:
        (reason,) = abi_decode(["string"], payload)
        return RevertReason("Error", data, reason=reason)
    if selector == PANIC_SELECTOR:
        (code,) = abi_decode(["uint256"], payload)
        return Panic("Panic", data, code=code)
    entry = error_table().get(selector)
    if entry is None:
        return TransactionReverted(f"transaction reverted with unknown error 0x{data[:4].hex()}", data)
    name, names, types = entry
    values = abi_decode(types, payload)
    cls = ContractRevert.by_name.get(name, ContractRevert)
    return cls(name, data, **dict(zip(names, values, strict=True)))


def revert_data_from_exception(exc: BaseException) -> bytes | None:
    """Revert bytes carried by an eth-tester or web3 exception, or None if it is not a revert."""
    # web3: ContractCustomError / ContractLogicError / ContractPanicError carry hex `data`.
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    cls_name = type(exc).__name__
    message = exc.args[0] if exc.args else ""
    if cls_name == "TransactionFailed":
        if isinstance(message, bytes | bytearray):
            return bytes(message)
        if isinstance(message, BaseException):
            return revert_data_from_exception(message)
        text = str(message)
        text = text.removeprefix("execution reverted: ").strip()
        if text.startswith(("b'", 'b"')):
            try:
                return bytes(ast.literal_eval(text))
            except (ValueError, SyntaxError):
                return None
        if _PYEVM_VM_ERROR_RE.match(text):
            return None  # out of gas & co.: not a revert (anvil gives no revert data for them either)
        # A decoded Error(string) reason: re-encode it so that it decodes the same way.
        from eth_abi import encode

        return ERROR_STRING_SELECTOR + encode(["string"], [text]) if text else b""
    if cls_name in {"ContractLogicError", "ContractCustomError", "ContractPanicError"}:
        match = _HEX_RE.search(str(message))
        if match:
            return bytes.fromhex(match.group(0)[2:])
        return b""
    if cls_name == "Web3RPCError":
        rpc = getattr(exc, "rpc_response", None) or {}
        err = rpc.get("error", {}) if isinstance(rpc, dict) else {}
        raw = err.get("data") if isinstance(err, dict) else None
        if isinstance(raw, str) and raw.startswith("0x"):
            return bytes.fromhex(raw[2:])
        if "revert" in str(message).lower():
            return b""
    return None


def as_revert(exc: BaseException) -> TransactionReverted | None:
    """The typed error for `exc` if it is a revert, else None."""
    data = revert_data_from_exception(exc)
    if data is None:
        return None
    return decode_revert_data(data)


# ---------------------------------------------------------------------------------------------- roles
# A missing role (OpenZeppelin's AccessControlUnauthorizedAccount) is explained here, once, for every contract:
# the role by name ("admin", "issuer", "arbiter") and who holds it, never a role hash. The wrappers
# (chain/registry.py, chain/escrow.py) run their role-gated calls through :func:`naming_roles`.

ROLE_GRANTED_TOPIC = "0x" + keccak(text="RoleGranted(bytes32,address,address)").hex()
DEFAULT_ADMIN_ROLE = b"\0" * 32
#: What people call each contract in messages.
CONTRACT_LABELS = {"CardRegistry": "registry", "CardEscrow": "escrow", "TestStablecoin": "test stablecoin"}
#: Roles an account must be granted for itself (it acts on its own batches): the error says who grants them.
GRANTED_TO_THE_CALLER = {"issuer": "`cardproof issuer add --name NAME --address {account}`"}
#: How the admin grants a role that some account must hold for everyone (an operator role).
GRANT_COMMANDS = {"arbiter": "`cardproof arbiter grant ADDRESS`"}


@cache
def role_names() -> dict[bytes, str]:
    """role id -> its name as people say it: DEFAULT_ADMIN_ROLE is "admin", every ``X_ROLE`` constant of a known
    contract is "x" (``ISSUER_ROLE`` -> "issuer")."""
    names = {DEFAULT_ADMIN_ROLE: "admin"}
    for artifact in available_artifacts():
        for item in load_artifact(artifact).abi:
            name = item.get("name", "")
            if (item.get("type") == "function" and name.endswith("_ROLE") and name != "DEFAULT_ADMIN_ROLE"
                    and not item.get("inputs")):
                names[bytes(keccak(text=name))] = name.removesuffix("_ROLE").lower().replace("_", " ")
    return names


def role_name(role: bytes) -> str:
    """The role's name ("admin", "issuer", "arbiter", ...); an unknown role is "unnamed role", never its hash."""
    return role_names().get(bytes(role), "unnamed role")


def _article(name: str) -> str:
    return "the" if name == "admin" else "an" if name[:1] in "aeiou" else "a"


def role_holders(client: ChainClient, address: str, role: bytes, *, contract: str, from_block: int = 0) -> list[str]:
    """Every account holding `role` in the contract at `address` (artifact `contract`): its role members when it
    is AccessControlEnumerable, else the accounts of its RoleGranted events that still hold the role."""
    from chain.client import guard

    abi = load_artifact(contract).abi
    handle = client.contract(address, abi)
    if any(item.get("name") == "getRoleMembers" for item in abi):
        return [to_checksum_address(a) for a in client.call(handle.functions.getRoleMembers(role))]
    logs = guard(lambda: client.w3.eth.get_logs({
        "address": to_checksum_address(address), "fromBlock": from_block, "toBlock": "latest",
        "topics": [ROLE_GRANTED_TOPIC, "0x" + bytes(role).hex()]}))
    granted = dict.fromkeys(to_checksum_address(bytes(log["topics"][2])[-20:]) for log in logs)
    return [a for a in granted if client.call(handle.functions.hasRole(role, a))]


def _deployment(client: ChainClient, address: str, contract: str, home: Path | None) -> Any:
    """The recorded deployment of the contract at `address` (deployments.json of `home`, else of the configured
    CARDPROOF_HOME), or None."""
    from chain.deployments import recorded

    try:
        if home is None:
            from chain.settings import get_settings

            home = get_settings().home
        record = recorded(home, client.chain_id, contract)
    except (ValueError, OSError):  # no readable settings or record: name the holders without it
        return None
    return record if record is not None and record.address.lower() == address.lower() else None


def role_required(client: ChainClient, address: str, exc: AccessControlUnauthorizedAccount, *, contract: str,
                  home: Path | None = None) -> RoleRequired:
    """The readable form of a role revert of the contract at `address`: who lacks which role, who holds it (or,
    for a role an account needs for itself, who grants it), never a role hash."""
    role = bytes(exc.params.get("needed_role", b""))
    account = to_checksum_address(exc.params.get("account") or client.address)
    name, label = role_name(role), CONTRACT_LABELS.get(contract, contract)
    address = to_checksum_address(address)
    record = _deployment(client, address, contract, home)
    start = record.block_number if record is not None else 0

    def holders_of(wanted: bytes) -> list[str]:
        try:
            return role_holders(client, address, wanted, contract=contract, from_block=start)
        except Exception:  # noqa: BLE001 - best effort (a node refusing a long log range, say): name the role only
            return []

    def who(accounts: list[str]) -> str:
        deployer = record.deployer.lower() if record is not None else None
        return ", ".join(f"{a} (its deployer)" if a.lower() == deployer else a for a in accounts)

    tag = ""
    if name in GRANTED_TO_THE_CALLER:
        holders = []
        admins = holders_of(DEFAULT_ADMIN_ROLE)
        granter = f"the {label}'s admin {who(admins)}" if admins else f"the {label}'s admin"
        advice = (f"{granter} must grant it the {name} role first "
                  f"({GRANTED_TO_THE_CALLER[name].format(account=account)})")
        tag = f" [{exc.error_name}]"
    else:
        holders = holders_of(role)
        plural = "es" if name.endswith("s") else "s"
        if len(holders) == 1:
            advice = f"run this as the {name} {who(holders)}"
        elif holders:
            advice = f"run this as one of the {name}{plural} {who(holders)}"
        elif name in GRANT_COMMANDS:
            advice = f"no account is {_article(name)} {name}: the admin grants one with {GRANT_COMMANDS[name]}"
        else:
            advice = f"no account holds the {name} role"
    message = f"{account} is not {_article(name)} {name} of the {label} {address}: {advice}{tag}"
    return RoleRequired(message, account=account.lower(), needed_role=role, role=name, holders=holders,
                        data=exc.data)


@contextmanager
def naming_roles(client: ChainClient, address: str, *, contract: str, home: Path | None = None) -> Iterator[None]:
    """Turn a role revert raised inside the block into :func:`role_required`'s RoleRequired."""
    try:
        yield
    except RoleRequired:
        raise
    except AccessControlUnauthorizedAccount as exc:
        raise role_required(client, address, exc, contract=contract, home=home) from None
