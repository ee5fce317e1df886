// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControlEnumerable} from "@openzeppelin/contracts/access/extensions/AccessControlEnumerable.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ICardRegistry, Batch, CardLeaf, Product} from "./ICardRegistry.sol";
import {
    ICardEscrow, Order, OrderStatus, OrderTerms, ProvenCard, CardRange, EscrowRules
} from "./ICardEscrow.sol";

/// @title CardEscrow
/// @notice Stablecoin escrow between card buyers and suppliers, settled against the CardRegistry.
///
/// A buyer opens an order for `quantity` cards of a supplier (an ISSUER_ROLE holder of the registry) and
/// funds it in the same transaction. Before the delivery deadline the supplier assigns exactly `quantity`
/// cards from its own anchored batches; each card must be neither revoked nor redeemed, and is sold once
/// (the escrow keeps its own bitmap of delivered cards). The buyer confirms, or anyone releases after the
/// dispute window: the supplier is paid for every delivered card that is not revoked at that moment, minus
/// the platform fee, and the buyer is refunded for the revoked ones that were not redeemed (a card used before
/// its batch was revoked is paid for). Within the window the buyer may dispute instead and an arbiter splits the
/// escrow. Without a delivery the buyer cancels after the deadline.
///
/// Disputes end: a dispute has a deadline (the disputeResolutionPeriod in force when it was raised). An arbiter
/// may resolve it until then; from the deadline on anyone settles it with the default outcome, the settlement of
/// an undisputed release (supplier paid for the cards not refundable, buyer refunded for the refundable ones).
/// The buyer's remedy for a bad card, when no arbiter acts, is thus the issuer's revocation, refunded by rule.
/// The buyer may withdraw a dispute: the order is delivered again while its window is open, else it settles.
/// An arbiter is granted at deploy; arbiters may be contracts; `getRoleMembers(ARBITER_ROLE)` lists them.
///
/// Every payout is a credit withdrawn by its owner (pull payments): a reverting or blocklisted recipient
/// can only block its own withdrawal, and may withdraw to another address.
///
/// @dev Fees: the fee rate is copied into each order at opening. At settlement it is charged on the
/// supplier's proceeds only (valid cards * unitPrice, or the arbiter's supplier share), rounded down; the
/// buyer's refunds are never charged. Fees accrue per token in the token's state slot (cheaper than a credit
/// slot) and belong to the fee recipient in force; changing the recipient credits the accrued fees to the old
/// one first.
///
/// Storage (gas): an order takes three slots at opening and two more at delivery:
///   slot 0: buyer | deliveryDeadline (uint32) | disputeWindow (uint32) | feeBps (uint8) | status | quantity (uint16)
///   slot 1: supplier | binding (uint96): before delivery the ordered productId (uint32) | minExpiry (uint64) << 32;
///           from delivery on the batch nonce (a batch id is its issuer's address followed by 12 bytes), whose
///           product delivery checked to be the ordered one
///   slot 2: token | unitPrice (uint96)
///   slot 3: deliveredAt (uint32) | rangeCount (uint8) | up to three ranges of 64 bits (start | length << 32)
///   `_sealedHashes`: the sealed delivery's hash, written at delivery
/// Further ranges go four per word into `_extraRanges`. Settlement therefore needs no per-card storage:
/// it re-reads the registry's revocation words for the delivered ranges (one call per 256-card word, plus the
/// redemption word where a card is revoked) and counts the refundable cards with a popcount. A dispute is the only
/// other per-order word (`_disputes`: deadline | proven count << 64 | membership flag << 255), written when the
/// buyer disputes. Cards proven in a membership dispute are marked in `_proven`, keyed by batch like `_delivered`
/// (a card is delivered in one order only, so the bit is the order's).
///
/// Credits: a credit slot holds 1 + the credit once used, and withdrawals leave it at 1, so a slot is paid
/// for (zero to non-zero, 20k gas) once per account and token, never again. `deliver` initialises the
/// supplier's slot for the order's token if needed, so that settlement (paid by the buyer or a releaser)
/// never pays that for the supplier.
contract CardEscrow is AccessControlEnumerable, ReentrancyGuardTransient, ICardEscrow {
    using SafeERC20 for IERC20;

    /// @inheritdoc ICardEscrow
    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");
    /// @inheritdoc ICardEscrow
    uint16 public constant MAX_FEE_BPS = 100;
    /// @notice The registry's role of suppliers (CardRegistry.ISSUER_ROLE).
    bytes32 public constant ISSUER_ROLE = keccak256("ISSUER_ROLE");
    /// @notice Largest quantity of one order; bounds the gas of delivery and settlement (256 bitmap words).
    uint256 public constant MAX_QUANTITY = type(uint16).max;
    /// @notice Largest number of card ranges in one delivery.
    uint256 public constant MAX_RANGES = 64;
    /// @inheritdoc ICardEscrow
    uint32 public constant MIN_WINDOW = 1 hours;
    /// @inheritdoc ICardEscrow
    uint32 public constant MAX_DISPUTE_RESOLUTION_PERIOD = 90 days;

    uint256 private constant _BPS = 10_000;
    uint256 private constant _INLINE_RANGES = 3;

    /// @dev Storage form of an order (see the contract's dev notes for the layout).
    struct StoredOrder {
        address buyer;
        uint32 deliveryDeadline;
        uint32 disputeWindow;
        uint8 feeBps;
        OrderStatus status;
        uint16 quantity;
        address supplier;
        uint96 binding;
        address token;
        uint96 unitPrice;
        uint256 delivery;
    }

    /// @dev Rules read when an order opens or a dispute is raised, with the order counter: one storage slot.
    struct Config {
        uint64 orderCount;
        uint8 feeBps;
        uint32 maxDeliveryPeriod;
        uint32 minDisputeWindow;
        uint32 maxDisputeWindow;
        uint32 disputeResolutionPeriod;
    }

    /// @dev Per payment token: allowlisted, ever seen (listed in _tokenList), and the accrued platform fees.
    struct TokenState {
        bool allowed;
        bool listed;
        uint240 feesAccrued;
    }

    ICardRegistry private immutable _registry;

    Config private _config;
    address private _feeRecipient;
    address[] private _tokenList;
    mapping(address token => TokenState) private _tokens;
    mapping(uint256 orderId => StoredOrder) private _orders;
    mapping(uint256 orderId => mapping(uint256 word => uint256)) private _extraRanges;
    mapping(bytes32 batchId => mapping(uint256 wordIndex => uint256)) private _delivered;
    mapping(address account => mapping(address token => uint256)) private _credits;
    /// @dev The order's dispute: deadline (uint64) | cards proven (uint32) << 64 | membership << 255. Set by a
    /// dispute; a withdrawal that re-opens the order clears all but the proven count; kept after settlement.
    mapping(uint256 orderId => uint256) private _disputes;
    mapping(uint256 orderId => bytes32) private _sealedHashes;
    mapping(bytes32 batchId => mapping(uint256 wordIndex => uint256)) private _proven;

    uint256 private constant _MEMBERSHIP = 1 << 255;
    uint256 private constant _DEADLINE_MASK = type(uint64).max;
    uint256 private constant _LEAF_VERSION = 2;

    /// @param registry_ The CardRegistry; its ISSUER_ROLE holders are the suppliers.
    /// @param admin Holder of DEFAULT_ADMIN_ROLE (rules, allowlist, arbiters).
    /// @param feeRecipient_ Owner of the platform fees.
    /// @param arbiter First holder of ARBITER_ROLE (an account or a contract), so that disputes can be resolved
    /// from the start; the admin grants and revokes arbiters afterwards.
    /// @dev Starts with no fee, a 90-day maximum delivery period, dispute windows of 1 hour to 30 days and a
    /// 7-day dispute resolution period.
    constructor(address registry_, address admin, address feeRecipient_, address arbiter) {
        if (registry_ == address(0) || admin == address(0) || feeRecipient_ == address(0) || arbiter == address(0)) {
            revert ZeroAddress();
        }
        _registry = ICardRegistry(registry_);
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ARBITER_ROLE, arbiter);
        _feeRecipient = feeRecipient_;
        _config = Config({
            orderCount: 0,
            feeBps: 0,
            maxDeliveryPeriod: 90 days,
            minDisputeWindow: 1 hours,
            maxDisputeWindow: 30 days,
            disputeResolutionPeriod: 7 days
        });
        emit FeeRecipientSet(address(0), feeRecipient_);
        emit FeeSet(0);
        emit WindowRulesSet(90 days, 1 hours, 30 days, 7 days);
    }

    // =================================================================== admin

    /// @inheritdoc ICardEscrow
    function setTokensAllowed(address[] calldata tokens, bool allowed)
        external
        nonReentrant
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        for (uint256 i; i < tokens.length; ++i) {
            address token = tokens[i];
            if (token == address(0)) revert ZeroAddress();
            TokenState storage t = _tokens[token];
            t.allowed = allowed;
            if (!t.listed) {
                t.listed = true;
                _tokenList.push(token);
            }
            emit TokenAllowed(token, allowed);
        }
    }

    /// @inheritdoc ICardEscrow
    function setFee(uint16 feeBps) external nonReentrant onlyRole(DEFAULT_ADMIN_ROLE) {
        if (feeBps > MAX_FEE_BPS) revert FeeTooHigh(feeBps, MAX_FEE_BPS);
        _config.feeBps = uint8(feeBps);
        emit FeeSet(feeBps);
    }

    /// @inheritdoc ICardEscrow
    function setFeeRecipient(address feeRecipient) external nonReentrant onlyRole(DEFAULT_ADMIN_ROLE) {
        if (feeRecipient == address(0)) revert ZeroAddress();
        address previous = _feeRecipient;
        // Fees accrued so far belong to the previous recipient: turn them into its ordinary credits.
        uint256 n = _tokenList.length;
        for (uint256 i; i < n; ++i) {
            address token = _tokenList[i];
            TokenState storage t = _tokens[token];
            uint256 fees = t.feesAccrued;
            if (fees != 0) {
                t.feesAccrued = 0;
                _credit(previous, token, fees);
            }
        }
        _feeRecipient = feeRecipient;
        emit FeeRecipientSet(previous, feeRecipient);
    }

    /// @inheritdoc ICardEscrow
    function setWindowRules(
        uint32 maxDeliveryPeriod,
        uint32 minDisputeWindow,
        uint32 maxDisputeWindow,
        uint32 disputeResolutionPeriod
    ) external nonReentrant onlyRole(DEFAULT_ADMIN_ROLE) {
        uint32 noCeiling = type(uint32).max;
        if (maxDeliveryPeriod < MIN_WINDOW) {
            revert WindowOutOfBounds("maxDeliveryPeriod", maxDeliveryPeriod, MIN_WINDOW, noCeiling);
        }
        if (minDisputeWindow < MIN_WINDOW) {
            revert WindowOutOfBounds("minDisputeWindow", minDisputeWindow, MIN_WINDOW, noCeiling);
        }
        if (minDisputeWindow > maxDisputeWindow) {
            revert InvalidWindowRules(maxDeliveryPeriod, minDisputeWindow, maxDisputeWindow);
        }
        if (disputeResolutionPeriod < MIN_WINDOW || disputeResolutionPeriod > MAX_DISPUTE_RESOLUTION_PERIOD) {
            revert WindowOutOfBounds(
                "disputeResolutionPeriod", disputeResolutionPeriod, MIN_WINDOW, MAX_DISPUTE_RESOLUTION_PERIOD
            );
        }
        Config storage c = _config;
        c.maxDeliveryPeriod = maxDeliveryPeriod;
        c.minDisputeWindow = minDisputeWindow;
        c.maxDisputeWindow = maxDisputeWindow;
        c.disputeResolutionPeriod = disputeResolutionPeriod;
        emit WindowRulesSet(maxDeliveryPeriod, minDisputeWindow, maxDisputeWindow, disputeResolutionPeriod);
    }

    // =================================================================== opening

    /// @inheritdoc ICardEscrow
    function openOrder(OrderTerms calldata terms, bytes calldata sealKey) external nonReentrant returns (uint256) {
        return _open(terms, sealKey);
    }

    /// @inheritdoc ICardEscrow
    function openOrderWithPermit(
        OrderTerms calldata terms,
        bytes calldata sealKey,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external nonReentrant returns (uint256) {
        // Never call into a token that is not allowlisted.
        address token = terms.token;
        if (!_tokens[token].allowed) revert TokenNotAllowed(token);
        uint256 amount;
        unchecked {
            amount = terms.quantity * terms.unitPrice; // an overflowing product fails _open's bounds checks anyway
        }
        // A permit that fails (front-run, already used, unsupported) is ignored: if the allowance it would
        // have set is there anyway, the order opens; otherwise the transfer below reverts.
        try IERC20Permit(token).permit(msg.sender, address(this), amount, permitDeadline, v, r, s) {} catch {}
        return _open(terms, sealKey);
    }

    function _open(OrderTerms calldata terms, bytes calldata sealKey) private returns (uint256 orderId) {
        Config memory c = _config;
        address supplier = terms.supplier;
        uint256 quantity = terms.quantity;
        address token = terms.token;
        uint256 unitPrice = terms.unitPrice;
        uint256 deliveryDeadline = terms.deliveryDeadline;
        uint256 disputeWindow = terms.disputeWindow;
        if (!_tokens[token].allowed) revert TokenNotAllowed(token);
        if (quantity == 0 || quantity > MAX_QUANTITY) revert InvalidQuantity(quantity, MAX_QUANTITY);
        if (unitPrice == 0 || unitPrice > type(uint96).max) revert InvalidUnitPrice(unitPrice);
        uint256 latest = block.timestamp + c.maxDeliveryPeriod;
        if (latest > type(uint32).max) latest = type(uint32).max; // stored as uint32 (good until 2106)
        if (deliveryDeadline <= block.timestamp || deliveryDeadline > latest) {
            revert InvalidDeliveryDeadline(deliveryDeadline, block.timestamp, latest);
        }
        if (disputeWindow < c.minDisputeWindow || disputeWindow > c.maxDisputeWindow) {
            revert InvalidDisputeWindow(disputeWindow, c.minDisputeWindow, c.maxDisputeWindow);
        }
        if (!IAccessControl(address(_registry)).hasRole(ISSUER_ROLE, supplier)) revert SupplierNotIssuer(supplier);
        uint256 productId = terms.productId;
        if (productId == 0 || productId > _registry.productCount()) revert UnknownProduct(productId);
        if (sealKey.length != 33) revert InvalidSealKey(sealKey.length);

        uint256 amount = quantity * unitPrice;
        unchecked {
            orderId = uint256(c.orderCount) + 1;
        }
        _config.orderCount = uint64(orderId);
        // Write the three slots whole (see the layout in the contract's notes); all values are range-checked.
        uint256 word0 = uint256(uint160(msg.sender)) | (deliveryDeadline << 160) | (disputeWindow << 192)
            | (uint256(c.feeBps) << 224) | (uint256(uint8(OrderStatus.Funded)) << 232) | (quantity << 240);
        uint256 word1 = uint256(uint160(supplier)) | (productId << 160) | (uint256(terms.minExpiry) << 192);
        uint256 word2 = uint256(uint160(token)) | (unitPrice << 160);
        StoredOrder storage o = _orders[orderId];
        assembly ("memory-safe") {
            let slot := o.slot
            sstore(slot, word0)
            sstore(add(slot, 1), word1)
            sstore(add(slot, 2), word2)
        }

        // Fund it, counting what actually arrived: a fee-on-transfer token must not under-fund the order.
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransferFrom(msg.sender, address(this), amount);
        uint256 afterwards = erc20.balanceOf(address(this));
        uint256 received = afterwards > before ? afterwards - before : 0;
        if (received < amount) revert UnderFunded(token, amount, received);

        emit OrderOpened(
            orderId,
            msg.sender,
            supplier,
            token,
            uint32(productId),
            terms.minExpiry,
            quantity,
            unitPrice,
            amount,
            c.feeBps,
            deliveryDeadline,
            disputeWindow,
            sealKey
        );
    }

    // =================================================================== delivery

    /// @inheritdoc ICardEscrow
    function deliver(uint256 orderId, bytes32 batchId, CardRange[] calldata ranges, bytes32 sealedHash)
        external
        nonReentrant
    {
        StoredOrder storage o = _orderIn(orderId, OrderStatus.Funded);
        address supplier = o.supplier;
        if (msg.sender != supplier) revert NotOrderSupplier(orderId, msg.sender);
        uint256 deadline = o.deliveryDeadline;
        if (block.timestamp > deadline) revert DeliveryDeadlinePassed(orderId, deadline);
        uint256 n = ranges.length;
        if (n == 0 || n > MAX_RANGES) revert InvalidRangeCount(n, MAX_RANGES);
        if (sealedHash == bytes32(0)) revert MissingSealedHash(orderId);
        if (address(bytes20(batchId)) != supplier) revert BatchNotOwnedBySupplier(batchId, supplier);
        Batch memory b = _registry.batch(batchId);
        if (b.anchoredAt == 0 || b.issuer != supplier) revert BatchNotOwnedBySupplier(batchId, supplier);
        {
            uint256 binding = o.binding;
            uint256 productId = uint32(binding);
            if (b.productId != productId) revert ProductMismatch(orderId, batchId, productId, b.productId);
            uint256 minExpiry = binding >> 32;
            if (b.expiry != 0 && b.expiry < minExpiry) revert ExpiryTooSoon(orderId, batchId, b.expiry, minExpiry);
        }
        // A supplier struck off the registry cannot deliver any more; its buyers cancel after the deadline.
        if (!IAccessControl(address(_registry)).hasRole(ISSUER_ROLE, supplier)) revert SupplierNotIssuer(supplier);

        uint256 cardCount = b.cardCount;
        uint256 total;
        uint256 packed = block.timestamp | (n << 32); // slot 3: deliveredAt | rangeCount | inline ranges
        WordCache memory cache = WordCache(type(uint256).max, 0);
        for (uint256 i; i < n; ++i) {
            uint256 start = ranges[i].start;
            uint256 length = ranges[i].length;
            if (length == 0 || start + length > cardCount) revert InvalidCardRange(batchId, start, length, cardCount);
            total += length;
            _claimCards(batchId, start, start + length, cache);
            uint256 encoded = start | (length << 32);
            if (i < _INLINE_RANGES) {
                packed |= encoded << (40 + 64 * i);
            } else {
                uint256 j = i - _INLINE_RANGES;
                _extraRanges[orderId][j >> 2] |= encoded << (64 * (j & 3));
            }
        }
        uint256 quantity = o.quantity;
        if (total != quantity) revert QuantityMismatch(orderId, quantity, total);

        o.binding = uint96(uint256(batchId));
        o.delivery = packed;
        o.status = OrderStatus.Delivered;
        _sealedHashes[orderId] = sealedHash;
        // Pay for the supplier's credit slot now (see the contract's notes on credits).
        mapping(address => uint256) storage supplierCredits = _credits[supplier];
        address token = o.token;
        if (supplierCredits[token] == 0) supplierCredits[token] = 1;
        emit OrderDelivered(orderId, batchId, ranges, sealedHash);
    }

    /// @dev The registry's words for the bitmap word `index` last read: revoked | redeemed cards.
    struct WordCache {
        uint256 index;
        uint256 unavailable;
    }

    /// @dev Mark cards [start, end) of `batchId` delivered, one bitmap word at a time, after checking that
    /// none is revoked or redeemed in the registry (each registry word is read once per delivery, also when
    /// several ranges share it) or delivered already.
    function _claimCards(bytes32 batchId, uint256 start, uint256 end, WordCache memory cache) private {
        mapping(uint256 => uint256) storage delivered = _delivered[batchId];
        while (start < end) {
            uint256 w = start >> 8;
            uint256 wordEnd = (w + 1) << 8;
            if (wordEnd > end) wordEnd = end;
            uint256 mask = _mask(start & 0xff, wordEnd - (w << 8));
            if (cache.index != w) {
                cache.index = w;
                cache.unavailable = _registry.revokedWord(batchId, w) | _registry.redeemedWord(batchId, w);
            }
            if (cache.unavailable & mask != 0) _revertUnavailable(batchId, w, mask);
            uint256 word = delivered[w];
            if (word & mask != 0) revert CardAlreadyDelivered(batchId, (w << 8) + _lowestBit(word & mask));
            delivered[w] = word | mask;
            start = wordEnd;
        }
    }

    /// @dev Error path only: name the first card of `mask` in word `w` that is revoked or redeemed.
    function _revertUnavailable(bytes32 batchId, uint256 w, uint256 mask) private view {
        uint256 revoked = _registry.revokedWord(batchId, w) & mask;
        uint256 redeemed = _registry.redeemedWord(batchId, w) & mask;
        uint256 rb = revoked == 0 ? type(uint256).max : _lowestBit(revoked);
        uint256 db = redeemed == 0 ? type(uint256).max : _lowestBit(redeemed);
        if (rb <= db) revert CardRevoked(batchId, (w << 8) + rb);
        revert CardAlreadyRedeemed(batchId, (w << 8) + db);
    }

    // =================================================================== settlement

    /// @inheritdoc ICardEscrow
    function confirm(uint256 orderId) external nonReentrant {
        StoredOrder storage o = _orderIn(orderId, OrderStatus.Delivered);
        if (msg.sender != o.buyer) revert NotOrderBuyer(orderId, msg.sender);
        o.status = OrderStatus.Confirmed;
        (uint256 revoked, uint256 supplierAmount, uint256 fee, uint256 refund) = _settle(orderId, o, false);
        emit OrderConfirmed(orderId, revoked, supplierAmount, fee, refund);
    }

    /// @inheritdoc ICardEscrow
    function release(uint256 orderId) external nonReentrant {
        StoredOrder storage o = _orders[orderId];
        OrderStatus status = o.status;
        bool membership;
        if (status == OrderStatus.Delivered) {
            uint256 windowEnd = _windowEnd(o);
            if (block.timestamp < windowEnd) revert DisputeWindowOpen(orderId, windowEnd);
        } else if (status == OrderStatus.Disputed) {
            // The dispute ended without a ruling: the default outcome applies.
            uint256 word = _disputes[orderId];
            uint256 deadline = word & _DEADLINE_MASK;
            if (block.timestamp < deadline) revert DisputeDeadlineNotPassed(orderId, deadline);
            membership = word & _MEMBERSHIP != 0;
            emit DisputeExpired(orderId, deadline);
        } else {
            if (status == OrderStatus.None) revert OrderNotFound(orderId);
            revert InvalidOrderStatus(orderId, status, OrderStatus.Delivered);
        }
        _release(orderId, o, membership);
    }

    /// @inheritdoc ICardEscrow
    function dispute(uint256 orderId) external nonReentrant {
        _dispute(orderId, false);
    }

    /// @inheritdoc ICardEscrow
    function disputeMembership(uint256 orderId) external nonReentrant {
        _dispute(orderId, true);
    }

    function _dispute(uint256 orderId, bool membership) private {
        StoredOrder storage o = _orderIn(orderId, OrderStatus.Delivered);
        if (msg.sender != o.buyer) revert NotOrderBuyer(orderId, msg.sender);
        uint256 windowEnd = _windowEnd(o);
        if (block.timestamp >= windowEnd) revert DisputeWindowClosed(orderId, windowEnd);
        o.status = OrderStatus.Disputed;
        uint256 deadline = block.timestamp + _config.disputeResolutionPeriod;
        // Keep the count of cards proven in an earlier membership dispute of the order (their bits stay set).
        uint256 kept = _disputes[orderId] & (uint256(type(uint32).max) << 64);
        _disputes[orderId] = deadline | kept | (membership ? _MEMBERSHIP : 0);
        emit OrderDisputed(orderId, deadline, membership);
    }

    /// @inheritdoc ICardEscrow
    function proveDelivery(
        uint256 orderId,
        ProvenCard[] calldata cards,
        bytes32[] calldata proof,
        bool[] calldata proofFlags
    ) external nonReentrant {
        StoredOrder storage o = _orderIn(orderId, OrderStatus.Disputed);
        uint256 word = _disputes[orderId];
        if (word & _MEMBERSHIP == 0) revert NotMembershipDispute(orderId);
        uint256 deadline = word & _DEADLINE_MASK;
        if (block.timestamp >= deadline) revert DisputeDeadlinePassed(orderId, deadline);
        bytes32 batchId = _batchIdOf(o);
        Batch memory b = _registry.batch(batchId);
        Product memory p = _registry.product(b.productId);
        uint256 n = cards.length;
        bytes32[] memory leaves = new bytes32[](n);
        uint256 added;
        {
            CardLeaf memory leaf = CardLeaf({
                version: uint16(_LEAF_VERSION),
                batchId: batchId,
                index: 0,
                serial: 0,
                sku: p.sku,
                faceValue: p.faceValue,
                currency: p.currency,
                expiry: b.expiry,
                codeForm: 0,
                codeCommitment: bytes32(0)
            });
            mapping(uint256 => uint256) storage proven = _proven[batchId];
            uint256 delivery = o.delivery;
            for (uint256 i; i < n; ++i) {
                ProvenCard calldata card = cards[i];
                uint256 index = card.index;
                if (!_inDelivery(orderId, delivery, index)) revert CardNotInOrder(orderId, index);
                leaf.index = card.index;
                leaf.serial = card.serial;
                leaf.codeForm = card.codeForm;
                leaf.codeCommitment = card.codeCommitment;
                leaves[i] = keccak256(bytes.concat(keccak256(abi.encode(leaf))));
                uint256 bit = 1 << (index & 0xff);
                uint256 w = proven[index >> 8];
                if (w & bit == 0) {
                    proven[index >> 8] = w | bit;
                    ++added;
                }
            }
        }
        if (!MerkleProof.multiProofVerifyCalldata(proof, proofFlags, b.root, leaves)) {
            revert InvalidDeliveryProof(orderId);
        }
        uint256 total = ((word >> 64) & type(uint32).max) + added;
        _disputes[orderId] = (word & ~(uint256(type(uint32).max) << 64)) | (total << 64);
        emit DeliveryProven(orderId, added, total);
        // Every card is in the batch: the buyer's claim failed, settle now with the default outcome.
        if (total == o.quantity) _release(orderId, o, true);
    }

    /// @dev Whether card `index` of the order's batch is in the order's delivered ranges.
    function _inDelivery(uint256 orderId, uint256 delivery, uint256 index) private view returns (bool) {
        uint256 n = uint8(delivery >> 32);
        for (uint256 i; i < n; ++i) {
            uint256 encoded = _rangeAt(orderId, delivery, i);
            uint256 start = uint32(encoded);
            if (index >= start && index < start + uint32(encoded >> 32)) return true;
        }
        return false;
    }

    /// @inheritdoc ICardEscrow
    function withdrawDispute(uint256 orderId) external nonReentrant {
        StoredOrder storage o = _orderIn(orderId, OrderStatus.Disputed);
        if (msg.sender != o.buyer) revert NotOrderBuyer(orderId, msg.sender);
        uint256 word = _disputes[orderId];
        if (block.timestamp < _windowEnd(o) && block.timestamp < (word & _DEADLINE_MASK)) {
            // Back to Delivered with the window as it was: deliveredAt and disputeWindow never changed.
            o.status = OrderStatus.Delivered;
            _disputes[orderId] = word & (uint256(type(uint32).max) << 64); // only the proven count stays
            emit DisputeWithdrawn(orderId, false);
            return;
        }
        // Too late to re-open the window (or the dispute has expired): settle now with the default outcome of an
        // undisputed order (a withdrawn membership claim refunds no unproven card).
        _disputes[orderId] = word & ~_MEMBERSHIP;
        emit DisputeWithdrawn(orderId, true);
        _release(orderId, o, false);
    }

    /// @dev Settle with the default outcome (status Released), for `release` and late dispute withdrawals.
    /// @dev `membership`: settle a membership dispute (unproven cards are refundable too).
    function _release(uint256 orderId, StoredOrder storage o, bool membership) private {
        o.status = OrderStatus.Released;
        (uint256 revoked, uint256 supplierAmount, uint256 fee, uint256 refund) = _settle(orderId, o, membership);
        emit OrderReleased(orderId, msg.sender, revoked, supplierAmount, fee, refund);
    }

    /// @inheritdoc ICardEscrow
    function resolve(uint256 orderId, uint256 buyerAmount, uint256 supplierAmount)
        external
        nonReentrant
        onlyRole(ARBITER_ROLE)
    {
        StoredOrder storage o = _orderIn(orderId, OrderStatus.Disputed);
        uint256 deadline = _disputes[orderId] & _DEADLINE_MASK;
        if (block.timestamp >= deadline) revert DisputeDeadlinePassed(orderId, deadline);
        uint256 total = uint256(o.quantity) * o.unitPrice;
        // Each share is at most the total: no overflow in the sum, and a clear error for any bad split.
        if (buyerAmount > total || supplierAmount != total - buyerAmount) {
            revert InvalidSplit(orderId, buyerAmount, supplierAmount, total);
        }
        o.status = OrderStatus.Resolved;
        address token = o.token;
        uint256 fee = supplierAmount * o.feeBps / _BPS;
        _credit(o.buyer, token, buyerAmount);
        _credit(o.supplier, token, supplierAmount - fee);
        _accrueFee(token, fee);
        emit OrderResolved(orderId, msg.sender, buyerAmount, supplierAmount, fee);
    }

    /// @inheritdoc ICardEscrow
    function cancel(uint256 orderId) external nonReentrant {
        StoredOrder storage o = _orderIn(orderId, OrderStatus.Funded);
        address buyer = o.buyer;
        if (msg.sender != buyer) revert NotOrderBuyer(orderId, msg.sender);
        uint256 deadline = o.deliveryDeadline;
        if (block.timestamp <= deadline) revert DeliveryDeadlineNotPassed(orderId, deadline);
        o.status = OrderStatus.Cancelled;
        uint256 refund = uint256(o.quantity) * o.unitPrice;
        _credit(buyer, o.token, refund);
        emit OrderCancelled(orderId, refund);
    }

    /// @dev Credit a delivered order: the supplier gets the cards that are not refundable minus the fee, the
    /// buyer the refundable ones (see _countRefundable). The caller has set the final status already (effects
    /// before interactions; the registry reads are views of a trusted contract).
    function _settle(uint256 orderId, StoredOrder storage o, bool membership)
        private
        returns (uint256 revoked, uint256 supplierAmount, uint256 fee, uint256 refund)
    {
        revoked = _countRefundable(orderId, o, membership);
        uint256 unitPrice = o.unitPrice;
        address token = o.token;
        uint256 gross = (uint256(o.quantity) - revoked) * unitPrice;
        fee = gross * o.feeBps / _BPS;
        supplierAmount = gross - fee;
        refund = revoked * unitPrice;
        _credit(o.supplier, token, supplierAmount);
        _accrueFee(token, fee);
        _credit(o.buyer, token, refund);
    }

    // =================================================================== withdrawals

    /// @inheritdoc ICardEscrow
    function withdraw(address token) external nonReentrant {
        _withdraw(token, msg.sender);
    }

    /// @inheritdoc ICardEscrow
    function withdrawTo(address token, address to) external nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        _withdraw(token, to);
    }

    function _withdraw(address token, address to) private {
        uint256 stored = _credits[msg.sender][token];
        uint256 amount;
        if (stored > 1) {
            amount = stored - 1;
            _credits[msg.sender][token] = 1; // keep the slot non-zero: the next credit costs 5k, not 20k
        }
        if (msg.sender == _feeRecipient) {
            TokenState storage t = _tokens[token];
            uint256 fees = t.feesAccrued;
            if (fees != 0) {
                t.feesAccrued = 0;
                amount += fees;
            }
        }
        if (amount == 0) revert NothingToWithdraw(msg.sender, token);
        IERC20(token).safeTransfer(to, amount);
        emit Withdrawn(msg.sender, token, to, amount);
    }

    // =================================================================== views

    /// @inheritdoc ICardEscrow
    function registry() external view returns (address) {
        return address(_registry);
    }

    /// @inheritdoc ICardEscrow
    function isTokenAllowed(address token) external view returns (bool) {
        return _tokens[token].allowed;
    }

    /// @inheritdoc ICardEscrow
    function tokenList() external view returns (address[] memory) {
        return _tokenList;
    }

    /// @inheritdoc ICardEscrow
    function rules() external view returns (EscrowRules memory) {
        Config memory c = _config;
        return EscrowRules({
            feeBps: c.feeBps,
            maxFeeBps: MAX_FEE_BPS,
            feeRecipient: _feeRecipient,
            maxDeliveryPeriod: c.maxDeliveryPeriod,
            minDisputeWindow: c.minDisputeWindow,
            maxDisputeWindow: c.maxDisputeWindow,
            maxQuantity: uint32(MAX_QUANTITY),
            maxRanges: uint16(MAX_RANGES),
            disputeResolutionPeriod: c.disputeResolutionPeriod,
            windowFloor: MIN_WINDOW,
            maxDisputeResolutionPeriod: MAX_DISPUTE_RESOLUTION_PERIOD
        });
    }

    /// @inheritdoc ICardEscrow
    function order(uint256 orderId) external view returns (Order memory out) {
        StoredOrder storage o = _orders[orderId];
        out.buyer = o.buyer;
        out.supplier = o.supplier;
        out.token = o.token;
        out.quantity = o.quantity;
        out.unitPrice = o.unitPrice;
        out.amount = uint256(o.quantity) * o.unitPrice;
        out.feeBps = o.feeBps;
        out.deliveryDeadline = o.deliveryDeadline;
        out.disputeWindow = o.disputeWindow;
        out.status = o.status;
        uint256 delivery = o.delivery;
        if (delivery != 0) {
            out.deliveredAt = uint32(delivery);
            out.rangeCount = uint8(delivery >> 32);
            out.batchId = _batchIdOf(o);
            out.productId = _registry.batch(out.batchId).productId;
            out.sealedHash = _sealedHashes[orderId];
        } else if (o.status != OrderStatus.None) {
            uint256 binding = o.binding;
            out.productId = uint32(binding);
            out.minExpiry = uint64(binding >> 32);
        }
        uint256 word = _disputes[orderId];
        out.disputeDeadline = word & _DEADLINE_MASK;
        out.membershipDispute = word & _MEMBERSHIP != 0;
        out.provenCount = (word >> 64) & type(uint32).max;
    }

    /// @inheritdoc ICardEscrow
    function deliveryOf(uint256 orderId) external view returns (bytes32 batchId, CardRange[] memory ranges) {
        StoredOrder storage o = _orders[orderId];
        uint256 delivery = o.delivery;
        if (delivery == 0) return (bytes32(0), ranges);
        batchId = _batchIdOf(o);
        uint256 n = uint8(delivery >> 32);
        ranges = new CardRange[](n);
        for (uint256 i; i < n; ++i) {
            uint256 encoded = _rangeAt(orderId, delivery, i);
            ranges[i] = CardRange(uint32(encoded), uint32(encoded >> 32));
        }
    }

    /// @inheritdoc ICardEscrow
    function orderCount() external view returns (uint256) {
        return _config.orderCount;
    }

    /// @inheritdoc ICardEscrow
    function credits(address account, address token) external view returns (uint256 amount) {
        uint256 stored = _credits[account][token];
        if (stored > 1) amount = stored - 1;
        if (account == _feeRecipient) amount += _tokens[token].feesAccrued;
    }

    /// @inheritdoc ICardEscrow
    function feesAccrued(address token) external view returns (uint256) {
        return _tokens[token].feesAccrued;
    }

    /// @inheritdoc ICardEscrow
    function deliveredWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256) {
        return _delivered[batchId][wordIndex];
    }

    /// @inheritdoc ICardEscrow
    function provenWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256) {
        return _proven[batchId][wordIndex];
    }

    /// @inheritdoc ICardEscrow
    function revokedCount(uint256 orderId) external view returns (uint256) {
        StoredOrder storage o = _orders[orderId];
        if (o.delivery == 0) return 0;
        bool membership = o.status == OrderStatus.Disputed && _disputes[orderId] & _MEMBERSHIP != 0;
        return _countRefundable(orderId, o, membership);
    }

    // =================================================================== internals

    /// @dev The order, which must be in status `required`.
    function _orderIn(uint256 orderId, OrderStatus required) private view returns (StoredOrder storage o) {
        o = _orders[orderId];
        OrderStatus status = o.status;
        if (status != required) {
            if (status == OrderStatus.None) revert OrderNotFound(orderId);
            revert InvalidOrderStatus(orderId, status, required);
        }
    }

    /// @dev When the dispute window of a delivered order ends: disputes before, release from then on.
    function _windowEnd(StoredOrder storage o) private view returns (uint256) {
        return uint256(uint32(o.delivery)) + o.disputeWindow;
    }

    function _batchIdOf(StoredOrder storage o) private view returns (bytes32) {
        return bytes32((uint256(uint160(o.supplier)) << 96) | o.binding);
    }

    /// @dev Range `i` (start | length << 32) of a delivery whose slot-3 word is `delivery`.
    function _rangeAt(uint256 orderId, uint256 delivery, uint256 i) private view returns (uint256) {
        if (i < _INLINE_RANGES) return uint64(delivery >> (40 + 64 * i));
        uint256 j = i - _INLINE_RANGES;
        return uint64(_extraRanges[orderId][j >> 2] >> (64 * (j & 3)));
    }

    /// @dev How many delivered cards of the order are refundable now: revoked (on their own or with their batch)
    /// and not redeemed, or, in a membership dispute, not proven in the batch. One registry read per 256-card word
    /// (repeated reads of the same word are served from a one-word cache), plus the redemption word only when
    /// some card of the word is revoked, then a popcount of the masked word. A card redeemed before its batch was
    /// revoked is not refundable: it was used. (A card revoked on its own can never be redeemed, the registry
    /// refuses that.)
    function _countRefundable(uint256 orderId, StoredOrder storage o, bool membership)
        private
        view
        returns (uint256 count)
    {
        bytes32 batchId = _batchIdOf(o);
        uint256 delivery = o.delivery;
        mapping(uint256 => uint256) storage proven = _proven[batchId];
        uint256 n = uint8(delivery >> 32);
        uint256 cachedIndex = type(uint256).max;
        uint256 cachedWord;
        for (uint256 i; i < n; ++i) {
            uint256 encoded = _rangeAt(orderId, delivery, i);
            uint256 start = uint32(encoded);
            uint256 end = start + uint32(encoded >> 32);
            while (start < end) {
                uint256 w = start >> 8;
                uint256 wordEnd = (w + 1) << 8;
                if (wordEnd > end) wordEnd = end;
                if (w != cachedIndex) {
                    cachedWord = _registry.revokedWord(batchId, w);
                    if (cachedWord != 0) cachedWord &= ~_registry.redeemedWord(batchId, w);
                    if (membership) cachedWord |= ~proven[w];
                    cachedIndex = w;
                }
                if (cachedWord != 0) count += _popcount(cachedWord & _mask(start & 0xff, wordEnd - (w << 8)));
                start = wordEnd;
            }
        }
    }

    /// @dev Add `amount` to a credit slot, which holds 1 + the credit once used (0 = never used).
    function _credit(address account, address token, uint256 amount) private {
        if (amount == 0) return;
        uint256 stored = _credits[account][token];
        _credits[account][token] = (stored == 0 ? 1 : stored) + amount;
    }

    function _accrueFee(address token, uint256 fee) private {
        if (fee != 0) _tokens[token].feesAccrued += uint240(fee);
    }

    /// @dev Bits [from, to) of a word, 0 <= from < to <= 256.
    function _mask(uint256 from, uint256 to) private pure returns (uint256) {
        unchecked {
            uint256 width = to - from;
            if (width == 256) return type(uint256).max;
            return ((uint256(1) << width) - 1) << from;
        }
    }

    /// @dev Index of the lowest set bit of a non-zero word.
    function _lowestBit(uint256 x) private pure returns (uint256 index) {
        unchecked {
            x &= 0 - x;
            if (x >> 128 != 0) { x >>= 128; index += 128; }
            if (x >> 64 != 0) { x >>= 64; index += 64; }
            if (x >> 32 != 0) { x >>= 32; index += 32; }
            if (x >> 16 != 0) { x >>= 16; index += 16; }
            if (x >> 8 != 0) { x >>= 8; index += 8; }
            if (x >> 4 != 0) { x >>= 4; index += 4; }
            if (x >> 2 != 0) { x >>= 2; index += 2; }
            if (x >> 1 != 0) index += 1;
        }
    }

    /// @dev Number of set bits (SWAR popcount; the last step sums 16-bit lanes so that 256 fits).
    function _popcount(uint256 x) private pure returns (uint256) {
        unchecked {
            x = x - ((x >> 1) & 0x5555555555555555555555555555555555555555555555555555555555555555);
            x = (x & 0x3333333333333333333333333333333333333333333333333333333333333333)
                + ((x >> 2) & 0x3333333333333333333333333333333333333333333333333333333333333333);
            x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            x = (x + (x >> 8)) & 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff;
            return (x * 0x0001000100010001000100010001000100010001000100010001000100010001) >> 240;
        }
    }
}
