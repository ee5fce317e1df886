// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title ReentrantToken
/// @notice Test only. An ERC-20 that, once armed, calls `target` with `data` in the middle of its next
/// transfer (after balances moved): a hostile token re-entering the escrow (withdraw, confirm, release, ...).
/// With `swallow` the re-entry's failure is recorded and the transfer goes on; otherwise it bubbles up.
contract ReentrantToken is ERC20 {
    address public target;
    bytes public data;
    bool public swallow;
    bool public armed;
    /// @notice Whether a re-entry was attempted, whether it succeeded and what it returned or reverted with.
    bool public attempted;
    bool public succeeded;
    bytes public result;

    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Test faucet: anyone mints.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Re-enter `target_` with `data_` during the next transfer between two accounts.
    function arm(address target_, bytes calldata data_, bool swallow_) external {
        target = target_;
        data = data_;
        swallow = swallow_;
        armed = true;
        attempted = false;
        succeeded = false;
        delete result;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (armed && from != address(0) && to != address(0)) {
            armed = false;
            attempted = true;
            (bool ok, bytes memory ret) = target.call(data);
            succeeded = ok;
            result = ret;
            if (!ok && !swallow) {
                assembly ("memory-safe") {
                    revert(add(ret, 0x20), mload(ret))
                }
            }
        }
    }
}
