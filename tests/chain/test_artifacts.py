"""The committed artifacts under chain/artifacts match the Solidity sources, and every error has a Python type."""

from __future__ import annotations

import json

import pytest
from eth_utils import function_signature_to_4byte_selector

from chain.artifacts import ARTIFACTS_DIR, available_artifacts, load_artifact
from chain.contracts_build import CONTRACTS_DIR, REPO_ROOT, combined_hash, resolve_source, source_hashes
from chain.errors import ContractRevert
from chain.reverts import error_table

STALE = "contracts changed: run scripts/compile_contracts"
ARTIFACTS = available_artifacts()


def test_there_are_artifacts():
    assert "CardRegistry" in ARTIFACTS


@pytest.mark.parametrize("name", ARTIFACTS)
def test_artifact_sources_are_current(name):
    art = load_artifact(name)
    assert art.sources, f"{name}: artifact lists no sources; {STALE}"
    missing = [unit for unit in art.sources if not resolve_source(unit).exists()]
    assert not missing, f"{name}: sources gone {missing}; {STALE}"
    current = source_hashes(list(art.sources))
    changed = sorted(unit for unit, digest in art.sources.items() if current[unit] != digest)
    assert not changed, f"{name}: {', '.join(changed)} changed since the artifact was built; {STALE}"
    assert combined_hash(current) == art.source_hash, f"{name}: sourceHash is stale; {STALE}"


@pytest.mark.parametrize("name", ARTIFACTS)
def test_artifact_is_complete(name):
    raw = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert raw["contractName"] == name
    assert raw["bytecode"].startswith("0x") and len(raw["bytecode"]) > 2
    assert raw["deployedBytecode"].startswith("0x") and len(raw["deployedBytecode"]) > 2
    assert raw["sourceName"] in raw["sources"]


def test_every_contract_source_is_compiled():
    """A new or renamed .sol under contracts/ shows up in some artifact's sources once compiled."""
    covered = {unit for name in ARTIFACTS for unit in load_artifact(name).sources}
    on_disk = {p.relative_to(REPO_ROOT).as_posix() for p in CONTRACTS_DIR.rglob("*.sol")}
    missing = sorted(on_disk - covered)
    assert not missing, f"not in any artifact: {missing}; {STALE}"


@pytest.mark.parametrize("name", ARTIFACTS)
def test_every_abi_error_has_a_python_class(name):
    errors = [item["name"] for item in load_artifact(name).abi if item.get("type") == "error"]
    missing = sorted(e for e in errors if e not in ContractRevert.by_name)
    assert not missing, f"{name}: add these revert classes to chain/errors.py: {missing}"
    for error in errors:
        cls = ContractRevert.by_name[error]
        assert issubclass(cls, ContractRevert) and cls.__name__ == error
        assert (cls.__doc__ or "").strip(), f"{error} needs a one-line docstring (its user message)"


def test_error_selectors_are_unique_across_artifacts():
    """Two different errors with the same selector would decode ambiguously."""
    seen: dict[bytes, str] = {}
    for name in ARTIFACTS:
        for item in load_artifact(name).abi:
            if item.get("type") != "error":
                continue
            sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
            sel = function_signature_to_4byte_selector(sig)
            assert seen.setdefault(sel, sig) == sig, f"selector clash: {sig} vs {seen[sel]}"
    assert set(error_table()) == set(seen)
