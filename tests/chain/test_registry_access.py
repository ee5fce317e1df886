"""Who may do what on the CardRegistry: the admin, issuers, their redeemers, everybody else."""

from __future__ import annotations

import pytest

from chain.errors import (
    AccessControlUnauthorizedAccount,
    NotBatchIssuer,
    NotBatchRedeemer,
)
from chain.registry import DEFAULT_ADMIN_ROLE, ISSUER_ROLE
from tests.chain.registry_kit import MANIFEST, ROOT, anchor, bid, same_address

COUNT = 600


def anchored(env, who: str = "issuer", n: int = 1, count: int = COUNT) -> bytes:
    return anchor(env, who, n, count)


def test_deployer_is_admin_only(chain_env):
    reg = chain_env.registry()
    admin = chain_env.admin.address
    assert reg.is_admin(admin)
    assert not reg.is_issuer(admin)  # the admin grants the role, it does not hold it
    assert bytes(chain_env.admin.call(reg.fn.ISSUER_ROLE())) == ISSUER_ROLE
    for who in ("issuer", "issuer2", "supplier"):
        assert reg.is_issuer(chain_env.address(who))
        assert not reg.is_admin(chain_env.address(who))
    assert not reg.is_issuer(chain_env.address("stranger"))


def test_admin_grants_and_revokes_issuer_role(chain_env):
    reg = chain_env.registry()
    stranger = chain_env.address("stranger")
    reg.grant_issuer(stranger)
    assert reg.is_issuer(stranger)
    chain_env.registry("stranger").anchor_batch(bid(chain_env, "stranger"), ROOT, 1, MANIFEST)
    reg.revoke_issuer(stranger)
    assert not reg.is_issuer(stranger)
    with pytest.raises(AccessControlUnauthorizedAccount) as e:
        chain_env.registry("stranger").anchor_batch(bid(chain_env, "stranger", 2), ROOT, 1, MANIFEST)
    assert same_address(e.value.account, stranger) and e.value.needed_role == ISSUER_ROLE


def test_non_admin_cannot_grant_or_revoke(chain_env):
    for who in ("issuer", "stranger", "redeemer"):
        with pytest.raises(AccessControlUnauthorizedAccount) as e:
            chain_env.registry(who).grant_issuer(chain_env.address("stranger"))
        assert same_address(e.value.account, chain_env.address(who))
        assert e.value.needed_role == DEFAULT_ADMIN_ROLE
    with pytest.raises(AccessControlUnauthorizedAccount):
        chain_env.registry("issuer").revoke_issuer(chain_env.address("issuer2"))
    assert chain_env.registry().is_issuer(chain_env.address("issuer2"))
    assert not chain_env.registry().is_issuer(chain_env.address("stranger"))


def test_non_issuer_cannot_anchor(chain_env):
    for who in ("stranger", "redeemer", "admin"):
        with pytest.raises(AccessControlUnauthorizedAccount) as e:
            chain_env.registry(who).anchor_batch(bid(chain_env, who), ROOT, 10, MANIFEST)
        assert e.value.needed_role == ISSUER_ROLE


def test_issuer_cannot_touch_another_issuers_batch(chain_env):
    batch_a = anchored(chain_env, "issuer")
    other = chain_env.registry("issuer2")
    with pytest.raises(NotBatchIssuer):
        other.revoke_cards(batch_a, [0], 1)
    with pytest.raises(NotBatchIssuer):
        other.revoke_batch(batch_a, 1)
    with pytest.raises(NotBatchRedeemer):
        other.mark_redeemed(batch_a, [0])
    reg = chain_env.registry()
    assert not reg.is_revoked(batch_a, 0) and not reg.is_redeemed(batch_a, 0)
    # The owner itself may do all three.
    own = chain_env.registry("issuer")
    own.mark_redeemed(batch_a, [0])
    own.revoke_cards(batch_a, [1], 1)
    own.revoke_batch(batch_a, 2)


def test_redeemers_are_per_issuer(chain_env):
    batch_a = anchored(chain_env, "issuer")
    batch_b = anchored(chain_env, "issuer2")
    redeemer = chain_env.address("redeemer")
    chain_env.registry("issuer").set_redeemer(redeemer, True)
    reg = chain_env.registry()
    assert reg.is_redeemer(chain_env.address("issuer"), redeemer)
    assert not reg.is_redeemer(chain_env.address("issuer2"), redeemer)

    as_redeemer = chain_env.registry("redeemer")
    as_redeemer.mark_redeemed(batch_a, [3, 4])
    assert reg.is_redeemed(batch_a, 3) and reg.is_redeemed(batch_a, 4)
    # A's redeemer cannot redeem B's cards, and redeeming is all a redeemer can do.
    with pytest.raises(NotBatchRedeemer) as e:
        as_redeemer.mark_redeemed(batch_b, [3])
    assert e.value.batch_id == batch_b and same_address(e.value.caller, redeemer)
    with pytest.raises(NotBatchIssuer):
        as_redeemer.revoke_cards(batch_a, [5], 1)
    with pytest.raises(NotBatchIssuer):
        as_redeemer.revoke_batch(batch_a, 1)
    with pytest.raises(AccessControlUnauthorizedAccount):
        as_redeemer.anchor_batch(bid(chain_env, "redeemer"), ROOT, 1, MANIFEST)
    # A redeemer of A applies to A's later batches as well.
    batch_a2 = anchored(chain_env, "issuer", n=2)
    as_redeemer.mark_redeemed(batch_a2, [0])


def test_dismissed_redeemer_loses_the_right(chain_env):
    batch_a = anchored(chain_env, "issuer")
    redeemer = chain_env.address("redeemer")
    issuer = chain_env.registry("issuer")
    issuer.set_redeemer(redeemer, True)
    chain_env.registry("redeemer").mark_redeemed(batch_a, [0])
    issuer.set_redeemer(redeemer, False)
    assert not chain_env.registry().is_redeemer(chain_env.address("issuer"), redeemer)
    with pytest.raises(NotBatchRedeemer):
        chain_env.registry("redeemer").mark_redeemed(batch_a, [1])
    # Another issuer's appointment does not reach A's batches.
    chain_env.registry("issuer2").set_redeemer(redeemer, True)
    with pytest.raises(NotBatchRedeemer):
        chain_env.registry("redeemer").mark_redeemed(batch_a, [1])


def test_revoked_issuer_keeps_control_of_existing_batches(chain_env):
    """Intended: revoking ISSUER_ROLE stops new batches only.

    The former issuer can still revoke cards (or whole batches) it already anchored, redeem them and dismiss
    its redeemers: this protects the buyers of cards already sold (a leak found after the supplier was
    offboarded can still be revoked). It can neither anchor nor appoint redeemers any more.
    """
    batch_a = anchored(chain_env, "issuer")
    batch_a2 = anchored(chain_env, "issuer", n=2)
    redeemer = chain_env.address("redeemer")
    issuer_addr = chain_env.address("issuer")
    issuer = chain_env.registry("issuer")
    issuer.set_redeemer(redeemer, True)
    chain_env.registry().revoke_issuer(issuer_addr)
    assert not chain_env.registry().is_issuer(issuer_addr)

    issuer.revoke_cards(batch_a, [1, 2], 1)
    issuer.mark_redeemed(batch_a, [3])
    chain_env.registry("redeemer").mark_redeemed(batch_a, [4])  # appointed earlier: still valid
    issuer.revoke_batch(batch_a2, 3)
    reg = chain_env.registry()
    assert reg.is_revoked(batch_a, 1) and reg.is_redeemed(batch_a, 3) and reg.is_redeemed(batch_a, 4)
    assert reg.batch(batch_a2).revoked

    with pytest.raises(AccessControlUnauthorizedAccount):
        issuer.anchor_batch(bid(chain_env, "issuer", 3), ROOT, 1, MANIFEST)
    with pytest.raises(AccessControlUnauthorizedAccount):
        issuer.set_redeemer(chain_env.address("buyer"), True)
    # Dismissing needs no role, so an offboarded issuer can still cut off a compromised redeemer.
    issuer.set_redeemer(redeemer, False)
    with pytest.raises(NotBatchRedeemer):
        chain_env.registry("redeemer").mark_redeemed(batch_a, [5])


def test_renounce_own_issuer_role(chain_env):
    client = chain_env.client("issuer2")
    reg = chain_env.registry("issuer2")
    client.transact(reg.fn.renounceRole(ISSUER_ROLE, chain_env.address("issuer2")), gas=100_000)
    assert not reg.is_issuer(chain_env.address("issuer2"))
