"""``scripts/bench_gas``: run every gas bench on a fresh in-process chain and keep a gas snapshot.

Every bench module listed in BENCHES that exists (``scripts/gasbench/<name>.py`` with ``measure(env)``) runs
on its own fresh eth-tester chain; a module not written yet is skipped. The figures are merged into one flat
dict, printed readably, written to ``gas-snapshot.json`` at the repo root (sorted keys, so a review diff shows
any regression), and printed last as one JSON line with ``targets_met``.

Options: ``--check`` compares with the committed snapshot instead of writing it (exit 1 on any difference);
``--anvil`` measures again on a local anvil node and reports whether the figures match eth-tester's.
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO_ROOT / "gas-snapshot.json"
BENCHES = ("registry", "escrow")


def load_benches() -> list[tuple[str, ModuleType]]:
    """The bench modules that exist, in BENCHES order."""
    found = []
    for name in BENCHES:
        module = f"{__package__ or 'scripts.gasbench'}.{name}"
        try:
            found.append((name, importlib.import_module(module)))
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the bench exists but something it imports is missing: say so
                raise
    return found


def run_benches(benches: list[tuple[str, ModuleType]], new_env: Callable[[], Iterator[Any]]
                ) -> tuple[dict[str, dict[str, int]], list[str]]:
    """{bench: figures} and the target misses, each bench on its own fresh chain from `new_env`."""
    results: dict[str, dict[str, int]] = {}
    misses: list[str] = []
    seen: dict[str, str] = {}
    for name, module in benches:
        envs = new_env()
        try:
            figures = {k: int(v) for k, v in module.measure(next(envs)).items()}
        finally:
            envs.close()
        for key in figures:
            if key in seen:
                raise SystemExit(f"bench_gas: {name} and {seen[key]} both report {key!r}")
            seen[key] = name
        results[name] = figures
        check = getattr(module, "check", None)
        if check is not None:
            misses += [f"{name}: {line}" for line in check(figures)]
    return results, misses


def flat(results: dict[str, dict[str, int]]) -> dict[str, int]:
    return {k: v for figures in results.values() for k, v in figures.items()}


def print_table(title: str, results: dict[str, dict[str, int]], previous: dict[str, int]) -> None:
    for name, figures in results.items():
        print(f"{name} ({title})")
        for key, value in figures.items():
            old = previous.get(key)
            delta = "" if old is None or old == value else f"   ({value - old:+,} from {old:,})"
            print(f"  {key:30} {value:>12,}{delta}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_gas", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with gas-snapshot.json, do not write it")
    parser.add_argument("--anvil", action="store_true", help="also measure on anvil and compare")
    args = parser.parse_args(argv)

    from tests.chainkit import anvil_env, eth_tester_env

    benches = load_benches()
    previous: dict[str, int] = json.loads(SNAPSHOT.read_text()) if SNAPSHOT.exists() else {}
    results, misses = run_benches(benches, eth_tester_env)
    figures = flat(results)
    print_table("eth-tester", results, previous)

    summary: dict[str, Any] = dict(figures)
    status = 0
    if args.anvil:
        anvil_results, _ = run_benches(benches, anvil_env)
        anvil = flat(anvil_results)
        differ = {k: (figures.get(k), anvil.get(k)) for k in sorted(set(figures) | set(anvil))
                  if figures.get(k) != anvil.get(k)}
        print("anvil: " + ("every figure matches eth-tester" if not differ else f"{len(differ)} figures differ"))
        for key, (et, an) in differ.items():
            print(f"  {key:30} eth-tester {et!s:>12}  anvil {an!s:>12}")
        summary["anvil_matches"] = not differ

    if args.check:
        changed = {k: (previous.get(k), figures.get(k)) for k in sorted(set(previous) | set(figures))
                   if previous.get(k) != figures.get(k)}
        if changed:
            print(f"gas-snapshot.json is out of date ({len(changed)} figures): run scripts/bench_gas")
            status = 1
        else:
            print("gas-snapshot.json is up to date")
    else:
        SNAPSHOT.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {SNAPSHOT.name}")

    if misses:
        print("targets MISSED:")
        for line in misses:
            print(f"  {line}")
        status = 1
    else:
        print("targets: all met")
    summary["targets_met"] = not misses
    print(json.dumps(summary, sort_keys=False))
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
