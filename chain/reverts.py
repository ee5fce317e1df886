"""Turn backend-specific revert exceptions into typed :class:`chain.errors.ContractRevert` errors.

eth-tester raises ``eth_tester.exceptions.TransactionFailed`` whose message embeds the revert bytes as a
Python bytes literal; JSON-RPC nodes (anvil) make web3 raise ``ContractCustomError`` /
``ContractLogicError`` carrying hex ``data``. Both end up here as the same typed error.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector

from chain.artifacts import available_artifacts, load_artifact
from chain.errors import ContractRevert, Panic, RevertReason, TransactionReverted

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
