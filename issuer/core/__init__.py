"""cardproof's consensus-critical core.

Everything in this package defines bytes that end up committed on chain: the card leaf and its
ABI encoding (``leaf``), the code commitment, the openings and the batch key derivation (``commitment``), the
serial format (``serial``), the OpenZeppelin StandardMerkleTree construction (``merkle``), its multiproofs
(``multiproof``) and its ``standard-v1`` dump (``dump``); and the sealed delivery of an escrow order
(``sealed``: ECIES on secp256k1 with AES-256-GCM, from eciespy), whose hash goes on chain.

WARNING: changes here are consensus-critical. Any change to what these functions compute (field
order or types, encoding, padding, hashing, leaf sorting, node ordering, commitment domain,
HKDF labels, serial alphabet or check symbol) silently produces different leaf hashes and roots,
and so breaks every proof of every batch already anchored on chain, and every card already
printed. The current format is leaf version 2 (``LEAF_VERSION``, ``cardproof/code/v2``), frozen
since it replaced version 1 (docs/leaf.md). A change needs a new versioned format (a new
``LEAF_VERSION``, ``/v3`` domain tags, a new leaf struct, a new contract), never an edit in place.
The known-answer tests in ``tests/core`` (made by ``tests/core/make_kats.mjs``, independently of
this code) pin the current behaviour: if one of them fails, the change is wrong, not the test.

This package is pure: bytes in, bytes out. It must not import web3, SQLAlchemy, HTTP clients or
servers, or any other part of cardproof; it depends only on the standard library, ``cryptography``
(HKDF), ``eciespy`` (sealing) and a keccak256 implementation (``safe-pysha3``, pycryptodome as a fallback).
"""
