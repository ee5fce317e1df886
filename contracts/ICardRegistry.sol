// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title The card leaf committed to by every batch root.
/// @notice Field order and types are consensus-critical: they are written down once in
/// `issuer/core/leaf.py` (LEAF_FIELDS) and in docs/leaf.md. Changing them breaks every anchored proof.
/// The leaf hash is OpenZeppelin StandardMerkleTree's: keccak256(bytes.concat(keccak256(abi.encode(leaf)))).
struct CardLeaf {
    /// @dev Leaf format version, 2. A new leaf or commitment format gets a new number.
    uint16 version;
    /// @dev Batch id; its first 20 bytes are the issuer's address.
    bytes32 batchId;
    /// @dev Position of the card in its batch, 0-based; indexes the bitmaps.
    uint32 index;
    /// @dev The card's public serial (80 random bits; shown as Crockford base32 with a check symbol).
    uint80 serial;
    /// @dev Product SKU, ASCII, right-padded with zero bytes.
    bytes32 sku;
    /// @dev Face value in the currency's minor units.
    uint128 faceValue;
    /// @dev ISO 4217 alphabetic currency code, ASCII.
    bytes3 currency;
    /// @dev Unix time after which the card is expired; 0 means it never expires.
    uint64 expiry;
    /// @dev How a typed code is canonicalised before it is committed: 0 exact, 1 case- and dash-insensitive.
    uint8 codeForm;
    /// @dev sha256("cardproof/code/v2" || 0x00 || opening || canonical code): the card's 128-bit opening
    /// hides the code from offline guessing, and the holder of code and opening can check it alone.
    bytes32 codeCommitment;
}

/// @notice What a card is: its SKU, face value and currency. Registered once, the first time a batch of it is
/// anchored, under a sequential id (from 1). Escrow orders name a product by this id.
struct Product {
    /// @dev Product SKU, ASCII, right-padded with zero bytes (as in the leaf).
    bytes32 sku;
    /// @dev Face value in the currency's minor units (as in the leaf).
    uint128 faceValue;
    /// @dev ISO 4217 alphabetic currency code, ASCII (as in the leaf).
    bytes3 currency;
}

/// @notice A batch, as returned by `batch()`. Stored in two slots (the issuer is the first 20 bytes of the id).
struct Batch {
    bytes32 root;
    /// @dev The first 20 bytes of the batch id; zero when the batch is not anchored.
    address issuer;
    uint32 cardCount;
    uint40 anchoredAt;
    bool revoked;
    uint16 revokeReason;
    /// @dev The product of every card of the batch, fixed when it was anchored (see `product`).
    uint32 productId;
    /// @dev The expiry of every card of the batch (Unix time; 0 = never expires), fixed when it was anchored.
    uint64 expiry;
}

/// @notice Status of a card as far as the chain knows it.
enum CardStatus {
    /// @dev Not authentic: the batch is not anchored, the index is out of range, or the proof fails.
    Unknown,
    /// @dev Authentic, neither revoked nor redeemed, not expired.
    Valid,
    /// @dev Authentic but revoked by its issuer (the card, or its whole batch).
    Revoked,
    /// @dev Authentic and already redeemed.
    Redeemed,
    /// @dev Authentic, not revoked or redeemed, but past its expiry.
    Expired
}

/// @title Custom errors of the CardRegistry, in the style of OpenZeppelin's IERC6093.
interface ICardRegistryErrors {
    /// @notice `batchId` was anchored already; a batch id is anchored once, whatever root it carries.
    error BatchAlreadyAnchored(bytes32 batchId);
    /// @notice `batchId` has not been anchored.
    error BatchNotAnchored(bytes32 batchId);
    /// @notice The first 20 bytes of `batchId` are not `caller`: issuers anchor only ids they own.
    error BatchIdNotOwned(bytes32 batchId, address caller);
    /// @notice A batch must hold at least one card.
    error EmptyBatch(bytes32 batchId);
    /// @notice A zero root cannot be anchored.
    error InvalidRoot(bytes32 batchId);
    /// @notice A product needs a SKU, a face value above zero and a currency.
    error InvalidProduct();
    /// @notice `caller` is not the issuer of `batchId`.
    error NotBatchIssuer(bytes32 batchId, address caller);
    /// @notice `caller` is neither the issuer of `batchId` nor one of its redeemers.
    error NotBatchRedeemer(bytes32 batchId, address caller);
    /// @notice `index` is not below the batch's `cardCount`.
    error CardIndexOutOfRange(bytes32 batchId, uint256 index, uint256 cardCount);
    /// @notice Card `index` of `batchId` was redeemed already.
    error CardAlreadyRedeemed(bytes32 batchId, uint256 index);
    /// @notice Card `index` of `batchId` is revoked (on its own or with its whole batch).
    error CardRevoked(bytes32 batchId, uint256 index);
    /// @notice The whole batch `batchId` is revoked already.
    error BatchAlreadyRevoked(bytes32 batchId);
    /// @notice A call that takes card indices was given none.
    error EmptyIndexList();
    /// @notice The zero address is not allowed here.
    error ZeroAddress();
    /// @notice An issuer's display name must be 1 to 64 bytes of UTF-8.
    error InvalidIssuerName();
}

/// @title Events of the CardRegistry.
interface ICardRegistryEvents {
    /// @notice `issuer` anchored batch `batchId` with Merkle `root` over `cardCount` cards of product `productId`
    /// that expire at `expiry` (0 = never).
    /// @param manifestHash Hash of the off-chain batch manifest (kept in the event only, to save gas).
    event BatchAnchored(
        bytes32 indexed batchId,
        address indexed issuer,
        bytes32 root,
        uint256 cardCount,
        bytes32 manifestHash,
        uint32 productId,
        uint64 expiry
    );
    /// @notice Product `productId` was registered (by the first anchor of a batch of it).
    event ProductRegistered(uint32 indexed productId, bytes32 sku, uint128 faceValue, bytes3 currency);
    /// @notice The issuer revoked the cards whose bits are set in `mask`, in bitmap word `wordIndex`
    /// (cards wordIndex*256 + bit). One event per touched word.
    event CardsRevoked(bytes32 indexed batchId, uint256 indexed wordIndex, uint256 mask, uint16 reason);
    /// @notice The issuer revoked the whole batch.
    event BatchRevoked(bytes32 indexed batchId, uint16 reason);
    /// @notice `by` redeemed the cards whose bits are set in `mask`, in bitmap word `wordIndex`
    /// (cards wordIndex*256 + bit). One event per touched word.
    event CardsRedeemed(bytes32 indexed batchId, uint256 indexed wordIndex, uint256 mask, address indexed by);
    /// @notice The platform granted ISSUER_ROLE to `issuer` under the display name `name`.
    event IssuerNamed(address indexed issuer, string name);
    /// @notice `issuer` appointed (`allowed`) or dismissed a `redeemer` for all of its batches.
    event RedeemerSet(address indexed issuer, address indexed redeemer, bool allowed);
}

/// @title CardRegistry: anchors Merkle roots of card batches and keeps their revocation and redemption bitmaps.
interface ICardRegistry is ICardRegistryErrors, ICardRegistryEvents {
    /// @notice Role of the accounts allowed to anchor batches (suppliers), granted by the admin.
    function ISSUER_ROLE() external view returns (bytes32);

    /// @notice Grant ISSUER_ROLE to `issuer` and record its display name on chain, so that pages and
    /// verifiers show a name backed by the platform's signature, not by a server's database. Admin only.
    /// Calling it again for an issuer renames it.
    function grantIssuer(address issuer, string calldata name) external;

    /// @notice The display name the platform recorded for `issuer` ("" when none was recorded).
    function issuerName(address issuer) external view returns (string memory);

    /// @notice Anchor a batch. Only an issuer, and only for a batch id whose first 20 bytes are its address.
    /// The batch's product and expiry are fixed here, for good: every leaf of the batch carries them, escrow
    /// orders for another product (or a later minimum expiry) cannot be delivered from it, and the escrow
    /// rebuilds the leaves of a disputed delivery with them.
    /// @param batchId The batch id; anchored at most once.
    /// @param root The OpenZeppelin StandardMerkleTree root over the batch's CardLeaf values.
    /// @param cardCount Number of cards (leaves) in the batch, at least 1.
    /// @param manifestHash Hash of the off-chain manifest, emitted for auditors.
    /// @param cardProduct The cards' SKU, face value and currency; registered under a new id if it is new.
    /// @param expiry The cards' expiry (Unix time; 0 = never expires).
    function anchorBatch(
        bytes32 batchId,
        bytes32 root,
        uint32 cardCount,
        bytes32 manifestHash,
        Product calldata cardProduct,
        uint64 expiry
    ) external;

    /// @notice Revoke single cards of one of the caller's batches.
    /// @param indices Card indices; each must be in range and not revoked or redeemed already.
    /// @param reason An application-defined reason code (1 leaked, 2 fraud, 3 recalled, ...).
    function revokeCards(bytes32 batchId, uint256[] calldata indices, uint16 reason) external;

    /// @notice Revoke every card of one of the caller's batches.
    function revokeBatch(bytes32 batchId, uint16 reason) external;

    /// @notice Appoint or dismiss a redeemer for all of the caller's batches.
    function setRedeemer(address redeemer, bool allowed) external;

    /// @notice Mark cards redeemed, exactly once each. Only the batch's issuer or one of its redeemers.
    /// Reverts, leaving nothing changed, if any index is out of range, revoked or already redeemed.
    function markRedeemed(bytes32 batchId, uint256[] calldata indices) external;

    /// @notice The stored batch; `anchoredAt` is 0 when the batch is not anchored.
    function batch(bytes32 batchId) external view returns (Batch memory);

    /// @notice Product `productId` (all zero when there is no such product).
    function product(uint32 productId) external view returns (Product memory);

    /// @notice The id of a product (0 when no batch of it was ever anchored).
    function productIdOf(bytes32 sku, uint128 faceValue, bytes3 currency) external view returns (uint32);

    /// @notice Number of products registered (the last product id).
    function productCount() external view returns (uint32);

    /// @notice Whether `redeemer` may redeem `issuer`'s cards.
    function isRedeemer(address issuer, address redeemer) external view returns (bool);

    /// @notice Whether card `index` of `batchId` is redeemed.
    function isRedeemed(bytes32 batchId, uint256 index) external view returns (bool);

    /// @notice Whether card `index` of `batchId` is revoked, on its own or with its batch.
    function isRevoked(bytes32 batchId, uint256 index) external view returns (bool);

    /// @notice Redemption bitmap word `wordIndex` (cards wordIndex*256 .. wordIndex*256+255).
    function redeemedWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256);

    /// @notice Revocation bitmap word `wordIndex`; all ones when the whole batch is revoked.
    function revokedWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256);

    /// @notice Hash of a card leaf, as in OpenZeppelin's StandardMerkleTree.
    function leafHash(CardLeaf calldata leaf) external pure returns (bytes32);

    /// @notice Check a card against its batch root and report its status.
    /// @return authentic Whether the batch is anchored, the index in range, the proof valid, and the leaf's
    /// product and expiry those the batch was anchored with.
    /// @return status The card's status; Unknown when not authentic.
    function verifyCard(CardLeaf calldata leaf, bytes32[] calldata proof)
        external
        view
        returns (bool authentic, CardStatus status);
}
