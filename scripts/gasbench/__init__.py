"""Gas benchmarks of cardproof's contracts; run them with ``scripts/bench_gas`` (see ``__main__``).

Each bench module (``registry``, ``escrow``) exposes ``measure(env) -> dict[str, int]`` and, optionally,
``check(figures) -> list[str]`` listing the hard targets it misses.
"""
