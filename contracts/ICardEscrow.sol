// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Life cycle of an escrow order.
/// @dev Funded -> Delivered -> (Confirmed | Released | Disputed); Funded -> Cancelled;
/// Disputed -> (Resolved by an arbiter before the dispute deadline | Released with the default outcome once the
/// deadline has passed | Delivered again, or Released, when the buyer withdraws the dispute).
enum OrderStatus {
    /// @dev No such order.
    None,
    /// @dev Opened and fully funded by the buyer; waiting for the supplier to deliver.
    Funded,
    /// @dev The supplier assigned the cards; the buyer's dispute window is running.
    Delivered,
    /// @dev The buyer disputed the delivery; an arbiter may resolve it until the dispute deadline, after which
    /// anyone settles it with the default outcome (see ICardEscrow.dispute).
    Disputed,
    /// @dev The buyer confirmed the delivery; settled.
    Confirmed,
    /// @dev Settled with the default outcome, by anyone: after the dispute window of an undisputed order, after
    /// the deadline of a dispute that no arbiter resolved, or when the buyer withdrew a dispute too late to
    /// reopen the window.
    Released,
    /// @dev An arbiter split the escrow; settled.
    Resolved,
    /// @dev Nothing was delivered before the deadline and the buyer took the refund.
    Cancelled
}

/// @notice An escrow order, as returned by `order()` (storage packs it into four slots, a fifth for the sealed
/// delivery's hash and a sixth for the dispute of a disputed order, see CardEscrow).
/// @dev The escrowed amount is always exactly quantity * unitPrice: fee-on-transfer shortfalls are rejected when
/// the order is funded. The buyer's seal key is not stored (it is in the OrderOpened event).
struct Order {
    /// @dev The account that opened and funded the order; receives refunds.
    address buyer;
    /// @dev The supplier (an ISSUER_ROLE holder of the registry) that must deliver.
    address supplier;
    /// @dev The product ordered (a registry product id: SKU, face value, currency). After delivery it is the
    /// delivered batch's product, which delivery checked to be the same.
    uint32 productId;
    /// @dev The earliest expiry the cards may have (Unix time; 0 = any). Checked against the batch at delivery and
    /// not stored after it: 0 once delivered (the OrderOpened event keeps it).
    uint64 minExpiry;
    /// @dev The ERC-20 the order is paid in.
    address token;
    /// @dev Number of cards ordered; a delivery assigns exactly this many.
    uint256 quantity;
    /// @dev Price of one card in the token's smallest unit.
    uint256 unitPrice;
    /// @dev Escrowed amount, quantity * unitPrice.
    uint256 amount;
    /// @dev Platform fee in basis points, copied from the rules at opening; never changes afterwards.
    uint256 feeBps;
    /// @dev Unix time after which the supplier can no longer deliver and the buyer may cancel.
    uint256 deliveryDeadline;
    /// @dev Seconds after delivery during which the buyer may dispute; anyone may release after it.
    uint256 disputeWindow;
    /// @dev Current state.
    OrderStatus status;
    /// @dev Unix time of delivery, 0 before.
    uint256 deliveredAt;
    /// @dev The supplier's batch the cards come from, 0 before delivery.
    bytes32 batchId;
    /// @dev Number of card ranges in the delivery (see deliveryOf).
    uint256 rangeCount;
    /// @dev keccak256 of the sealed delivery (the cards' codes, openings, leaves and multiproof, encrypted to the
    /// buyer's seal key), 0 before delivery.
    bytes32 sealedHash;
    /// @dev Whether the dispute (if any) is a membership dispute: the buyer disputes that the delivered cards are
    /// in the batch at all, and the supplier must prove them on chain (proveDelivery) before the deadline.
    bool membershipDispute;
    /// @dev Cards of a membership dispute proven so far.
    uint256 provenCount;
    /// @dev Unix time at which the order's dispute ends unresolved (the arbiter can no longer act and anyone may
    /// settle it with the default outcome); set when the buyer disputes, 0 before any dispute and after a
    /// withdrawal that returned the order to Delivered.
    uint256 disputeDeadline;
}

/// @notice A run of consecutive card indices `start .. start + length - 1` of a batch.
struct CardRange {
    uint32 start;
    uint32 length;
}

/// @notice What a buyer orders: the terms of `openOrder`.
struct OrderTerms {
    /// @dev Must hold ISSUER_ROLE in the registry.
    address supplier;
    /// @dev A registry product id (SKU, face value, currency): only batches of this product can deliver.
    uint32 productId;
    /// @dev The earliest expiry the cards may have (Unix time); 0 accepts any. Cards that never expire always pass.
    uint64 minExpiry;
    /// @dev Number of cards, 1 .. maxQuantity.
    uint256 quantity;
    /// @dev An allowlisted ERC-20.
    address token;
    /// @dev Price per card, > 0, < 2**96.
    uint256 unitPrice;
    /// @dev Unix time, after now and at most maxDeliveryPeriod ahead.
    uint256 deliveryDeadline;
    /// @dev Seconds, within [minDisputeWindow, maxDisputeWindow].
    uint256 disputeWindow;
}

/// @notice The public part of a delivered card's leaf, which the supplier reveals to prove the card in its batch
/// (the rest of the leaf, version, batch id, product and expiry, the escrow takes from the order's batch).
struct ProvenCard {
    uint32 index;
    uint80 serial;
    uint8 codeForm;
    bytes32 codeCommitment;
}

/// @notice The escrow's rules, as in force now (orders keep the fee they were opened with).
struct EscrowRules {
    /// @dev Platform fee in basis points charged on the supplier's proceeds.
    uint16 feeBps;
    /// @dev Hard cap of feeBps (1%).
    uint16 maxFeeBps;
    /// @dev Owner of the platform fees. Fees accrue per token (see feesAccrued) and count as this account's
    /// credit; changing the recipient first credits everything accrued so far to the previous one.
    address feeRecipient;
    /// @dev Longest allowed time between opening and the delivery deadline, in seconds (at least windowFloor).
    uint32 maxDeliveryPeriod;
    /// @dev Shortest dispute window a buyer may choose, in seconds (at least windowFloor).
    uint32 minDisputeWindow;
    /// @dev Longest dispute window a buyer may choose, in seconds.
    uint32 maxDisputeWindow;
    /// @dev Largest quantity of one order (bounds the gas of delivery and settlement).
    uint32 maxQuantity;
    /// @dev Largest number of card ranges in one delivery.
    uint16 maxRanges;
    /// @dev Time an arbiter has to resolve a dispute, from the moment the buyer raises it, in seconds
    /// (windowFloor .. maxDisputeResolutionPeriod). A dispute keeps the period in force when it was raised.
    uint32 disputeResolutionPeriod;
    /// @dev Floor of every window rule (delivery period, dispute window, dispute resolution period): 1 hour.
    uint32 windowFloor;
    /// @dev Ceiling of disputeResolutionPeriod (90 days): every dispute ends within it.
    uint32 maxDisputeResolutionPeriod;
}

/// @title Custom errors of the CardEscrow, in the style of OpenZeppelin's IERC6093.
interface ICardEscrowErrors {
    /// @notice The zero address is not allowed here.
    error ZeroAddress();
    /// @notice `token` is not on the escrow's allowlist of payment tokens.
    error TokenNotAllowed(address token);
    /// @notice `feeBps` exceeds the hard cap `maxFeeBps`.
    error FeeTooHigh(uint256 feeBps, uint256 maxFeeBps);
    /// @notice The window rules are inconsistent (min dispute window above max).
    error InvalidWindowRules(uint256 maxDeliveryPeriod, uint256 minDisputeWindow, uint256 maxDisputeWindow);
    /// @notice The window rule `rule` (its name) would be `window` seconds, outside [`floor`, `ceiling`].
    error WindowOutOfBounds(string rule, uint256 window, uint256 floor, uint256 ceiling);
    /// @notice `supplier` does not hold ISSUER_ROLE in the card registry.
    error SupplierNotIssuer(address supplier);
    /// @notice `quantity` is zero or above `maxQuantity`.
    error InvalidQuantity(uint256 quantity, uint256 maxQuantity);
    /// @notice `unitPrice` is zero or does not fit in 96 bits.
    error InvalidUnitPrice(uint256 unitPrice);
    /// @notice `deadline` is not in (`now`, `now` + maxDeliveryPeriod] = (`now`, `latest`].
    error InvalidDeliveryDeadline(uint256 deadline, uint256 now, uint256 latest);
    /// @notice `disputeWindow` is outside [`minWindow`, `maxWindow`].
    error InvalidDisputeWindow(uint256 disputeWindow, uint256 minWindow, uint256 maxWindow);
    /// @notice The escrow received `received` of `token` instead of `expected` (fee-on-transfer token).
    error UnderFunded(address token, uint256 expected, uint256 received);
    /// @notice There is no order `orderId`.
    error OrderNotFound(uint256 orderId);
    /// @notice Order `orderId` is in status `status`, but this needs status `required`.
    error InvalidOrderStatus(uint256 orderId, OrderStatus status, OrderStatus required);
    /// @notice `caller` is not the buyer of order `orderId`.
    error NotOrderBuyer(uint256 orderId, address caller);
    /// @notice `caller` is not the supplier of order `orderId`.
    error NotOrderSupplier(uint256 orderId, address caller);
    /// @notice The delivery deadline `deadline` of order `orderId` has passed.
    error DeliveryDeadlinePassed(uint256 orderId, uint256 deadline);
    /// @notice The delivery deadline `deadline` of order `orderId` has not passed yet.
    error DeliveryDeadlineNotPassed(uint256 orderId, uint256 deadline);
    /// @notice The dispute window of order `orderId` closed at `windowEnd`.
    error DisputeWindowClosed(uint256 orderId, uint256 windowEnd);
    /// @notice The dispute window of order `orderId` is open until `windowEnd`.
    error DisputeWindowOpen(uint256 orderId, uint256 windowEnd);
    /// @notice `batchId` is not an anchored batch of `supplier` (suppliers deliver from their own batches only).
    error BatchNotOwnedBySupplier(bytes32 batchId, address supplier);
    /// @notice A delivery needs between 1 and `maxRanges` ranges; `count` were given.
    error InvalidRangeCount(uint256 count, uint256 maxRanges);
    /// @notice Range `start`, `length` is empty or reaches beyond the batch's `cardCount` cards.
    error InvalidCardRange(bytes32 batchId, uint256 start, uint256 length, uint256 cardCount);
    /// @notice The ranges hold `delivered` cards, but order `orderId` is for `quantity`.
    error QuantityMismatch(uint256 orderId, uint256 quantity, uint256 delivered);
    /// @notice Card `index` of `batchId` is revoked.
    error CardRevoked(bytes32 batchId, uint256 index);
    /// @notice Card `index` of `batchId` was redeemed already.
    error CardAlreadyRedeemed(bytes32 batchId, uint256 index);
    /// @notice Card `index` of `batchId` was delivered already (in this or another order): a card is sold once.
    error CardAlreadyDelivered(bytes32 batchId, uint256 index);
    /// @notice There is no product `productId` in the registry.
    error UnknownProduct(uint256 productId);
    /// @notice Batch `batchId` holds product `batchProductId`, but order `orderId` is for `orderProductId`.
    error ProductMismatch(uint256 orderId, bytes32 batchId, uint256 orderProductId, uint256 batchProductId);
    /// @notice The cards of `batchId` expire at `expiry`, before the order's minimum expiry `minExpiry`.
    error ExpiryTooSoon(uint256 orderId, bytes32 batchId, uint256 expiry, uint256 minExpiry);
    /// @notice A seal key is a 33-byte compressed secp256k1 public key; `length` bytes were given.
    error InvalidSealKey(uint256 length);
    /// @notice A delivery must carry the hash of its sealed codes.
    error MissingSealedHash(uint256 orderId);
    /// @notice Order `orderId` is not in a membership dispute.
    error NotMembershipDispute(uint256 orderId);
    /// @notice Card `index` of the order's batch is not one of the cards delivered in order `orderId`.
    error CardNotInOrder(uint256 orderId, uint256 index);
    /// @notice The multiproof does not prove the given cards in the batch's anchored root.
    error InvalidDeliveryProof(uint256 orderId);
    /// @notice The dispute of order `orderId` ended unresolved at `deadline`: only its default outcome applies now.
    error DisputeDeadlinePassed(uint256 orderId, uint256 deadline);
    /// @notice The dispute of order `orderId` waits for an arbiter until `deadline`.
    error DisputeDeadlineNotPassed(uint256 orderId, uint256 deadline);
    /// @notice The arbiter's split `buyerAmount` + `supplierAmount` does not equal the escrowed `total`.
    error InvalidSplit(uint256 orderId, uint256 buyerAmount, uint256 supplierAmount, uint256 total);
    /// @notice `account` has no credit in `token`.
    error NothingToWithdraw(address account, address token);
}

/// @title Events of the CardEscrow: one per state transition and per rule change.
interface ICardEscrowEvents {
    /// @notice `token` was added to (`allowed`) or removed from the payment allowlist.
    event TokenAllowed(address indexed token, bool allowed);
    /// @notice The platform fee for orders opened from now on is `feeBps` basis points.
    event FeeSet(uint16 feeBps);
    /// @notice Fees are now owed to `feeRecipient`; all fees accrued until now were credited to `previous`.
    event FeeRecipientSet(address indexed previous, address indexed feeRecipient);
    /// @notice New window rules: the delivery period and dispute windows for orders opened from now on, the
    /// resolution period for disputes raised from now on.
    event WindowRulesSet(
        uint32 maxDeliveryPeriod, uint32 minDisputeWindow, uint32 maxDisputeWindow, uint32 disputeResolutionPeriod
    );
    /// @notice `buyer` opened order `orderId` and funded it with `amount` of `token` in the same transaction
    /// (there is no separate OrderFunded event: an order exists only funded).
    /// The supplier seals the delivered codes to `sealKey` (a compressed secp256k1 public key of the buyer's).
    event OrderOpened(
        uint256 indexed orderId,
        address indexed buyer,
        address indexed supplier,
        address token,
        uint32 productId,
        uint64 minExpiry,
        uint256 quantity,
        uint256 unitPrice,
        uint256 amount,
        uint256 feeBps,
        uint256 deliveryDeadline,
        uint256 disputeWindow,
        bytes sealKey
    );
    /// @notice The supplier delivered order `orderId`: cards `ranges` of batch `batchId`, whose codes are in the
    /// sealed delivery with keccak256 `sealedHash`.
    event OrderDelivered(uint256 indexed orderId, bytes32 indexed batchId, CardRange[] ranges, bytes32 sealedHash);
    /// @notice The buyer confirmed order `orderId`. `revokedCards` (revoked and not redeemed) were refunded to the
    /// buyer (`buyerRefund`); the supplier was credited `supplierAmount` and the fee recipient `fee`.
    event OrderConfirmed(
        uint256 indexed orderId, uint256 revokedCards, uint256 supplierAmount, uint256 fee, uint256 buyerRefund
    );
    /// @notice `caller` settled order `orderId` with the default outcome (after its dispute window, after the
    /// deadline of an unresolved dispute, or by withdrawing a dispute late); amounts as in OrderConfirmed.
    event OrderReleased(
        uint256 indexed orderId,
        address indexed caller,
        uint256 revokedCards,
        uint256 supplierAmount,
        uint256 fee,
        uint256 buyerRefund
    );
    /// @notice The buyer disputed order `orderId`; an arbiter may resolve it until `deadline`, after which anyone
    /// settles it with the default outcome. With `membership` the buyer disputes that the cards are in the batch
    /// at all: the supplier proves them until `deadline`, and cards left unproven then are refunded.
    event OrderDisputed(uint256 indexed orderId, uint256 deadline, bool membership);
    /// @notice `cards` more cards of order `orderId` were proven in their batch; `provenTotal` are proven now.
    event DeliveryProven(uint256 indexed orderId, uint256 cards, uint256 provenTotal);
    /// @notice The buyer withdrew its dispute of order `orderId`. With `settled` false the order is Delivered
    /// again, with its dispute window as it was; with `settled` true it was settled at once (OrderReleased follows).
    event DisputeWithdrawn(uint256 indexed orderId, bool settled);
    /// @notice The dispute of order `orderId` ended at `deadline` without a ruling; the order was settled with the
    /// default outcome (OrderReleased follows).
    event DisputeExpired(uint256 indexed orderId, uint256 deadline);
    /// @notice `arbiter` resolved order `orderId`: `buyerAmount` to the buyer, `supplierAmount` - `fee` to the
    /// supplier and `fee` to the fee recipient.
    event OrderResolved(
        uint256 indexed orderId, address indexed arbiter, uint256 buyerAmount, uint256 supplierAmount, uint256 fee
    );
    /// @notice The buyer cancelled undelivered order `orderId` after its deadline; `refund` was credited back.
    event OrderCancelled(uint256 indexed orderId, uint256 refund);
    /// @notice `account` withdrew its whole credit `amount` of `token`, paid to `to`.
    event Withdrawn(address indexed account, address indexed token, address indexed to, uint256 amount);
}

/// @title CardEscrow: stablecoin escrow between card buyers and suppliers, settled against the CardRegistry.
/// @notice Buyers fund orders up front; suppliers deliver cards from their own anchored batches; the buyer
/// confirms (or anyone releases after the dispute window) and the supplier is paid for every delivered card
/// that is not refundable at that moment, the buyer refunded for the refundable ones. A card is refundable when
/// its issuer revoked it (on its own or with its batch) and it was not redeemed before: a card used before its
/// batch was revoked is paid for. Every payout is credited and pulled with withdraw / withdrawTo, so no
/// recipient can block anybody else's funds.
///
/// Disputes end. Within the dispute window the buyer may dispute a delivery. The dispute has a deadline: the
/// disputeResolutionPeriod in force when it was raised (an admin rule, 1 hour to 90 days). Until the deadline an
/// arbiter may split the escrow in any way (resolve). From the deadline on no arbiter can act and anyone may
/// settle the order with the DEFAULT OUTCOME (release), which pays exactly what an undisputed release pays: the
/// supplier is credited for the delivered cards that are not refundable, minus the platform fee, and the buyer
/// is refunded in full for the refundable ones. Without an arbiter, the buyer's remedy for a bad card is
/// therefore the issuer's revocation, which the escrow refunds by rule at settlement. The buyer may withdraw its
/// dispute (withdrawDispute).
///
/// Membership disputes are settled by the contract alone. A buyer who finds that delivered cards are not in the
/// batch (a junk root, a leaf of another product) disputes with disputeMembership. The supplier then proves the
/// cards on chain before the dispute's deadline: their public leaf fields and an OpenZeppelin multiproof against
/// the batch's anchored root (proveDelivery), the leaves rebuilt with the batch's product and expiry. Once every
/// card is proven the order settles at once with the default outcome; at the deadline the DEFAULT OUTCOME of a
/// membership dispute refunds the buyer for every card left unproven, as well as for the refundable ones.
///
/// Orders name what they buy: a registry product (SKU, face value, currency) and optionally a minimum expiry.
/// Delivery from a batch of another product, or of cards expiring sooner, is refused. The delivered codes travel
/// sealed to a key of the buyer's (named when the order opens); the sealed delivery's hash is recorded with the
/// delivery, so that the buyer, a public service and an arbiter can all tell the delivery that was made.
interface ICardEscrow is ICardEscrowErrors, ICardEscrowEvents {
    /// @notice Role allowed to resolve disputes before their deadline. Granted at deploy (constructor); an
    /// arbiter may be a contract (a multisig, a DAO, an on-chain court).
    function ARBITER_ROLE() external view returns (bytes32);

    /// @notice Floor of every window rule, in seconds (1 hour): the admin cannot set a delivery period, dispute
    /// window or dispute resolution period below it.
    function MIN_WINDOW() external view returns (uint32);

    /// @notice Ceiling of the dispute resolution period, in seconds (90 days).
    function MAX_DISPUTE_RESOLUTION_PERIOD() external view returns (uint32);

    /// @notice Hard cap of the platform fee, in basis points (100 = 1%).
    function MAX_FEE_BPS() external view returns (uint16);

    /// @notice The card registry whose ISSUER_ROLE holders are the suppliers.
    function registry() external view returns (address);

    // ------------------------------------------------------------------ admin

    /// @notice Add tokens to (`allowed`) or remove them from the payment allowlist. Admin only.
    /// Removing a token only stops new orders; open orders still settle and credits stay withdrawable.
    function setTokensAllowed(address[] calldata tokens, bool allowed) external;

    /// @notice Set the platform fee of orders opened from now on. Admin only; at most MAX_FEE_BPS.
    function setFee(uint16 feeBps) external;

    /// @notice Set the owner of fees accrued from now on; fees accrued so far are credited to the previous
    /// recipient first. Admin only.
    function setFeeRecipient(address feeRecipient) external;

    /// @notice Set the window rules. Admin only. The delivery period and dispute windows apply to orders opened
    /// from now on, the resolution period to disputes raised from now on (a raised dispute keeps its deadline).
    /// Every window is at least MIN_WINDOW (WindowOutOfBounds otherwise), the resolution period at most
    /// MAX_DISPUTE_RESOLUTION_PERIOD, and minDisputeWindow <= maxDisputeWindow (InvalidWindowRules).
    function setWindowRules(
        uint32 maxDeliveryPeriod,
        uint32 minDisputeWindow,
        uint32 maxDisputeWindow,
        uint32 disputeResolutionPeriod
    ) external;

    // ------------------------------------------------------------------ orders

    /// @notice Open and fund an order: pulls quantity * unitPrice of `token` from the caller (needs allowance).
    /// @param terms What is ordered, from whom, at what price and with which windows (see OrderTerms).
    /// @param sealKey The buyer's seal key, a 33-byte compressed secp256k1 public key (by default the buyer's
    /// account key): the supplier seals the delivered codes to it. Only emitted.
    /// @return orderId The new order's id (sequential from 1).
    function openOrder(OrderTerms calldata terms, bytes calldata sealKey) external returns (uint256 orderId);

    /// @notice As openOrder, first approving the escrow with an EIP-2612 permit for quantity * unitPrice.
    /// A failing permit (for example one already submitted by a front-runner) is ignored: the order then
    /// opens if the allowance suffices.
    function openOrderWithPermit(
        OrderTerms calldata terms,
        bytes calldata sealKey,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint256 orderId);

    /// @notice Deliver order `orderId`: assign exactly `quantity` cards of the supplier's own batch `batchId`,
    /// whose sealed codes hash to `sealedHash`. Supplier only, until the delivery deadline. The batch must hold
    /// the order's product, and expire no sooner than its minimum expiry (cards that never expire always pass).
    /// Every card must be neither revoked nor redeemed in the registry and never delivered before (in any order).
    function deliver(uint256 orderId, bytes32 batchId, CardRange[] calldata ranges, bytes32 sealedHash) external;

    /// @notice The buyer accepts the delivery (any time after it, unless disputed) and the order settles.
    function confirm(uint256 orderId) external;

    /// @notice Anyone settles an order with the default outcome: a delivered, undisputed order once its dispute
    /// window has passed (DisputeWindowOpen before), or a disputed order once its dispute deadline has passed
    /// without a ruling (DisputeDeadlineNotPassed before; DisputeExpired is emitted). Either way the supplier is
    /// credited for the delivered cards that are not refundable (revoked and not redeemed), minus the fee, and the
    /// buyer refunded for the refundable ones; the order becomes Released.
    function release(uint256 orderId) external;

    /// @notice The buyer disputes a delivery within the dispute window. An arbiter may resolve the dispute until
    /// its deadline, now + disputeResolutionPeriod (in OrderDisputed and order().disputeDeadline); from then on
    /// anyone settles it with the default outcome (release).
    function dispute(uint256 orderId) external;

    /// @notice The buyer disputes, within the dispute window, that the delivered cards are in the batch at all.
    /// The supplier must prove them (proveDelivery) before the deadline, now + disputeResolutionPeriod; an arbiter
    /// may resolve the dispute until then as any other. From the deadline on anyone settles the order with the
    /// default outcome of a membership dispute: the buyer is refunded for every card left unproven.
    function disputeMembership(uint256 orderId) external;

    /// @notice Prove delivered cards of an order in a membership dispute, before its deadline. Anyone may call
    /// (the supplier does). `cards` are the cards' public leaf fields in the order of the multiproof's leaves; the
    /// escrow rebuilds each leaf with version 2, the order's batch id and the batch's product and expiry, and
    /// checks them with OpenZeppelin's MerkleProof.multiProofVerifyCalldata against the batch's root. Cards may be
    /// proven in several calls; a card proven twice counts once. When every card is proven, the order settles at
    /// once with the default outcome.
    function proveDelivery(
        uint256 orderId,
        ProvenCard[] calldata cards,
        bytes32[] calldata proof,
        bool[] calldata proofFlags
    ) external;

    /// @notice The buyer withdraws its dispute. While the dispute window is open and the dispute's deadline has
    /// not passed, the order is Delivered again with its window as it was (the buyer may confirm, or dispute
    /// again within the window; anyone may release after it). Once the window has closed or the deadline has
    /// passed, withdrawing settles the order at once with the default outcome (Released).
    function withdrawDispute(uint256 orderId) external;

    /// @notice An arbiter settles a disputed order with any split of the escrow, before the dispute's deadline
    /// (DisputeDeadlinePassed after it). The platform fee (the order's feeBps) is charged on `supplierAmount`
    /// only; the buyer's share is credited in full.
    function resolve(uint256 orderId, uint256 buyerAmount, uint256 supplierAmount) external;

    /// @notice The buyer takes a full refund of an undelivered order after its delivery deadline.
    function cancel(uint256 orderId) external;

    /// @notice Pay the caller's whole credit in `token` to the caller.
    function withdraw(address token) external;

    /// @notice Pay the caller's whole credit in `token` to `to` (for example when the caller is blocklisted).
    function withdrawTo(address token, address to) external;

    // ------------------------------------------------------------------ views

    /// @notice Whether `token` may pay new orders.
    function isTokenAllowed(address token) external view returns (bool);

    /// @notice Every token ever allowlisted (allowed or not any more).
    function tokenList() external view returns (address[] memory);

    /// @notice The rules in force.
    function rules() external view returns (EscrowRules memory);

    /// @notice The stored order (status None when it does not exist).
    function order(uint256 orderId) external view returns (Order memory);

    /// @notice The delivery of an order: its batch and card ranges (empty before delivery).
    function deliveryOf(uint256 orderId) external view returns (bytes32 batchId, CardRange[] memory ranges);

    /// @notice Number of orders opened so far (the last order id).
    function orderCount() external view returns (uint256);

    /// @notice Unwithdrawn credit of `account` in `token` (for the fee recipient, including accrued fees).
    function credits(address account, address token) external view returns (uint256);

    /// @notice Platform fees in `token` accrued for the current fee recipient and not withdrawn yet.
    function feesAccrued(address token) external view returns (uint256);

    /// @notice Word `wordIndex` of the escrow's bitmap of delivered cards of `batchId` (a card is sold once).
    function deliveredWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256);

    /// @notice Word `wordIndex` of the bitmap of cards of `batchId` proven in a membership dispute.
    function provenWord(bytes32 batchId, uint256 wordIndex) external view returns (uint256);

    /// @notice How many of the order's delivered cards are refundable right now: revoked in the registry (on
    /// their own or with their batch) and not redeemed, or, in a membership dispute, not proven.
    function revokedCount(uint256 orderId) external view returns (uint256);
}
