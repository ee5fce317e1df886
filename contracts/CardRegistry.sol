// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ICardRegistry, CardLeaf, Batch, CardStatus, Product} from "./ICardRegistry.sol";

/// @title CardRegistry
/// @notice Anchors the Merkle roots of card-key batches and keeps, per batch, a revocation and a
/// redemption bitmap (256 cards per storage word, as in Uniswap's MerkleDistributor).
/// @dev The platform (DEFAULT_ADMIN_ROLE) grants ISSUER_ROLE to suppliers. Each issuer anchors batch ids
/// whose first 20 bytes are its own address, so nobody can squat another issuer's ids. Issuers may appoint
/// redeemers (for example the game operator that consumes the codes) for all of their batches.
contract CardRegistry is AccessControl, ICardRegistry {
    /// @inheritdoc ICardRegistry
    bytes32 public constant ISSUER_ROLE = keccak256("ISSUER_ROLE");

    /// @dev Storage form of a batch: the root, then one packed slot (the issuer is the first 20 bytes of the id).
    struct StoredBatch {
        bytes32 root;
        uint32 cardCount;
        uint40 anchoredAt;
        bool revoked;
        uint16 revokeReason;
        uint32 productId;
        uint64 expiry;
    }

    mapping(bytes32 batchId => StoredBatch) private _batches;
    mapping(uint32 productId => Product) private _products;
    mapping(bytes32 productKey => uint32 productId) private _productIds;
    uint32 private _productCount;
    mapping(bytes32 batchId => mapping(uint256 wordIndex => uint256)) private _redeemedBits;
    mapping(bytes32 batchId => mapping(uint256 wordIndex => uint256)) private _revokedBits;
    mapping(address issuer => mapping(address redeemer => bool)) private _redeemers;
    mapping(address issuer => string) private _issuerNames;

    /// @param admin The platform account that grants and revokes ISSUER_ROLE.
    constructor(address admin) {
        if (admin == address(0)) revert ZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ---------------------------------------------------------------- issuers

    /// @inheritdoc ICardRegistry
    function grantIssuer(address issuer, string calldata name) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (issuer == address(0)) revert ZeroAddress();
        uint256 length = bytes(name).length;
        if (length == 0 || length > 64) revert InvalidIssuerName();
        _issuerNames[issuer] = name;
        _grantRole(ISSUER_ROLE, issuer);
        emit IssuerNamed(issuer, name);
    }

    /// @inheritdoc ICardRegistry
    function issuerName(address issuer) external view returns (string memory) {
        return _issuerNames[issuer];
    }

    // ---------------------------------------------------------------- anchoring

    /// @inheritdoc ICardRegistry
    function anchorBatch(
        bytes32 batchId,
        bytes32 root,
        uint32 cardCount,
        bytes32 manifestHash,
        Product calldata product_,
        uint64 expiry
    ) external onlyRole(ISSUER_ROLE) {
        if (address(bytes20(batchId)) != msg.sender) revert BatchIdNotOwned(batchId, msg.sender);
        if (root == bytes32(0)) revert InvalidRoot(batchId);
        if (cardCount == 0) revert EmptyBatch(batchId);
        StoredBatch storage b = _batches[batchId];
        if (b.anchoredAt != 0) revert BatchAlreadyAnchored(batchId);
        uint32 productId = _productIdFor(product_);
        b.root = root;
        b.cardCount = cardCount;
        b.anchoredAt = uint40(block.timestamp);
        b.productId = productId;
        b.expiry = expiry;
        emit BatchAnchored(batchId, msg.sender, root, cardCount, manifestHash, productId, expiry);
    }

    /// @dev The id of `p`, registering it when it is new.
    function _productIdFor(Product calldata p) private returns (uint32 id) {
        if (p.sku == bytes32(0) || p.faceValue == 0 || p.currency == bytes3(0)) revert InvalidProduct();
        bytes32 key = keccak256(abi.encode(p.sku, p.faceValue, p.currency));
        id = _productIds[key];
        if (id == 0) {
            id = ++_productCount;
            _productIds[key] = id;
            _products[id] = p;
            emit ProductRegistered(id, p.sku, p.faceValue, p.currency);
        }
    }

    // ---------------------------------------------------------------- revocation

    /// @inheritdoc ICardRegistry
    function revokeCards(bytes32 batchId, uint256[] calldata indices, uint16 reason) external {
        StoredBatch storage b = _requireIssuer(batchId);
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
        uint256[] memory touched; // words touched, once a call leaves its first word
        uint256 nTouched;
        for (uint256 i; i < n; ++i) {
            uint256 index = indices[i];
            if (index >= cardCount) revert CardIndexOutOfRange(batchId, index, cardCount);
            uint256 w = index >> 8;
            if (w != wordIndex) {
                revokedBits[wordIndex] = revokedWord_ | mask;
                if (nTouched == 0) touched = _newWordList(n, cardCount);
                nTouched = _addWordMask(touched, nTouched, wordIndex, mask);
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
        if (nTouched == 0) {
            emit CardsRevoked(batchId, wordIndex, mask, reason);
        } else {
            nTouched = _addWordMask(touched, nTouched, wordIndex, mask);
            for (uint256 j; j < nTouched; ++j) {
                uint256 w = touched[j];
                emit CardsRevoked(batchId, w, _takeWordMask(w), reason);
            }
        }
    }

    /// @inheritdoc ICardRegistry
    function revokeBatch(bytes32 batchId, uint16 reason) external {
        StoredBatch storage b = _requireIssuer(batchId);
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
        StoredBatch storage b = _batches[batchId];
        address issuer = address(bytes20(batchId));
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
        uint256[] memory touched; // words touched, once a call leaves its first word
        uint256 nTouched;
        for (uint256 i; i < n; ++i) {
            uint256 index = indices[i];
            if (index >= cardCount) revert CardIndexOutOfRange(batchId, index, cardCount);
            uint256 w = index >> 8;
            if (w != wordIndex) {
                redeemedBits[wordIndex] = redeemedWord_ | mask;
                if (nTouched == 0) touched = _newWordList(n, cardCount);
                nTouched = _addWordMask(touched, nTouched, wordIndex, mask);
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
        if (nTouched == 0) {
            emit CardsRedeemed(batchId, wordIndex, mask, msg.sender);
        } else {
            nTouched = _addWordMask(touched, nTouched, wordIndex, mask);
            for (uint256 j; j < nTouched; ++j) {
                uint256 w = touched[j];
                emit CardsRedeemed(batchId, w, _takeWordMask(w), msg.sender);
            }
        }
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc ICardRegistry
    function batch(bytes32 batchId) external view returns (Batch memory out) {
        StoredBatch storage b = _batches[batchId];
        out.root = b.root;
        out.cardCount = b.cardCount;
        out.anchoredAt = b.anchoredAt;
        out.revoked = b.revoked;
        out.revokeReason = b.revokeReason;
        out.productId = b.productId;
        out.expiry = b.expiry;
        if (out.anchoredAt != 0) out.issuer = address(bytes20(batchId));
    }

    /// @inheritdoc ICardRegistry
    function product(uint32 productId) external view returns (Product memory) {
        return _products[productId];
    }

    /// @inheritdoc ICardRegistry
    function productIdOf(bytes32 sku, uint128 faceValue, bytes3 currency) external view returns (uint32) {
        return _productIds[keccak256(abi.encode(sku, faceValue, currency))];
    }

    /// @inheritdoc ICardRegistry
    function productCount() external view returns (uint32) {
        return _productCount;
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
    /// @dev Redeemed is reported before a revocation: a card redeemed before its batch was revoked was used, and
    /// stays Redeemed (the escrow does not refund it either). A card revoked on its own is never redeemed (each
    /// of revokeCards and markRedeemed refuses a card the other has marked), so it stays Revoked.
    function verifyCard(CardLeaf calldata leaf, bytes32[] calldata proof)
        external
        view
        returns (bool authentic, CardStatus status)
    {
        StoredBatch storage b = _batches[leaf.batchId];
        if (b.anchoredAt == 0 || leaf.index >= b.cardCount) return (false, CardStatus.Unknown);
        if (!MerkleProof.verifyCalldata(proof, b.root, leafHash(leaf))) return (false, CardStatus.Unknown);
        // A leaf of another product or expiry than the batch was anchored with is not one of its cards.
        Product storage p = _products[b.productId];
        if (leaf.sku != p.sku || leaf.faceValue != p.faceValue || leaf.currency != p.currency || leaf.expiry != b.expiry) {
            return (false, CardStatus.Unknown);
        }
        if (isRedeemed(leaf.batchId, leaf.index)) return (true, CardStatus.Redeemed);
        if (isRevoked(leaf.batchId, leaf.index)) return (true, CardStatus.Revoked);
        if (leaf.expiry != 0 && block.timestamp > leaf.expiry) return (true, CardStatus.Expired);
        return (true, CardStatus.Valid);
    }

    // ---------------------------------------------------------------- internals

    /// @dev A revokeCards/markRedeemed call emits one event per touched word, even when its indices come back
    /// to an earlier word (e.g. [1, 300, 2]). Once a call leaves its first word, the bits it set in each word are
    /// accumulated in transient storage (EIP-1153) at `_WORD_MASKS ^ word`, and the words in first-touch order in
    /// memory: O(1) per word change. Calls that stay in one word (the common case) never use either.
    uint256 private constant _WORD_MASKS = uint256(keccak256("cardproof.CardRegistry.wordMasks"));

    /// @dev Room for the distinct words a call can touch: at most one per index, and only in-range words.
    function _newWordList(uint256 n, uint256 cardCount) private pure returns (uint256[] memory) {
        uint256 words = (cardCount + 255) >> 8;
        return new uint256[](n < words ? n : words);
    }

    /// @dev OR `mask` into the transient mask of `word`, appending `word` to `words` when it is new (a mask is
    /// never zero, so a zero slot means new). Returns the new count of `words`.
    function _addWordMask(uint256[] memory words, uint256 count, uint256 word, uint256 mask)
        private
        returns (uint256)
    {
        uint256 slot = _WORD_MASKS ^ word;
        uint256 prev;
        assembly ("memory-safe") {
            prev := tload(slot)
        }
        if (prev == 0) {
            words[count] = word;
            ++count;
        }
        assembly ("memory-safe") {
            tstore(slot, or(prev, mask))
        }
        return count;
    }

    /// @dev The accumulated mask of `word`, clearing it so that a later call in the same transaction starts empty.
    function _takeWordMask(uint256 word) private returns (uint256 mask) {
        uint256 slot = _WORD_MASKS ^ word;
        assembly ("memory-safe") {
            mask := tload(slot)
            tstore(slot, 0)
        }
    }

    function _requireIssuer(bytes32 batchId) private view returns (StoredBatch storage b) {
        b = _batches[batchId];
        if (b.anchoredAt == 0) revert BatchNotAnchored(batchId);
        if (address(bytes20(batchId)) != msg.sender) revert NotBatchIssuer(batchId, msg.sender);
    }
}
