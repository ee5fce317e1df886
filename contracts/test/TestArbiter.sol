// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ICardEscrow} from "../ICardEscrow.sol";

/// @title TestArbiter (tests only)
/// @notice A minimal arbiter contract: it holds ARBITER_ROLE in a CardEscrow and forwards its owner's rulings.
/// It shows that an arbiter may be a contract; a multisig, a DAO or an on-chain court would decide its rulings in
/// its own way, the escrow only checks that msg.sender holds the role.
contract TestArbiter {
    /// @notice `caller` is not the owner of this arbiter contract.
    error NotArbiterOwner(address caller);
    /// @notice The zero address cannot own an arbiter contract.
    error ZeroAddress();

    /// @notice The account whose rulings this contract forwards.
    address public immutable owner;

    constructor(address owner_) {
        if (owner_ == address(0)) revert ZeroAddress();
        owner = owner_;
    }

    /// @notice Resolve a dispute of `escrow` (owner only): the escrow sees this contract as the arbiter.
    function resolve(ICardEscrow escrow, uint256 orderId, uint256 buyerAmount, uint256 supplierAmount) external {
        if (msg.sender != owner) revert NotArbiterOwner(msg.sender);
        escrow.resolve(orderId, buyerAmount, supplierAmount);
    }
}
