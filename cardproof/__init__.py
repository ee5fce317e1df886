"""cardproof's top level: the `cardproof` console script (`cardproof.console`), above both sides.

The supplier's side (`issuer/`) and the public side (`verify_api/`) meet only on the chain (`chain/`) and in
the public batch dump; this package is the one place that imports both, to gather their commands
(docs/two-sides.md). Nothing in `chain/`, `issuer/` or `verify_api/` imports it.
"""
