// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ICardRegistry, CardLeaf, Batch, CardStatus} from "./ICardRegistry.sol";

/// @title CardRegistry
/// @notice Anchors the Merkle roots of card-key batches and keeps, per batch, a revocation and a
/// redemption bitmap (256 cards per storage word, as in Uniswap's MerkleDistributor).
/// @dev The platform (DEFAULT_ADMIN_ROLE) grants ISSUER_ROLE to suppliers. Each issuer anchors batch ids
/// whose first 20 bytes are its own address, so nobody can squat another issuer's ids. Issuers may appoint
/// redeemers (for example the game operator that consumes the codes) for all of their batches.
contract CardRegistry is AccessControl, ICardRegistry {
    /// @inheritdoc ICardRegistry
    bytes32 public constant ISSUER_ROLE = keccak256("ISSUER_ROLE");

    mapping(bytes32 batchId => Batch) private _batches;
    mapping(bytes32 batchId => mapping(uint256 wordIndex => uint256)) private _redeemedBits;
    mapping(bytes32 batchId => mapping(uint256 wordIndex => uint256)) private _revokedBits;
    mapping(address issuer => mapping(address redeemer => bool)) private _redeemers;

    /// @param admin The platform account that grants and revokes ISSUER_ROLE.
    constructor(address admin) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ---------------------------------------------------------------- anchoring

    /// @inheritdoc ICardRegistry
    function anchorBatch(bytes32 batchId, bytes32 root, uint32 cardCount, bytes32 manifestHash)
        external
        onlyRole(ISSUER_ROLE)
    {
        if (address(bytes20(batchId)) != msg.sender) revert BatchIdNotOwned(batchId, msg.sender);
        if (root == bytes32(0)) revert InvalidRoot(batchId);
        if (cardCount == 0) revert EmptyBatch(batchId);
        Batch storage b = _batches[batchId];
        if (b.anchoredAt != 0) revert BatchAlreadyAnchored(batchId);
        b.root = root;
        b.issuer = msg.sender;
        b.cardCount = cardCount;
        b.anchoredAt = uint40(block.timestamp);
        emit BatchAnchored(batchId, msg.sender, root, cardCount, manifestHash);
    }

    // ---------------------------------------------------------------- revocation

    /// @inheritdoc ICardRegistry
    function revokeCards(bytes32 batchId, uint256[] calldata indices, uint16 reason) external {
        Batch storage b = _requireIssuer(batchId);
        if (b.revoked) revert BatchAlreadyRevoked(batchId);
        uint256 n = indices.length;
        if (n == 0) revert EmptyIndexList();
        uint256 cardCount = b.cardCount;
        mapping(uint256 => uint256) storage revokedBits = _revokedBits[batchId];
        mapping(uint256 => uint256) storage redeemedBits = _redeemedBits[batchId];

        uint256 wordIndex = indices[0] >> 8;
        uint256 revokedWord_ = revokedBits[wordIndex];
        uint256 redeemedWord_ = redeemedBits[wordIndex];
        uint256 mask;
        WordMasks memory touched;
        for (uint256 i; i < n; ++i) {
            uint256 index = indices[i];
            if (index >= cardCount) revert CardIndexOutOfRange(batchId, index, cardCount);
            uint256 w = index >> 8;
            if (w != wordIndex) {
                revokedBits[wordIndex] = revokedWord_ | mask;
                _addWordMask(touched, wordIndex, mask, n);
                wordIndex = w;
                revokedWord_ = revokedBits[w];
                redeemedWord_ = redeemedBits[w];
                mask = 0;
            }
            uint256 bit = 1 << (index & 0xff);
            if ((revokedWord_ | mask) & bit != 0) revert CardRevoked(batchId, index);
            if (redeemedWord_ & bit != 0) revert CardAlreadyRedeemed(batchId, index);
            mask |= bit;
        }
        revokedBits[wordIndex] = revokedWord_ | mask;
        if (touched.count == 0) {
            emit CardsRevoked(batchId, wordIndex, mask, reason);
        } else {
            _addWordMask(touched, wordIndex, mask, n);
            for (uint256 j; j < touched.count; ++j) {
                emit CardsRevoked(batchId, touched.words[j], touched.masks[j], reason);
            }
        }
    }

    /// @inheritdoc ICardRegistry
    function revokeBatch(bytes32 batchId, uint16 reason) external {
        Batch storage b = _requireIssuer(batchId);
        if (b.revoked) revert BatchAlreadyRevoked(batchId);
        b.revoked = true;
        b.revokeReason = reason;
        emit BatchRevoked(batchId, reason);
    }

    // ---------------------------------------------------------------- redemption

    /// @inheritdoc ICardRegistry
    /// @dev Appointing needs ISSUER_ROLE; dismissing does not, so an issuer whose role was revoked can still
    /// dismiss a redeemer that would otherwise keep redeeming its existing batches.
    function setRedeemer(address redeemer, bool allowed) external {
        if (allowed) _checkRole(ISSUER_ROLE);
        if (redeemer == address(0)) revert ZeroAddress();
        _redeemers[msg.sender][redeemer] = allowed;
        emit RedeemerSet(msg.sender, redeemer, allowed);
    }

    /// @inheritdoc ICardRegistry
    function markRedeemed(bytes32 batchId, uint256[] calldata indices) external {
        Batch storage b = _batches[batchId];
        address issuer = b.issuer;
        if (b.anchoredAt == 0) revert BatchNotAnchored(batchId);
        if (msg.sender != issuer && !_redeemers[issuer][msg.sender]) revert NotBatchRedeemer(batchId, msg.sender);
        uint256 n = indices.length;
        if (n == 0) revert EmptyIndexList();
        uint256 cardCount = b.cardCount;
        bool batchRevoked = b.revoked;
        mapping(uint256 => uint256) storage redeemedBits = _redeemedBits[batchId];
        mapping(uint256 => uint256) storage revokedBits = _revokedBits[batchId];

        uint256 wordIndex = indices[0] >> 8;
        uint256 redeemedWord_ = redeemedBits[wordIndex];
        uint256 revokedWord_ = batchRevoked ? type(uint256).max : revokedBits[wordIndex];
        uint256 mask;
        WordMasks memory touched;
        for (uint256 i; i < n; ++i) {
            uint256 index = indices[i];
            if (index >= cardCount) revert CardIndexOutOfRange(batchId, index, cardCount);
            uint256 w = index >> 8;
            if (w != wordIndex) {
                redeemedBits[wordIndex] = redeemedWord_ | mask;
                _addWordMask(touched, wordIndex, mask, n);
                wordIndex = w;
                redeemedWord_ = redeemedBits[w];
                revokedWord_ = batchRevoked ? type(uint256).max : revokedBits[w];
                mask = 0;
            }
            uint256 bit = 1 << (index & 0xff);
            if (revokedWord_ & bit != 0) revert CardRevoked(batchId, index);
            if ((redeemedWord_ | mask) & bit != 0) revert CardAlreadyRedeemed(batchId, index);
            mask |= bit;
        }
        redeemedBits[wordIndex] = redeemedWord_ | mask;
        if (touched.count == 0) {
            emit CardsRedeemed(batchId, wordIndex, mask, msg.sender);
        } else {
            _addWordMask(touched, wordIndex, mask, n);
            for (uint256 j; j < touched.count; ++j) {
                emit CardsRedeemed(batchId, touched.words[j], touched.masks[j], msg.sender);
            }
        }
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc ICardRegistry
    function batch(bytes32 batchId) external view returns (Batch memory) {
        return _batches[batchId];
    }

    /// @inheritdoc ICardRegistry
    function isRedeemer(address issuer, address redeemer) external view returns (bool) {
        return _redeemers[issuer][redeemer];
    }

    /// @inheritdoc ICardRegistry
    function isRedeemed(bytes32 batchId, uint256 index) public view returns (bool) {
        return _redeemedBits[batchId][index >> 8] & (1 << (index & 0xff)) != 0;
    }

    /// @inheritdoc ICardRegistry
    function isRevoked(bytes32 batchId, uint256 index) public view returns (bool) {
        if (_batches[batchId].revoked) return true;
        return _revokedBits[batchId][index >> 8] & (1 << (index & 0xff)) != 0;
    }

    /// @inheritdoc ICardRegistry
    function redeemedWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256) {
        return _redeemedBits[batchId][wordIndex];
    }

    /// @inheritdoc ICardRegistry
    function revokedWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256) {
        if (_batches[batchId].revoked) return type(uint256).max;
        return _revokedBits[batchId][wordIndex];
    }

    /// @inheritdoc ICardRegistry
    function leafHash(CardLeaf calldata leaf) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(leaf))));
    }

    /// @inheritdoc ICardRegistry
    function verifyCard(CardLeaf calldata leaf, bytes32[] calldata proof)
        external
        view
        returns (bool authentic, CardStatus status)
    {
        Batch storage b = _batches[leaf.batchId];
        if (b.anchoredAt == 0 || leaf.index >= b.cardCount) return (false, CardStatus.Unknown);
        if (!MerkleProof.verifyCalldata(proof, b.root, leafHash(leaf))) return (false, CardStatus.Unknown);
        if (isRevoked(leaf.batchId, leaf.index)) return (true, CardStatus.Revoked);
        if (isRedeemed(leaf.batchId, leaf.index)) return (true, CardStatus.Redeemed);
        if (leaf.expiry != 0 && block.timestamp > leaf.expiry) return (true, CardStatus.Expired);
        return (true, CardStatus.Valid);
    }

    // ---------------------------------------------------------------- internals

    /// @dev The bitmap words a revokeCards/markRedeemed call touched and the bits it set in each, so that it
    /// emits one event per touched word even when its indices come back to an earlier word (e.g. [1, 300, 2]).
    /// Only used once a call touches a second word: single-word calls never allocate it.
    struct WordMasks {
        uint256[] words;
        uint256[] masks;
        uint256 count;
        uint256 minWord;
        uint256 maxWord;
    }

    /// @dev OR `mask` into the entry of `word`, appending it if new. `capacity` (the number of indices) bounds
    /// the number of entries. A word above or below every word seen so far (sorted indices) is appended
    /// without a search.
    function _addWordMask(WordMasks memory t, uint256 word, uint256 mask, uint256 capacity) private pure {
        uint256 count = t.count;
        if (count == 0) {
            t.words = new uint256[](capacity);
            t.masks = new uint256[](capacity);
            t.minWord = word;
            t.maxWord = word;
        } else if (word > t.maxWord) {
            t.maxWord = word;
        } else if (word < t.minWord) {
            t.minWord = word;
        } else {
            for (uint256 j; j < count; ++j) {
                if (t.words[j] == word) {
                    t.masks[j] |= mask;
                    return;
                }
            }
        }
        t.words[count] = word;
        t.masks[count] = mask;
        t.count = count + 1;
    }

    function _requireIssuer(bytes32 batchId) private view returns (Batch storage b) {
        b = _batches[batchId];
        if (b.anchoredAt == 0) revert BatchNotAnchored(batchId);
        if (b.issuer != msg.sender) revert NotBatchIssuer(batchId, msg.sender);
    }
}
