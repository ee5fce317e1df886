// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title FeeOnTransferToken
/// @notice Test only. Burns `feeBps` basis points of every transfer between two accounts, so the receiver
/// gets less than the amount sent. Anyone may mint and set the fee (it may start at 0 and be switched on
/// later, like USDT's dormant fee).
contract FeeOnTransferToken is ERC20 {
    uint256 public feeBps;

    constructor(string memory name_, string memory symbol_, uint256 feeBps_) ERC20(name_, symbol_) {
        feeBps = feeBps_;
    }

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Test faucet: anyone mints.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Test control: anyone sets the fee.
    function setFeeBps(uint256 feeBps_) external {
        feeBps = feeBps_;
    }

    function _update(address from, address to, uint256 value) internal override {
        uint256 fee = from != address(0) && to != address(0) ? value * feeBps / 10_000 : 0;
        if (fee != 0) super._update(from, address(0), fee);
        super._update(from, to, value - fee);
    }
}
