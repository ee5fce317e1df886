"""issuer.core is pure: it imports no web3, SQLAlchemy, HTTP, or other part of cardproof."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from core_testlib import REPO

CORE = REPO / "issuer" / "core"
ALLOWED_THIRD_PARTY = {"cryptography", "_pysha3", "Crypto", "ecies"}
FORBIDDEN_PREFIXES = (
    "web3", "eth_", "sqlalchemy", "alembic", "psycopg", "httpx", "requests", "urllib3", "aiohttp",
    "fastapi", "starlette", "uvicorn", "redis", "chain", "verify_api", "pydantic",
)


def test_core_imports_only_stdlib_cryptography_and_keccak():
    for path in [*CORE.glob("*.py"), REPO / "issuer" / "codes.py"]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside issuer.core
                    continue
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "issuer":
                    assert name.startswith("issuer.core"), f"{path.name} imports {name}"
                    continue
                assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name} imports {name}"


def test_importing_core_loads_nothing_forbidden():
    code = (
        "import sys, json\n"
        "import issuer.core.leaf, issuer.core.merkle, issuer.core.dump, issuer.core.serial\n"
        "import issuer.core.commitment, issuer.codes\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    mods = json.loads(out.stdout)
    bad = [m for m in mods if m.startswith(FORBIDDEN_PREFIXES)]
    assert not bad, bad
    assert not [m for m in mods if m.startswith("issuer.") and not (m.startswith("issuer.core") or m == "issuer.codes")]


def test_core_init_warns_consensus_critical():
    import issuer.core

    doc = issuer.core.__doc__ or ""
    assert "consensus-critical" in doc and "anchored" in doc
