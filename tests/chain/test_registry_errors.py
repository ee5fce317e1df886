"""Every revert path of CardRegistry, each through its typed error from chain/errors.py.

Also checks that a revert decodes to the same typed error whether it is caught at simulation
(``ChainClient.send``) or comes from a mined, failed transaction (``ChainClient.wait`` replays it).
"""

from __future__ import annotations

from typing import Any

import pytest

from chain.errors import (
    AccessControlBadConfirmation,
    AccessControlUnauthorizedAccount,
    BatchAlreadyAnchored,
    BatchAlreadyRevoked,
    BatchIdNotOwned,
    BatchNotAnchored,
    CardAlreadyRedeemed,
    CardIndexOutOfRange,
    CardRevoked,
    ContractRevert,
    EmptyBatch,
    EmptyIndexList,
    InvalidProduct,
    InvalidRoot,
    NotBatchIssuer,
    NotBatchRedeemer,
    TransactionReverted,
    ZeroAddress,
)
from chain.registry import DEFAULT_ADMIN_ROLE, ISSUER_ROLE, PLACEHOLDER_PRODUCT, ZERO_ADDRESS
from tests.chain.registry_kit import MANIFEST, ROOT, anchor, bid, same_address

OTHER_ROOT = b"\x33" * 32
COUNT = 1000


# ---------------------------------------------------------------- anchorBatch


def anchored(env, who: str = "issuer", n: int = 1, count: int = COUNT) -> bytes:
    return anchor(env, who, n, count)


def test_batch_already_anchored_same_and_different_root(chain_env):
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    for root in (ROOT, OTHER_ROOT):
        with pytest.raises(BatchAlreadyAnchored) as e:
            reg.anchor_batch(batch_id, root, COUNT + 1, MANIFEST)
        assert e.value.batch_id == batch_id
        assert e.value.error_name == "BatchAlreadyAnchored"
    assert reg.batch(batch_id).root == ROOT  # the first anchoring stands
    assert reg.batch(batch_id).card_count == COUNT


def test_batch_id_not_owned(chain_env):
    theirs = bid(chain_env, "issuer2")
    with pytest.raises(BatchIdNotOwned) as e:
        chain_env.registry("issuer").anchor_batch(theirs, ROOT, COUNT, MANIFEST)
    assert e.value.batch_id == theirs
    assert same_address(e.value.caller, chain_env.address("issuer"))
    # An id that merely ends with the caller's address is not owned either.
    suffix = b"\x00" * 12 + bytes.fromhex(chain_env.address("issuer")[2:])
    with pytest.raises(BatchIdNotOwned):
        chain_env.registry("issuer").anchor_batch(suffix, ROOT, COUNT, MANIFEST)


def test_empty_batch_and_invalid_root(chain_env):
    reg = chain_env.registry("issuer")
    batch_id = bid(chain_env)
    with pytest.raises(EmptyBatch) as e:
        reg.anchor_batch(batch_id, ROOT, 0, MANIFEST)
    assert e.value.batch_id == batch_id
    with pytest.raises(InvalidRoot) as e2:
        reg.anchor_batch(batch_id, b"\x00" * 32, COUNT, MANIFEST)
    assert e2.value.batch_id == batch_id
    assert not reg.batch(batch_id).anchored


def test_anchor_without_issuer_role(chain_env):
    batch_id = bid(chain_env, "stranger")
    with pytest.raises(AccessControlUnauthorizedAccount) as e:
        chain_env.registry("stranger").anchor_batch(batch_id, ROOT, COUNT, MANIFEST)
    assert same_address(e.value.account, chain_env.address("stranger"))
    assert e.value.needed_role == ISSUER_ROLE


# ---------------------------------------------------------------- unanchored batches


def test_batch_not_anchored_everywhere(chain_env):
    batch_id = bid(chain_env)
    reg = chain_env.registry("issuer")
    calls = [
        lambda: reg.revoke_cards(batch_id, [0], 1),
        lambda: reg.revoke_batch(batch_id, 1),
        lambda: reg.mark_redeemed(batch_id, [0]),
    ]
    for call in calls:
        with pytest.raises(BatchNotAnchored) as e:
            call()
        assert e.value.batch_id == batch_id


# ---------------------------------------------------------------- issuer-only and redeemer-only


def test_not_batch_issuer(chain_env):
    batch_id = anchored(chain_env)
    other = chain_env.registry("issuer2")
    with pytest.raises(NotBatchIssuer) as e:
        other.revoke_cards(batch_id, [0], 1)
    assert e.value.batch_id == batch_id and same_address(e.value.caller, chain_env.address("issuer2"))
    with pytest.raises(NotBatchIssuer):
        other.revoke_batch(batch_id, 1)
    # The admin is no issuer of it either.
    with pytest.raises(NotBatchIssuer):
        chain_env.registry("admin").revoke_batch(batch_id, 1)


def test_not_batch_redeemer(chain_env):
    batch_id = anchored(chain_env)
    for who in ("stranger", "issuer2", "redeemer", "admin"):
        with pytest.raises(NotBatchRedeemer) as e:
            chain_env.registry(who).mark_redeemed(batch_id, [0])
        assert e.value.batch_id == batch_id
        assert same_address(e.value.caller, chain_env.address(who))


# ---------------------------------------------------------------- card indices


def test_card_index_out_of_range(chain_env):
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    for index in (COUNT, COUNT + 1, 2**32, 2**256 - 1):
        for call in (lambda i=index: reg.mark_redeemed(batch_id, [i]),
                     lambda i=index: reg.revoke_cards(batch_id, [i], 1)):
            with pytest.raises(CardIndexOutOfRange) as e:
                call()
            assert (e.value.batch_id, e.value.index, e.value.card_count) == (batch_id, index, COUNT)


def test_card_already_redeemed(chain_env):
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    reg.mark_redeemed(batch_id, [7])
    with pytest.raises(CardAlreadyRedeemed) as e:
        reg.mark_redeemed(batch_id, [8, 7])
    assert (e.value.batch_id, e.value.index) == (batch_id, 7)
    # A duplicate within one call.
    with pytest.raises(CardAlreadyRedeemed) as e:
        reg.mark_redeemed(batch_id, [9, 10, 9])
    assert e.value.index == 9
    # A duplicate within one call that leaves and comes back to a bitmap word.
    with pytest.raises(CardAlreadyRedeemed) as e:
        reg.mark_redeemed(batch_id, [11, 600, 11])
    assert e.value.index == 11
    # Revoking a redeemed card is refused too.
    with pytest.raises(CardAlreadyRedeemed) as e:
        reg.revoke_cards(batch_id, [7], 1)
    assert e.value.index == 7
    assert not reg.is_redeemed(batch_id, 8) and not reg.is_redeemed(batch_id, 9)


def test_card_revoked_single_and_batch(chain_env):
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    reg.revoke_cards(batch_id, [3], 2)
    with pytest.raises(CardRevoked) as e:
        reg.mark_redeemed(batch_id, [2, 3])
    assert (e.value.batch_id, e.value.index) == (batch_id, 3)
    with pytest.raises(CardRevoked) as e:
        reg.revoke_cards(batch_id, [3], 2)
    assert e.value.index == 3
    with pytest.raises(CardRevoked) as e:
        reg.revoke_cards(batch_id, [4, 5, 4], 2)  # duplicate within one call
    assert e.value.index == 4
    reg.revoke_batch(batch_id, 9)
    with pytest.raises(CardRevoked) as e:
        reg.mark_redeemed(batch_id, [999])
    assert e.value.index == 999


def test_batch_already_revoked(chain_env):
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    reg.revoke_batch(batch_id, 1)
    with pytest.raises(BatchAlreadyRevoked) as e:
        reg.revoke_batch(batch_id, 2)
    assert e.value.batch_id == batch_id
    with pytest.raises(BatchAlreadyRevoked):
        reg.revoke_cards(batch_id, [0], 1)
    assert reg.batch(batch_id).revoke_reason == 1


def test_empty_index_list(chain_env):
    batch_id = anchored(chain_env)
    reg = chain_env.registry("issuer")
    with pytest.raises(EmptyIndexList) as e:
        reg.mark_redeemed(batch_id, [])
    assert e.value.params == {}
    with pytest.raises(EmptyIndexList):
        reg.revoke_cards(batch_id, [], 1)


def test_zero_address(chain_env):
    with pytest.raises(ZeroAddress):
        chain_env.registry("issuer").set_redeemer(ZERO_ADDRESS, True)
    with pytest.raises(ZeroAddress):
        chain_env.registry("issuer").set_redeemer(ZERO_ADDRESS, False)


def test_access_control_errors(chain_env):
    with pytest.raises(AccessControlUnauthorizedAccount) as e:
        chain_env.registry("issuer").grant_issuer(chain_env.address("stranger"))
    assert same_address(e.value.account, chain_env.address("issuer"))
    assert e.value.needed_role == DEFAULT_ADMIN_ROLE
    with pytest.raises(AccessControlUnauthorizedAccount) as e:
        chain_env.registry("stranger").set_redeemer(chain_env.address("redeemer"), True)
    assert e.value.needed_role == ISSUER_ROLE
    # renounceRole for someone else.
    client = chain_env.client("issuer")
    reg = chain_env.registry("issuer")
    with pytest.raises(AccessControlBadConfirmation):
        client.transact(reg.fn.renounceRole(ISSUER_ROLE, chain_env.address("issuer2")), gas=100_000)


def test_revert_messages_are_one_line(chain_env):
    batch_id = anchored(chain_env)
    with pytest.raises(ContractRevert) as e:
        chain_env.registry("issuer").mark_redeemed(batch_id, [COUNT])
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith("The card index is beyond")
    assert f"index={COUNT}" in text and f"card_count={COUNT}" in text
    assert e.value.code == "card_index_out_of_range"


# ---------------------------------------------------------------- simulated vs mined


def send_unsimulated(client, fn, gas: int = 500_000):
    """Sign and send a call with an explicit gas limit and no simulation, so that it fails on chain."""
    return client._sign_and_send(
        lambda nonce, fees: fn.build_transaction({"from": client.address, "gas": gas, "nonce": nonce, **fees}), gas
    )


def _scenarios(env) -> dict[str, tuple[str, Any, type[ContractRevert]]]:
    """name -> (acting role, contract function call, expected error), against a prepared state."""
    batch_id = anchored(env)
    env.registry("issuer").mark_redeemed(batch_id, [5])
    env.registry("issuer").revoke_cards(batch_id, [6], 1)
    fn = env.registry().fn
    stranger_bid = bid(env, "stranger")
    P = PLACEHOLDER_PRODUCT.as_tuple()
    return {
        "already_anchored": ("issuer", fn.anchorBatch(batch_id, OTHER_ROOT, 5, MANIFEST, P, 0), BatchAlreadyAnchored),
        "not_owned": ("issuer", fn.anchorBatch(bid(env, "issuer2"), ROOT, 5, MANIFEST, P, 0), BatchIdNotOwned),
        "no_role": ("stranger", fn.anchorBatch(stranger_bid, ROOT, 5, MANIFEST, P, 0),
                    AccessControlUnauthorizedAccount),
        "not_anchored": ("issuer", fn.markRedeemed(bid(env, "issuer", 99), [0]), BatchNotAnchored),
        "not_redeemer": ("stranger", fn.markRedeemed(batch_id, [0]), NotBatchRedeemer),
        "not_issuer": ("issuer2", fn.revokeBatch(batch_id, 1), NotBatchIssuer),
        "out_of_range": ("issuer", fn.markRedeemed(batch_id, [1, 2**200]), CardIndexOutOfRange),
        "redeemed": ("issuer", fn.markRedeemed(batch_id, [4, 300, 5]), CardAlreadyRedeemed),
        "revoked": ("issuer", fn.markRedeemed(batch_id, [6]), CardRevoked),
        "empty": ("issuer", fn.revokeCards(batch_id, [], 1), EmptyIndexList),
        "zero": ("issuer", fn.setRedeemer(ZERO_ADDRESS, True), ZeroAddress),
        "no_product": ("issuer", fn.anchorBatch(bid(env, "issuer", 77), ROOT, 5, MANIFEST, (bytes(32), 1, b"USD"), 0),
                       InvalidProduct),
    }


def test_simulated_and_mined_reverts_are_identical(chain_env):
    scenarios = _scenarios(chain_env)
    for name, (who, fn, expected) in scenarios.items():
        client = chain_env.client(who)
        with pytest.raises(expected) as simulated:
            client.send(fn, gas=500_000)
        nonce_before = client.w3.eth.get_transaction_count(client.address)
        sent = send_unsimulated(client, fn)
        with pytest.raises(expected) as mined:
            client.wait(sent.tx_hash)
        receipt = client.get_receipt(sent.tx_hash)
        assert receipt is not None and receipt["status"] == 0, name  # it really was mined and failed
        assert client.w3.eth.get_transaction_count(client.address) == nonce_before + 1, name
        s, m = simulated.value, mined.value
        assert type(s) is type(m), name
        assert s.params == m.params, name
        assert s.data == m.data and s.data, name
        assert str(s) == str(m), name


def test_estimate_path_gives_the_same_typed_error(chain_env):
    """client.send without a gas limit reverts inside gas estimation: same typed error."""
    batch_id = anchored(chain_env)
    client = chain_env.client("stranger")
    with pytest.raises(NotBatchRedeemer) as e:
        client.send(chain_env.registry().fn.markRedeemed(batch_id, [0]))
    assert e.value.batch_id == batch_id


def test_out_of_gas_is_not_a_contract_revert(chain_env):
    """A mined transaction that ran out of gas is a plain TransactionReverted on every backend."""
    batch_id = anchored(chain_env)
    client = chain_env.client("issuer")
    sent = send_unsimulated(client, chain_env.registry().fn.markRedeemed(batch_id, [0, 256, 512]), gas=60_000)
    with pytest.raises(TransactionReverted) as e:
        client.wait(sent.tx_hash)
    assert not isinstance(e.value, ContractRevert)
    assert "failed (status 0" in str(e.value)
    assert not chain_env.registry().is_redeemed(batch_id, 0)
