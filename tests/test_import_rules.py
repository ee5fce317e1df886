"""The import rules of docs/two-sides.md, on the real import graph.

* The contracts in pyproject.toml ``[tool.importlinter]`` are checked by import-linter (``lint-imports``), one test
  per contract; a broken contract fails with import-linter's report: every import that breaks it, with its line.
  import-linter sees every ``import`` statement, including those inside functions and under ``TYPE_CHECKING``.
* What import-linter cannot see is checked here with ``ast``: imports by name (``importlib.import_module("...")``,
  ``__import__``) in verify_api/.
* verify_api/ (every file, templates included) never names the master key or the secrets store.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
VERIFY_API = REPO / "verify_api"

# One contract per rule of docs/two-sides.md ("Imports"). Listed here, not read from pyproject.toml, so that a
# contract dropped from the configuration fails a test instead of silently checking less.
CONTRACTS = {
    "chain-knows-no-product": "chain/ imports neither issuer/ nor verify_api/ nor cardproof/",
    "public-side-imports-only-the-core": "verify_api/ imports from issuer/ only issuer.core and the secret-free "
                                         "storage plumbing (and not cardproof/)",
    "supplier-side-ignores-public-side": "issuer/ imports neither verify_api/ nor cardproof/",
    "core-is-pure": "issuer.core imports nothing of the project but itself",
}

DATABASE_LIBRARIES = {"sqlalchemy", "alembic", "psycopg", "psycopg2", "sqlite3"}
MASTER_KEY_NAMES = ("master_key", "MasterKey", "CARDPROOF_MASTER_KEY", "master.key", "secrets_store")

_LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_imports(*contract_ids: str) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on pyproject.toml (no cache written into the tree), for the given contracts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    args = [sys.executable, "-c", _LINT, "--no-cache", "--no-logo", *(f"--contract={c}" for c in contract_ids),
            str(PYPROJECT)]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_every_rule_has_its_contract():
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]
    configured = {c["id"] for c in config["contracts"]}
    assert set(CONTRACTS) <= configured, f"missing from [tool.importlinter]: {set(CONTRACTS) - configured}"
    assert set(config["root_packages"]) == {"cardproof", "chain", "issuer", "verify_api"}


@pytest.mark.parametrize("contract_id", list(CONTRACTS))
def test_import_contract(contract_id):
    run = lint_imports(contract_id)
    if run.returncode != 0:
        pytest.fail(f"import rule broken: {CONTRACTS[contract_id]}\n\n{run.stdout}\n{run.stderr}", pytrace=False)
    assert "BROKEN" not in run.stdout and "KEPT" in run.stdout, run.stdout


def test_the_console_sits_above_both_sides():
    """cardproof.console imports each side's commands (statically, so the graph above sees them)."""
    import grimp

    graph = grimp.build_graph("cardproof", "chain", "issuer", "verify_api", cache_dir=None)
    imported = graph.find_modules_directly_imported_by("cardproof.console")
    assert {"chain.cli", "issuer.cli", "verify_api.cli", "verify_api.order_cli"} <= imported, sorted(imported)
    assert graph.find_modules_that_directly_import("cardproof.console") <= {"cardproof.__main__"}


# ---------------------------------------------------------------------------------------------- ast


def _imports_by_name(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``importlib.import_module("m")`` / ``__import__("m")`` with a literal name."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            continue
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
        if name in ("import_module", "__import__"):
            out.append((node.lineno, node.args[0].value))
    return sorted(out)


def _static_imports(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, module) of every absolute import statement, at any depth (functions, TYPE_CHECKING blocks)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {(node.lineno, a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out |= {(node.lineno, _submodule(root, node.module, a.name)) for a in node.names}
    return sorted(out)


def _submodule(root: Path, module: str, name: str) -> str:
    """`from issuer import core` imports issuer.core, `from issuer.storage import db` issuer.storage.db."""
    path = root.joinpath(*module.split("."), name)
    return f"{module}.{name}" if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() else module


#: The secret-free modules of issuer/ that the public side may use besides the pure core: column types and the
#: engine/migration plumbing (no table, no key, no code).
SECRET_FREE = ("issuer.storage.types", "issuer.storage.db", "issuer.storage.outages", "issuer.storage.rates")


def _not_core(module: str) -> bool:
    return (module == "issuer" or module.startswith("issuer.")) and not (
        module == "issuer.core" or module.startswith("issuer.core.") or module in SECRET_FREE)


def test_public_side_imports_from_issuer_only_the_core_even_by_name():
    bad = []
    for path in sorted(VERIFY_API.rglob("*.py")):
        for line, module in [*_static_imports(path), *_imports_by_name(path)]:
            if _not_core(module):
                bad.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    assert not bad, "verify_api/ may import from issuer/ only issuer.core and " + ", ".join(SECRET_FREE) + ":\n" + \
        "\n".join(bad)


def test_the_ast_check_sees_what_it_must(tmp_path):
    for module in ("issuer/__init__.py", "issuer/core/__init__.py", "issuer/core/serial.py",
                   "issuer/storage/__init__.py", "issuer/storage/db.py", "issuer/storage/models.py",
                   "issuer/secrets_store.py"):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).touch()
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import issuer.core.leaf\nfrom issuer.core import serial\nfrom issuer import core\n"
        "from . import issuer\n"
        "def f():\n    from issuer.storage import db, models\n    import issuer\n"
        "    from issuer import secrets_store, core\n"
        "    importlib.import_module('issuer.lookup')\n    __import__('issuer.core.dump')\n")
    found = [m for _, m in sorted([*_static_imports(sample, tmp_path), *_imports_by_name(sample)]) if _not_core(m)]
    assert found == ["issuer.storage.models", "issuer", "issuer.secrets_store", "issuer.lookup"], found


def test_chain_needs_no_database():
    """chain/ knows no product and holds no command that needs a database (the order commands and `index` are
    the public side's: verify_api/order_cli.py)."""
    bad = []
    for path in sorted((REPO / "chain").rglob("*.py")):
        for line, module in [*_static_imports(path), *_imports_by_name(path)]:
            if module.split(".")[0] in DATABASE_LIBRARIES:
                bad.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    assert not bad, "chain/ uses no database:\n" + "\n".join(bad)


# ---------------------------------------------------------------------------------------------- master key


def test_public_side_never_names_the_master_key():
    bad = []
    for path in sorted(VERIFY_API.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            for name in MASTER_KEY_NAMES:
                if name.encode() in line:
                    bad.append(f"{path.relative_to(REPO)}:{number}: {name}")
    assert not bad, "verify_api/ holds no secret, so it never names the master key:\n" + "\n".join(bad)
