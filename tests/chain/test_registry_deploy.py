"""chain/deployments.py: deploying the registry is idempotent and self-healing."""

from __future__ import annotations

import json

import pytest

from chain.artifacts import load_artifact
from chain.deployments import REGISTRY, deploy_registry, find, is_live, recorded
from chain.errors import NotDeployed, ZeroAddress
from chain.registry import ZERO_ADDRESS, Registry


def test_session_deployment_is_reused(chain_env):
    before = chain_env.admin.block_number()
    record, created = deploy_registry(chain_env.admin, chain_env.home)
    assert created is False
    assert record.address == chain_env.registry_address
    again, created_again = deploy_registry(chain_env.admin, chain_env.home)
    assert (again, created_again) == (record, False)
    assert chain_env.admin.block_number() == before  # nothing was sent
    assert find(chain_env.admin, chain_env.home, REGISTRY) == record
    assert record.source_hash == load_artifact(REGISTRY).source_hash
    assert record.chain_id == chain_env.admin.chain_id


def test_fresh_home_deploys_then_reuses(chain_env, tmp_path):
    with pytest.raises(NotDeployed):
        find(chain_env.admin, tmp_path, REGISTRY)
    record, created = deploy_registry(chain_env.admin, tmp_path)
    assert created is True
    assert record.address != chain_env.registry_address
    assert record.deployer == chain_env.admin.address
    assert is_live(chain_env.admin, record)
    assert recorded(tmp_path, chain_env.admin.chain_id, REGISTRY) == record
    again, created_again = deploy_registry(chain_env.admin, tmp_path)
    assert created_again is False and again.address == record.address
    reg = Registry.deployed(chain_env.admin, tmp_path)
    assert reg.is_admin(chain_env.admin.address)


def test_record_without_code_is_redeployed(chain_env, tmp_path):
    """A record whose address holds no code (a wiped chain, a tampered file) is not trusted."""
    deploy_registry(chain_env.admin, tmp_path)
    path = tmp_path / "deployments.json"
    data = json.loads(path.read_text())
    entry = data[str(chain_env.admin.chain_id)][REGISTRY]
    entry["address"] = chain_env.address("stranger")  # an account, no code
    path.write_text(json.dumps(data))
    with pytest.raises(NotDeployed):
        find(chain_env.admin, tmp_path, REGISTRY)
    record, created = deploy_registry(chain_env.admin, tmp_path)
    assert created is True
    assert record.address not in (chain_env.address("stranger"), chain_env.registry_address)
    assert is_live(chain_env.admin, record)
    assert find(chain_env.admin, tmp_path, REGISTRY).address == record.address


def test_explicit_admin(chain_env, tmp_path):
    record, created = deploy_registry(chain_env.admin, tmp_path, admin=chain_env.address("supplier"))
    assert created
    reg = Registry(chain_env.admin, record.address)
    assert reg.is_admin(chain_env.address("supplier"))
    assert not reg.is_admin(chain_env.admin.address)


def test_zero_admin_is_refused(chain_env, tmp_path):
    """The constructor's ZeroAddress revert comes back typed, although deploy sends without simulating."""
    with pytest.raises(ZeroAddress):
        deploy_registry(chain_env.admin, tmp_path, admin=ZERO_ADDRESS)
    assert recorded(tmp_path, chain_env.admin.chain_id, REGISTRY) is None
