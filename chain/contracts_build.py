"""Compile the Solidity sources in ``contracts/`` into the artifacts checked in under ``chain/artifacts``.

Build-time only: running cardproof needs no compiler, it loads the artifacts (see ``chain.artifacts``).
solc-js from npm is driven through py-solc-x's ``compile_standard`` with ``scripts/solcjs-wrapper`` as
the binary (no native solc can be downloaded here).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO_ROOT / "contracts"
NODE_MODULES = REPO_ROOT / "node_modules"
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
WRAPPER = REPO_ROOT / "scripts" / "solcjs-wrapper"

#: Contracts that get an artifact: source unit name -> contract names.
TARGETS: dict[str, list[str]] = {}

SETTINGS: dict[str, Any] = {
    "evmVersion": "prague",  # solc 0.8.37 defaults to osaka, which py-evm 0.12 cannot run
    "viaIR": True,
    "optimizer": {"enabled": True, "runs": 10_000},
    "outputSelection": {
        "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"]}
    },
}


class CompileError(Exception):
    """The compiler rejected the sources; str() holds its formatted messages only."""


def _summarise(exc: Exception) -> str:
    """Keep the compiler's own diagnostics and drop py-solc-x's dump of stdin/stdout."""
    text = str(exc)
    head = text.split("\n> command:", 1)[0]
    return head.strip() or text[:2000]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def discover_sources() -> dict[str, str]:
    """Source unit name (``contracts/X.sol``, including test helpers under contracts/test) -> content."""
    return {
        p.relative_to(REPO_ROOT).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(CONTRACTS_DIR.rglob("*.sol"))
    }


def resolve_source(unit: str) -> Path:
    """Where a source unit named in compiler metadata lives on disk."""
    local = REPO_ROOT / unit
    if unit.startswith("contracts/") and local.exists():
        return local
    return NODE_MODULES / unit


def source_hashes(units: list[str]) -> dict[str, str]:
    return {u: _sha256(resolve_source(u).read_bytes()) for u in sorted(units)}


def combined_hash(hashes: dict[str, str]) -> str:
    return _sha256(json.dumps(hashes, sort_keys=True).encode())


def compile_all() -> dict[str, dict[str, Any]]:
    """Compile every contract under contracts/ and return artifacts keyed by contract name."""
    import solcx  # build-time dependency only
    import solcx.wrapper

    sources = discover_sources()
    standard_input = {
        "language": "Solidity",
        "sources": {unit: {"content": text} for unit, text in sources.items()},
        "settings": SETTINGS,
    }
    try:
        output = solcx.compile_standard(
            standard_input, base_path=str(NODE_MODULES), solc_binary=str(WRAPPER)
        )
    except solcx.exceptions.SolcError as exc:
        raise CompileError(_summarise(exc)) from None
    version = solcx.wrapper.get_solc_version(WRAPPER, with_commit_hash=True)
    artifacts: dict[str, dict[str, Any]] = {}
    for unit, contracts in output["contracts"].items():
        if not unit.startswith("contracts/"):
            continue
        for name, out in contracts.items():
            bytecode = out["evm"]["bytecode"]["object"]
            if not bytecode:  # interfaces and abstract contracts
                continue
            metadata = json.loads(out["metadata"])
            hashes = source_hashes(list(metadata["sources"]))
            artifacts[name] = {
                "contractName": name,
                "sourceName": unit,
                "abi": out["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + out["evm"]["deployedBytecode"]["object"],
                "compiler": {"name": "solc-js", "version": str(version), "settings": SETTINGS},
                "sources": hashes,
                "sourceHash": combined_hash(hashes),
            }
    return artifacts


def write_artifacts(artifacts: dict[str, dict[str, Any]], out_dir: Path = ARTIFACTS_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, art in sorted(artifacts.items()):
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(art, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    for stale in out_dir.glob("*.json"):
        if stale.stem not in artifacts:
            stale.unlink()
    return written
