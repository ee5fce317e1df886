"""Deploy the whole platform on a chain: the CardRegistry everywhere; on dev chains also a test
stablecoin (6 decimals, EIP-2612) and the CardEscrow with that stablecoin allowlisted and an arbiter (the
deployer unless another account is named), so that disputes can be resolved from the first order on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.client import ChainClient
from chain.deployments import Deployment, deploy_registry


@dataclass(frozen=True)
class Platform:
    registry: Deployment
    registry_created: bool
    escrow: Deployment | None = None
    stablecoin: Deployment | None = None

    def to_json(self) -> dict[str, Any]:
        """The registry's record, whether it was created now, and the dev-chain contracts' records."""
        out: dict[str, Any] = {**self.registry.to_json(), "created": self.registry_created}
        if self.escrow is not None:
            out["escrow"] = self.escrow.to_json()
        if self.stablecoin is not None:
            out["stablecoin"] = self.stablecoin.to_json()
        return out


def deploy_platform(client: ChainClient, home: Path, *, arbiter: str | None = None) -> Platform:
    """Idempotent: what is already live on this chain is kept.

    A new escrow is created with `arbiter` (default: the deployer) holding ARBITER_ROLE; a live escrow keeps its
    arbiters (manage them with `cardproof arbiter grant|revoke|list`).
    """
    registry, created = deploy_registry(client, home)
    if not client.is_dev_chain:
        return Platform(registry, created)
    from chain.escrow import Escrow, deploy_escrow, deploy_test_stablecoin

    coin, _ = deploy_test_stablecoin(client, home)
    escrow, escrow_created = deploy_escrow(client, home, registry.address, arbiter=arbiter, tokens=[coin.address])
    if not escrow_created:  # a new escrow allowlists the coin as it is created
        esc = Escrow(client, escrow.address)
        if not esc.is_token_allowed(coin.address):
            esc.set_tokens_allowed([coin.address], True)
    return Platform(registry, created, escrow, coin)
