// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title BlocklistToken
/// @notice Test only. A USDC-like token whose transfers to or from a blocklisted account revert.
/// Anyone may mint and edit the blocklist.
contract BlocklistToken is ERC20 {
    mapping(address => bool) public blocked;

    /// @notice `account` is blocklisted: it can neither send nor receive.
    error Blocklisted(address account);

    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Test faucet: anyone mints.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Test control: anyone edits the blocklist.
    function setBlocked(address account, bool isBlocked) external {
        blocked[account] = isBlocked;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (blocked[from]) revert Blocklisted(from);
        if (blocked[to]) revert Blocklisted(to);
        super._update(from, to, value);
    }
}
