"""The chain client and contract wrappers (knows no product).

web3 and eth-account hash with eth-hash, whose automatic choice is pycryptodome's keccak; pysha3's (the
``safe-pysha3`` the core already depends on) is about three times faster, which counts on a busy node (every
contract call hashes its function selector). Chosen here, before anything hashes, unless the environment says
otherwise.
"""

import importlib.util as _importlib_util
import os as _os

if "ETH_HASH_BACKEND" not in _os.environ and _importlib_util.find_spec("sha3") is not None:
    _os.environ["ETH_HASH_BACKEND"] = "pysha3"
