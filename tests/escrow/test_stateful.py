"""Stateful property test of the escrow against a Python model (hypothesis RuleBasedStateMachine).

Random sequences of open / deliver / confirm / release / dispute / membership dispute / prove delivery / withdraw
dispute / resolve / cancel / withdraw / revoke (cards, and now and then a whole batch) / redeem / time jumps, by
buyers, suppliers, the arbiter and strangers (so most rules also exercise their reverts), in two tokens (a permit
stablecoin and the USDT-like no-return token). Disputes end: an unresolved dispute is settled by `release` with the
default outcome once its deadline (RESOLVE after it was raised) has passed, and the arbiter can no longer rule then;
a withdrawn dispute returns the order to delivered, or settles it when its window or deadline has passed.
Settlements refund only the cards that are revoked and not redeemed (a card redeemed before its batch was revoked is
paid for), and, when a membership dispute ends at its deadline, every card the supplier did not prove in its batch.

Batches are real (tests/escrow/cards.py): every supplier batch is a tree of CardLeaf values of the ordered product,
so the supplier proves all or some of a disputed delivery's cards with valid multiproofs (proving every card
settles the order at once); forged leaves and cards of other orders are tried too and must be refused. The model
predicts every outcome: a predicted success must succeed and a predicted failure must raise exactly the predicted
typed error.

Invariants checked after every step:
* for each token, the escrow's token balance == escrowed amount of open orders + unwithdrawn credits
  (including accrued fees), per the model;
* every account touched by the step has exactly the credit and wallet balance the model says, so no
  account ever gains more than it is owed (withdrawals are also checked against the model's owed total).
At the end of each example every account and token is checked.

Besides the random rules, eight copies of a "lifecycle" rule move some live order to its natural next state
(deliver, confirm / dispute / wait-and-release, resolve, cancel after the deadline), revoke one of its cards,
move the clock or let an owed account withdraw, so most examples reach settlement; the test asserts at the
end that every transition succeeded at least once and that settlements with revoked cards happened.

Time: deadlines and dispute windows are 5,000 s or 25,000 s, the dispute resolution period 15,000 s, and time
moves in jumps of 10,000 s, so a boundary is never within reach of the few seconds the chain's clock drifts by
between transactions.

Runs are derandomized (fixed seed, no example database) and not shrunk unless
CARDPROOF_HYPOTHESIS_SHRINK=1 (every step is a transaction: shrinking takes minutes).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from chain import errors
from chain.escrow import Escrow, OrderStatus, Token
from tests.chainkit import ChainEnv
from tests.escrow.cards import RealBatch, forged
from tests.escrow.world import FEE_BPS, MINT, World

TOKENS = ("stable", "noret")
BUYERS = ("buyer", "buyer2")
SUPPLIERS = ("supplier", "issuer2")
OTHERS = ("arbiter", "stranger")
ACCOUNTS = BUYERS + SUPPLIERS + OTHERS + ("feeto",)
ACTORS = BUYERS + SUPPLIERS + OTHERS
FEE_RECIPIENT = "feeto"
JUMP = 10_000
SPANS = (5_000, 25_000)  # deadlines after opening, dispute windows after delivery
RESOLVE = 15_000  # the dispute resolution period: a dispute's deadline comes RESOLVE after it is raised
PRICES = (1, 3, 1_000_003)
BATCH_SIZE = 300  # two bitmap words

#: Per backend: (examples, steps per example), to stay under ~60 s each. eth-tester runs fewer examples: a
#: py-evm transaction takes ~1.5x as long as one on anvil. CARDPROOF_HYPOTHESIS_EXAMPLES overrides both.
BUDGET = {"eth-tester": (10, 50), "anvil": (12, 50)}
if os.environ.get("CARDPROOF_HYPOTHESIS_EXAMPLES"):
    BUDGET = dict.fromkeys(BUDGET, (int(os.environ["CARDPROOF_HYPOTHESIS_EXAMPLES"]), 50))
#: Shrinking replays many transaction sequences (minutes); set CARDPROOF_HYPOTHESIS_SHRINK=1 to shrink a failure.
#: (rule, "ok" or the expected error's name) -> count, over the current test; checked for coverage.
OUTCOMES: Counter[tuple[str, str]] = Counter()
MUST_SUCCEED = ("open_order", "deliver", "confirm", "release", "dispute", "resolve", "cancel", "withdraw",
                "withdraw_dispute", "dispute_membership", "prove")
SHRINK = os.environ.get("CARDPROOF_HYPOTHESIS_SHRINK") == "1"
#: How the dispute episodes end, in turn over a test run (EPISODES counts them).
ENDINGS = ("expire", "membership partly proven, expire", "resolve", "membership proven", "late withdraw",
           "membership late withdraw", "withdraw", "late resolve")
SEALED = b"\x5e" * 32
EPISODES = {"count": 0}


@dataclass
class ModelOrder:
    buyer: str
    supplier: str
    token: str
    quantity: int
    price: int
    fee_bps: int
    span: int
    window: int
    opened_epoch: int
    status: OrderStatus = OrderStatus.FUNDED
    delivered_epoch: int = -1
    disputed_epoch: int = -1
    batch: bytes = b""
    cards: list[int] = field(default_factory=list)
    #: Whether the current dispute is a membership dispute (cleared when it is withdrawn).
    membership: bool = False

    @property
    def amount(self) -> int:
        return self.quantity * self.price


class Expect:
    """The predicted outcome of an action: success, or the typed error it must raise."""

    def __init__(self, error: type[errors.ContractRevert] | tuple[type[Exception], ...] | None = None) -> None:
        self.error = error

    @property
    def ok(self) -> bool:
        return self.error is None


class EscrowMachine(RuleBasedStateMachine):
    env: ChainEnv  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        env = type(self).env
        self.snapshot = env.snapshot()
        env.admin._next_nonce = None
        self.world = World.of(env)
        self.clients = {who: env.client(who) for who in ACCOUNTS}
        self.escrows = {who: Escrow(c, self.world.escrow_address) for who, c in self.clients.items()}
        self.tokens = {t: self.world.tokens[t] for t in TOKENS}
        self.orders: dict[int, ModelOrder] = {}
        self.credits = {(a, t): 0 for a in ACCOUNTS for t in TOKENS}
        self.fees = dict.fromkeys(TOKENS, 0)
        self.owed_total = {(a, t): 0 for a in ACCOUNTS for t in TOKENS}
        self.withdrawn_total = {(a, t): 0 for a in ACCOUNTS for t in TOKENS}
        self.wallet = {(a, t): Token(env.admin, self.tokens[t]).balance_of(env.address(a))
                       for a in ACCOUNTS for t in TOKENS}
        assert all(self.wallet[(b, t)] == MINT for b in BUYERS for t in TOKENS)
        self.escrow_start = {t: Token(env.admin, self.tokens[t]).balance_of(self.world.escrow_address) for t in TOKENS}
        self.batches: dict[str, bytes] = {}  # each supplier's current batch (a new one after a batch revocation)
        self.real: dict[bytes, RealBatch] = {}  # every batch's leaves and tree
        self.proven: dict[bytes, set[int]] = {}  # per batch, the cards proven in membership disputes
        # Per batch: cards delivered, revoked one by one, redeemed; and the batches revoked whole.
        self.delivered: dict[bytes, set[int]] = {}
        self.revoked: dict[bytes, set[int]] = {}
        self.redeemed: dict[bytes, set[int]] = {}
        self.batch_revoked: set[bytes] = set()
        self.epoch = 0
        self.touched: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ helpers

    def addr(self, who: str) -> str:
        return self.world.env.address(who)

    def run(self, expect: Expect, action: Callable[[], Any]) -> Any:
        rule_name = sys._getframe(1).f_code.co_name
        OUTCOMES[(rule_name, "ok" if expect.ok else getattr(expect.error, "__name__", "error"))] += 1
        if expect.ok:
            return action()
        with pytest.raises(expect.error):  # type: ignore[arg-type]
            action()
        return None

    def credit(self, who: str, token: str, amount: int) -> None:
        if amount:
            self.credits[(who, token)] += amount
            self.owed_total[(who, token)] += amount
        self.touched.add((who, token))

    def choose(self, pick: int, status: OrderStatus) -> int:
        """Mostly an order in `status`, else any order; one time in eight an id that does not exist."""
        if pick % 8 == 0 or not self.orders:
            return len(self.orders) + 1 + pick % 3
        candidates = [i for i, o in self.orders.items() if o.status == status]
        if candidates and pick % 4:
            return candidates[(pick // 4) % len(candidates)]
        return pick % len(self.orders) + 1

    def who(self, actor: str, order_id: int, party: str) -> str:
        """`actor`, or the order's `party` ("buyer" / "supplier") when `actor` is "owner"."""
        if actor != "owner":
            return actor
        order = self.orders.get(order_id)
        return getattr(order, party) if order else "stranger"

    def order_status_error(self, order_id: int, required: OrderStatus) -> Expect | None:
        order = self.orders.get(order_id)
        if order is None:
            return Expect(errors.OrderNotFound)
        if order.status != required:
            return Expect(errors.InvalidOrderStatus)
        return None

    def is_revoked(self, batch: bytes, card: int) -> bool:
        return batch in self.batch_revoked or card in self.revoked[batch]

    def window_passed(self, order: ModelOrder) -> bool:
        return (self.epoch - order.delivered_epoch) * JUMP > order.window

    def deadline_passed(self, order: ModelOrder) -> bool:
        return (self.epoch - order.disputed_epoch) * JUMP > RESOLVE

    def refundable(self, order: ModelOrder, card: int) -> bool:
        """Revoked (on its own or with its batch) and not redeemed; or, in a membership dispute, never proven."""
        batch = order.batch
        return ((self.is_revoked(batch, card) and card not in self.redeemed[batch])
                or (order.membership and card not in self.proven[batch]))

    def settle_model(self, order: ModelOrder) -> tuple[int, int, int, int]:
        revoked = sum(1 for c in order.cards if self.refundable(order, c))
        OUTCOMES[("settle", "with revoked cards" if revoked else "all valid")] += 1
        if order.membership:
            unproven = sum(1 for c in order.cards if c not in self.proven[order.batch])
            OUTCOMES[("settle", "membership, unproven cards refunded" if unproven else "membership, all proven")] += 1
        if any(c in self.redeemed[order.batch] for c in order.cards) and order.batch in self.batch_revoked:
            OUTCOMES[("settle", "redeemed cards of a revoked batch")] += 1
        gross = (order.quantity - revoked) * order.price
        fee = gross * order.fee_bps // 10_000
        refund = revoked * order.price
        self.credit(order.supplier, order.token, gross - fee)
        self.fees[order.token] += fee
        self.owed_total[(FEE_RECIPIENT, order.token)] += fee
        self.touched.add((FEE_RECIPIENT, order.token))
        self.credit(order.buyer, order.token, refund)
        return revoked, gross - fee, fee, refund

    # ------------------------------------------------------------------ setup

    def new_batch(self, supplier: str) -> None:
        real = self.world.anchor_real(BATCH_SIZE, seed=len(self.real), who=supplier)
        batch = real.batch_id
        self.batches[supplier] = batch
        self.real[batch] = real
        self.delivered[batch], self.revoked[batch], self.redeemed[batch] = set(), set(), set()
        self.proven[batch] = set()

    @initialize()
    def anchor_batches(self) -> None:
        Escrow(self.world.env.admin, self.world.escrow_address).set_window_rules(90 * 86_400, 3_600, 30 * 86_400,
                                                                                 RESOLVE)
        for supplier in SUPPLIERS:
            self.new_batch(supplier)

    # ------------------------------------------------------------------ rules

    @rule(buyer=st.sampled_from(BUYERS + ("stranger",)), supplier=st.sampled_from(SUPPLIERS + ("buyer2",)),
          token=st.sampled_from(TOKENS), quantity=st.integers(1, 6), price=st.sampled_from(PRICES),
          span=st.sampled_from(SPANS), window=st.sampled_from(SPANS))
    def open_order(self, buyer: str, supplier: str, token: str, quantity: int, price: int, span: int,
                   window: int) -> None:
        if supplier not in SUPPLIERS:
            expect = Expect(errors.SupplierNotIssuer)
        elif buyer == "stranger":  # holds no tokens and approved nothing
            expect = Expect((errors.ERC20InsufficientAllowance, errors.ERC20InsufficientBalance, errors.RevertReason))
        else:
            expect = Expect()
        deadline = self.world.env.now() + span
        order_id = self.run(expect, lambda: self.escrows[buyer].open_order(
            self.addr(supplier), 1, quantity, self.tokens[token], price, deadline, window, preflight=False))
        if expect.ok:
            assert order_id == len(self.orders) + 1
            self.orders[order_id] = ModelOrder(buyer, supplier, token, quantity, price, FEE_BPS, span, window,
                                               self.epoch)
            self.wallet[(buyer, token)] -= quantity * price
            self.touched.add((buyer, token))

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("owner", "owner", "owner", *SUPPLIERS, "stranger")),
          offset=st.integers(0, 299))
    def deliver(self, pick: int, actor: str, offset: int) -> None:
        order_id = self.choose(pick, OrderStatus.FUNDED)
        actor = self.who(actor, order_id, "supplier")
        order = self.orders.get(order_id)
        supplier = order.supplier if order else "supplier"
        batch_id = self.batches[supplier]
        free = [c for c in [*range(offset, BATCH_SIZE), *range(offset)]
                if c not in self.delivered[batch_id] and c not in self.revoked[batch_id]]
        cards = sorted(free[: order.quantity]) if order else [0]
        ranges: list[tuple[int, int]] = []
        for c in cards:
            if ranges and ranges[-1][0] + ranges[-1][1] == c:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + 1)
            else:
                ranges.append((c, 1))
        expect = self.order_status_error(order_id, OrderStatus.FUNDED)
        if expect is None:
            assert order is not None
            if actor != order.supplier:
                expect = Expect(errors.NotOrderSupplier)
            elif (self.epoch - order.opened_epoch) * JUMP > order.span:
                expect = Expect(errors.DeliveryDeadlinePassed)
            elif len(ranges) > 64:
                expect = Expect(errors.InvalidRangeCount)
            elif len(cards) < order.quantity:
                expect = Expect(errors.QuantityMismatch)
            else:
                expect = Expect()
        self.run(expect, lambda: self.escrows[actor].deliver(order_id, batch_id, ranges, sealed_hash=SEALED))
        if expect.ok:
            assert order is not None
            order.status = OrderStatus.DELIVERED
            order.delivered_epoch = self.epoch
            order.batch = batch_id
            order.cards = cards
            self.delivered[batch_id].update(cards)

    def next_step(self, pick: int, choice: int) -> None:
        """The natural next step of a live order (opening one if there is none); now and then the clock
        moves on or someone who is owed money withdraws it."""
        if choice % 8 == 7:
            self.advance_time()
            return
        if choice % 8 == 6 and (any(self.credits.values()) or any(self.fees.values())):
            self.withdraw("owed", TOKENS[0], bool(pick % 2), pick)
            return
        live = [i for i, o in self.orders.items() if o.status in (OrderStatus.FUNDED, OrderStatus.DELIVERED,
                                                                  OrderStatus.DISPUTED)]
        if not live:
            self.open_order(BUYERS[pick % 2], SUPPLIERS[choice % 2], TOKENS[(pick // 2) % 2], 1 + pick % 6,
                            PRICES[choice % 3], SPANS[pick % 2], SPANS[(pick // 2) % 2])
            return
        # Two times in three the most advanced live order (so orders get settled), else any live one.
        live.sort(key=lambda i: (-self.orders[i].status, i))
        order_id = live[0] if pick % 3 else live[pick % len(live)]
        order = self.orders[order_id]
        pick = self._pick_for(order_id, order.status)
        if order.status == OrderStatus.FUNDED:
            if (self.epoch - order.opened_epoch) * JUMP > order.span:
                self.cancel(pick, "owner")
            else:
                self.deliver(pick, "owner", choice * 37 % BATCH_SIZE)
        elif order.status == OrderStatus.DELIVERED:
            batch = order.batch
            usable = [c for c in order.cards if not self.is_revoked(batch, c) and c not in self.redeemed[batch]]
            if choice == 21 and batch not in self.batch_revoked:
                # The supplier revokes the whole batch (some of its cards may be redeemed already) and anchors a
                # new one for its next deliveries.
                self.world.env.registry(order.supplier).revoke_batch(batch, 2)
                self.batch_revoked.add(batch)
                if self.batches[order.supplier] == batch:
                    self.new_batch(order.supplier)
                return
            if choice % 8 == 5 and usable:  # the buyer uses one of its cards: the redeemer marks it redeemed
                card = usable[pick % len(usable)]
                self.world.env.registry(order.supplier).mark_redeemed(batch, [card])
                self.redeemed[batch].add(card)
                return
            if choice % 4 == 3 and usable:  # the supplier revokes one of this order's cards (leaked, say)
                card = usable[choice % len(usable)]
                self.world.env.registry(order.supplier).revoke_cards(batch, [card], 1)
                self.revoked[batch].add(card)
                return
            # Confirm, dispute (more often: disputes have several ways to end), dispute membership, or wait and
            # release.
            action = ("confirm", "dispute", "release", "membership", "dispute", "membership", "confirm",
                      "release")[(choice // 3) % 8]
            if action == "release" and not self.window_passed(order):
                self.advance_time()  # wait for the dispute window, then release (may still be too early)
            if action == "confirm":
                self.confirm(pick, "owner")
            elif action == "dispute":
                self.dispute(pick, "owner")
            elif action == "membership":
                self.dispute_membership(pick, "owner")
            else:
                self.release(pick, "stranger")
        elif order.membership:  # the supplier proves all or some cards, the buyer withdraws, or it expires
            step = choice % 4
            if step == 0:
                self.prove(pick, "owner", 0, choice, "valid")
            elif step == 1:
                self.prove(pick, "owner", 1 + choice % 3, choice, "valid")
            elif step == 2:
                if choice >= 12:
                    self.advance_time()
                self.withdraw_dispute(pick, "owner")
            else:
                if not self.deadline_passed(order):
                    self.advance_time()
                self.release(pick, "stranger", True)
        else:  # disputed: a ruling, a withdrawal (on time or late), or the default outcome after the deadline
            step = choice % 4
            if step == 0:
                if choice >= 16:  # a ruling that comes too late: the deadline has passed
                    self.advance_time()
                    self.advance_time()
                self.resolve(pick, "arbiter", (choice // 4) % 4, False)
            elif step == 1:
                self.withdraw_dispute(pick, "owner")
            elif step == 2:
                self.advance_time()  # a late withdrawal: after the window (or the deadline) it settles at once
                self.withdraw_dispute(pick, "owner")
            else:
                if not self.deadline_passed(order):
                    self.advance_time()  # wait for the dispute's deadline (may still be too early)
                self.release(pick, "stranger", True)

    def _pick_for(self, order_id: int, status: OrderStatus) -> int:
        """A `pick` value for which `choose(pick, status)` returns `order_id`."""
        candidates = [i for i, o in self.orders.items() if o.status == status]
        return 4 * candidates.index(order_id) + 1  # odd, so never the "nonexistent" case

    # Weight: eight copies of the lifecycle rule (hypothesis picks rules uniformly), so that about a third of
    # the steps move some order forward and most examples reach settlement and withdrawals.
    def _lifecycle_rule(n: int) -> Any:  # type: ignore[misc]
        def lifecycle(self: EscrowMachine, pick: int, choice: int) -> None:
            self.next_step(pick, choice)

        lifecycle.__name__ = lifecycle.__qualname__ = f"lifecycle_{n}"
        return rule(pick=st.integers(0, 50), choice=st.integers(0, 23))(lifecycle)

    lifecycle_0 = _lifecycle_rule(0)
    lifecycle_1 = _lifecycle_rule(1)
    lifecycle_2 = _lifecycle_rule(2)
    lifecycle_3 = _lifecycle_rule(3)
    lifecycle_4 = _lifecycle_rule(4)
    lifecycle_5 = _lifecycle_rule(5)
    lifecycle_6 = _lifecycle_rule(6)
    lifecycle_7 = _lifecycle_rule(7)
    del _lifecycle_rule

    @rule(pick=st.integers(0, 50), share=st.integers(0, 3))
    def dispute_episode_again(self, pick: int, share: int) -> None:
        """A second copy of dispute_episode (twice the weight: there are eight endings to reach)."""
        self.dispute_episode(pick, share)

    @rule(pick=st.integers(0, 50), share=st.integers(0, 3))
    def dispute_episode(self, pick: int, share: int) -> None:
        """A whole dispute of a delivered order, through the rules above: raised, then ruled on in time or too
        late, withdrawn in time or late, or left to expire and settled with the default outcome (the endings
        rotate over the run, so that each is reached; with no delivered order in its window, one is opened and
        delivered first). Membership disputes are proven in two calls, or partly proven (a forged leaf and a card
        of another order refused) and left to expire, or withdrawn late. Before an expiring dispute the buyer uses
        a card and the supplier revokes the whole batch: the default outcome must pay for the used card and refund
        the rest."""
        open_ = [i for i, o in self.orders.items() if o.status == OrderStatus.DELIVERED and not self.window_passed(o)]
        if not open_:  # make one: open an order and deliver it, through the rules above
            self.open_order(BUYERS[pick % 2], SUPPLIERS[share % 2], TOKENS[(pick // 2) % 2], 1 + pick % 6,
                            PRICES[share % 3], SPANS[1], SPANS[1])
            fresh = len(self.orders)
            self.deliver(self._pick_for(fresh, OrderStatus.FUNDED), "owner", pick * 37 % BATCH_SIZE)
            if self.orders[fresh].status != OrderStatus.DELIVERED:
                return
            open_ = [fresh]
        order_id = open_[pick % len(open_)]
        order = self.orders[order_id]
        ending = ENDINGS[EPISODES["count"] % len(ENDINGS)]
        EPISODES["count"] += 1
        batch = order.batch
        usable = [c for c in order.cards if not self.is_revoked(batch, c) and c not in self.redeemed[batch]]
        if ending == "expire" and usable and batch not in self.batch_revoked:
            self.world.env.registry(order.supplier).mark_redeemed(batch, [usable[0]])
            self.redeemed[batch].add(usable[0])
            self.world.env.registry(order.supplier).revoke_batch(batch, 2)
            self.batch_revoked.add(batch)
            if self.batches[order.supplier] == batch:
                self.new_batch(order.supplier)
        if ending.startswith("membership"):
            self.dispute_membership(self._pick_for(order_id, OrderStatus.DELIVERED), "owner")
            p = self._pick_for(order_id, OrderStatus.DISPUTED)
            if ending == "membership proven":  # proven in two calls: the second settles the order
                self.prove(p, "supplier", 2, pick, "valid")
                if order.status == OrderStatus.DISPUTED:
                    self.prove(self._pick_for(order_id, OrderStatus.DISPUTED), "stranger", 0, pick, "valid")
            elif ending == "membership partly proven, expire":
                if order.quantity > 1:
                    self.prove(p, "supplier", 1, pick, "valid")
                if order.status == OrderStatus.DISPUTED:  # (cards proven in an earlier dispute may complete it)
                    self.prove(self._pick_for(order_id, OrderStatus.DISPUTED), "supplier", 0, pick, "forged")
                    self.prove(self._pick_for(order_id, OrderStatus.DISPUTED), "supplier", 2, pick, "foreign")
                    self.advance_time()
                    self.advance_time()
                    self.prove(self._pick_for(order_id, OrderStatus.DISPUTED), "supplier", 0, pick, "valid")
                    self.release(self._pick_for(order_id, OrderStatus.DISPUTED), "stranger", True)
            else:
                self.advance_time()
                self.withdraw_dispute(p, "owner")
            return
        self.dispute(self._pick_for(order_id, OrderStatus.DELIVERED), "owner")
        if ending.startswith("late"):
            self.advance_time()
        if ending in ("expire", "late resolve"):
            self.advance_time()
        p = self._pick_for(order_id, OrderStatus.DISPUTED)
        if ending == "resolve":  # an ordinary dispute: the supplier has nothing to prove (NotMembershipDispute)
            self.prove(p, "supplier", 0, pick, "valid")
        if ending.endswith("resolve"):
            self.resolve(p, "arbiter", share, False)
        elif ending.endswith("withdraw"):
            self.withdraw_dispute(p, "owner")
        else:
            self.release(p, "stranger", True)

    @rule(buyer=st.sampled_from(BUYERS), supplier=st.sampled_from(SUPPLIERS), token=st.sampled_from(TOKENS),
          quantity=st.integers(1, 6))
    def abandoned_order(self, buyer: str, supplier: str, token: str, quantity: int) -> None:
        """An order the supplier never delivers: the buyer cancels it after its delivery deadline (too early
        first, then after the clock has moved past it)."""
        self.open_order(buyer, supplier, token, quantity, PRICES[quantity % 3], SPANS[0], SPANS[0])
        order_id = len(self.orders)
        self.cancel(self._pick_for(order_id, OrderStatus.FUNDED), "owner")
        self.advance_time()
        self.cancel(self._pick_for(order_id, OrderStatus.FUNDED), "owner")

    @rule(supplier=st.sampled_from(SUPPLIERS), card=st.integers(0, BATCH_SIZE - 1))
    def redeliver_taken_card(self, supplier: str, card: int) -> None:
        """A supplier tries to sell a delivered, redeemed or revoked card again."""
        batch = self.batches[supplier]
        taken = sorted(self.delivered[batch] | self.revoked[batch])
        funded = [i for i, o in self.orders.items() if o.status == OrderStatus.FUNDED and o.supplier == supplier
                  and (self.epoch - o.opened_epoch) * JUMP < o.span]
        if not taken or not funded:
            return
        card = taken[card % len(taken)]
        order_id = funded[0]
        quantity = self.orders[order_id].quantity
        expected = (errors.CardRevoked if card in self.revoked[batch] else errors.CardAlreadyRedeemed
                    if card in self.redeemed[batch] else errors.CardAlreadyDelivered)
        ranges = [(card, 1)]
        if quantity > 1:  # pad with fresh-looking cards; ranges are checked in order, so `card` fails first
            ranges.append((BATCH_SIZE, quantity - 1))
        with pytest.raises(expected) as info:
            self.escrows[supplier].deliver(order_id, batch, ranges, sealed_hash=SEALED)
        assert info.value.index == card

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("owner", "owner", "owner", *ACTORS)))
    def confirm(self, pick: int, actor: str) -> None:
        order_id = self.choose(pick, OrderStatus.DELIVERED)
        actor = self.who(actor, order_id, "buyer")
        expect = self.order_status_error(order_id, OrderStatus.DELIVERED)
        order = self.orders.get(order_id)
        if expect is None:
            assert order is not None
            expect = Expect() if actor == order.buyer else Expect(errors.NotOrderBuyer)
        settlement = self.run(expect, lambda: self.escrows[actor].confirm(order_id))
        if expect.ok:
            assert order is not None
            order.status = OrderStatus.CONFIRMED
            predicted = self.settle_model(order)
            assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee,
                    settlement.buyer_refund) == predicted

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(ACTORS + ("feeto",)), disputed=st.booleans())
    def release(self, pick: int, actor: str, disputed: bool = False) -> None:
        """Anyone settles with the default outcome: a delivered order after its window, or a disputed one after
        its dispute's deadline (mostly a `disputed` one if that is asked for)."""
        order_id = self.choose(pick, OrderStatus.DISPUTED if disputed else OrderStatus.DELIVERED)
        order = self.orders.get(order_id)
        disputed = order is not None and order.status == OrderStatus.DISPUTED
        if disputed:
            assert order is not None
            expect = Expect() if self.deadline_passed(order) else Expect(errors.DisputeDeadlineNotPassed)
        else:
            expect = self.order_status_error(order_id, OrderStatus.DELIVERED)
            if expect is None:
                assert order is not None
                expect = Expect() if self.window_passed(order) else Expect(errors.DisputeWindowOpen)
        settlement = self.run(expect, lambda: self.escrows[actor].release(order_id))
        if expect.ok:
            assert order is not None
            OUTCOMES[("release", "dispute expired" if disputed else "window passed")] += 1
            assert settlement.dispute_expired == disputed
            order.status = OrderStatus.RELEASED
            predicted = self.settle_model(order)
            assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee,
                    settlement.buyer_refund) == predicted

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("owner", "owner", "owner", *ACTORS)))
    def dispute(self, pick: int, actor: str) -> None:
        order_id = self.choose(pick, OrderStatus.DELIVERED)
        actor = self.who(actor, order_id, "buyer")
        expect = self.order_status_error(order_id, OrderStatus.DELIVERED)
        order = self.orders.get(order_id)
        if expect is None:
            assert order is not None
            if actor != order.buyer:
                expect = Expect(errors.NotOrderBuyer)
            elif self.window_passed(order):
                expect = Expect(errors.DisputeWindowClosed)
            else:
                expect = Expect()
        self.run(expect, lambda: self.escrows[actor].dispute(order_id))
        if expect.ok:
            assert order is not None
            order.status = OrderStatus.DISPUTED
            order.disputed_epoch = self.epoch
            order.membership = False

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("owner", "owner", "owner", *ACTORS)))
    def dispute_membership(self, pick: int, actor: str) -> None:
        """The buyer disputes that the delivered cards are in their batch at all."""
        order_id = self.choose(pick, OrderStatus.DELIVERED)
        actor = self.who(actor, order_id, "buyer")
        expect = self.order_status_error(order_id, OrderStatus.DELIVERED)
        order = self.orders.get(order_id)
        if expect is None:
            assert order is not None
            if actor != order.buyer:
                expect = Expect(errors.NotOrderBuyer)
            elif self.window_passed(order):
                expect = Expect(errors.DisputeWindowClosed)
            else:
                expect = Expect()
        self.run(expect, lambda: self.escrows[actor].dispute_membership(order_id))
        if expect.ok:
            assert order is not None
            order.status = OrderStatus.DISPUTED
            order.disputed_epoch = self.epoch
            order.membership = True
            on_chain = self.escrows["stranger"].order(order_id)
            assert on_chain.membership_dispute
            assert on_chain.proven_count == len(self.proven[order.batch] & set(order.cards))

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("owner", "owner", "owner", "stranger", "buyer")),
          part=st.integers(0, 3), offset=st.integers(0, 50),
          kind=st.sampled_from(("valid", "valid", "valid", "forged", "foreign")))
    def prove(self, pick: int, actor: str, part: int, offset: int, kind: str) -> None:
        """Someone (mostly the supplier) proves cards of a disputed order with a multiproof of the real batch:
        all of them (`part` 0) or a slice, some maybe proven already; or a forged leaf (another serial:
        InvalidDeliveryProof), or a card of the batch that is not in the order (CardNotInOrder)."""
        order_id = self.choose(pick, OrderStatus.DISPUTED)
        actor = self.who(actor, order_id, "supplier")
        order = self.orders.get(order_id)
        expect = self.order_status_error(order_id, OrderStatus.DISPUTED)
        if order is None or not order.cards:
            # Nothing to prove from: any card of a supplier batch (the status check comes first).
            real = self.real[self.batches["supplier"]]
            cards = [0]
        else:
            real = self.real[order.batch]
            cards = list(order.cards)
            if part:
                start = offset % len(cards)
                cards = (cards[start:] + cards[:start])[: max(1, len(cards) * part // 4)]
        leaves = None
        if kind == "foreign" and order is not None and order.cards:
            outside = [c for c in range(BATCH_SIZE) if c not in order.cards]
            cards = [*cards[:-1], outside[offset % len(outside)]]
        elif kind == "forged":
            leaves = list(real.leaves)
            leaves[cards[0]] = forged(leaves[cards[0]], serial=leaves[cards[0]].serial ^ 1)
        if expect is None:
            assert order is not None
            if not order.membership:
                expect = Expect(errors.NotMembershipDispute)
            elif self.deadline_passed(order):
                expect = Expect(errors.DisputeDeadlinePassed)
            elif kind == "foreign":
                expect = Expect(errors.CardNotInOrder)
            elif kind == "forged":
                expect = Expect(errors.InvalidDeliveryProof)
            else:
                expect = Expect()
        proven_cards, proof, flags = real.proven(cards, leaves)
        receipt = self.run(expect, lambda: self.escrows[actor].prove_delivery(order_id, proven_cards, proof, flags))
        if expect.ok:
            assert order is not None and receipt is not None
            self.proven[order.batch].update(cards)
            done = all(c in self.proven[order.batch] for c in order.cards)
            on_chain = self.escrows["stranger"].order(order_id)
            assert on_chain.proven_count == len(self.proven[order.batch] & set(order.cards))
            OUTCOMES[("prove", "settled" if done else "partly proven")] += 1
            if done:
                order.status = OrderStatus.RELEASED
                predicted = self.settle_model(order)
                settlement = self.escrows["stranger"]._settlement(receipt, "OrderReleased")
                assert (settlement.revoked_cards, settlement.supplier_amount, settlement.fee,
                        settlement.buyer_refund) == predicted
                assert on_chain.status == OrderStatus.RELEASED

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("owner", "owner", "owner", *ACTORS)))
    def withdraw_dispute(self, pick: int, actor: str) -> None:
        order_id = self.choose(pick, OrderStatus.DISPUTED)
        actor = self.who(actor, order_id, "buyer")
        expect = self.order_status_error(order_id, OrderStatus.DISPUTED)
        order = self.orders.get(order_id)
        if expect is None:
            assert order is not None
            expect = Expect() if actor == order.buyer else Expect(errors.NotOrderBuyer)
        withdrawal = self.run(expect, lambda: self.escrows[actor].withdraw_dispute(order_id))
        if expect.ok:
            assert order is not None
            settles = self.window_passed(order) or self.deadline_passed(order)
            assert withdrawal.settled == settles
            OUTCOMES[("withdraw_dispute", "settled" if settles else "delivered again")] += 1
            order.membership = False  # a withdrawn membership claim refunds no unproven card
            if settles:
                order.status = OrderStatus.RELEASED
                predicted = self.settle_model(order)
                s = withdrawal.settlement
                assert (s.revoked_cards, s.supplier_amount, s.fee, s.buyer_refund) == predicted
            else:
                order.status = OrderStatus.DELIVERED
                order.disputed_epoch = -1

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("arbiter", "arbiter", "stranger", "buyer")),
          share=st.sampled_from((0, 1, 2, 3)), bad=st.sampled_from((False, False, False, True)))
    def resolve(self, pick: int, actor: str, share: int, bad: bool) -> None:
        order_id = self.choose(pick, OrderStatus.DISPUTED)
        order = self.orders.get(order_id)
        total = order.amount if order else 0
        buyer_amount = total * share // 3
        supplier_amount = total - buyer_amount + (1 if bad else 0)
        if actor != "arbiter":
            expect = Expect(errors.AccessControlUnauthorizedAccount)
        else:
            expect = self.order_status_error(order_id, OrderStatus.DISPUTED)
            if expect is None:
                assert order is not None
                if self.deadline_passed(order):
                    expect = Expect(errors.DisputeDeadlinePassed)
                else:
                    expect = Expect(errors.InvalidSplit) if bad else Expect()
        self.run(expect, lambda: self.escrows[actor].resolve(order_id, buyer_amount, supplier_amount))
        if expect.ok:
            assert order is not None
            order.status = OrderStatus.RESOLVED
            fee = supplier_amount * order.fee_bps // 10_000
            self.credit(order.buyer, order.token, buyer_amount)
            self.credit(order.supplier, order.token, supplier_amount - fee)
            self.fees[order.token] += fee
            self.owed_total[(FEE_RECIPIENT, order.token)] += fee
            self.touched.add((FEE_RECIPIENT, order.token))

    @rule(pick=st.integers(0, 50), actor=st.sampled_from(("owner", "owner", *BUYERS, "supplier")))
    def cancel(self, pick: int, actor: str) -> None:
        order_id = self.choose(pick, OrderStatus.FUNDED)
        actor = self.who(actor, order_id, "buyer")
        expect = self.order_status_error(order_id, OrderStatus.FUNDED)
        order = self.orders.get(order_id)
        if expect is None:
            assert order is not None
            if actor != order.buyer:
                expect = Expect(errors.NotOrderBuyer)
            elif (self.epoch - order.opened_epoch) * JUMP <= order.span:
                expect = Expect(errors.DeliveryDeadlineNotPassed)
            else:
                expect = Expect()
        self.run(expect, lambda: self.escrows[actor].cancel(order_id))
        if expect.ok:
            assert order is not None
            order.status = OrderStatus.CANCELLED
            self.credit(order.buyer, order.token, order.amount)

    @rule(actor=st.sampled_from(("owed", "owed", *ACCOUNTS)), token=st.sampled_from(TOKENS), elsewhere=st.booleans(),
          pick=st.integers(0, 50))
    def withdraw(self, actor: str, token: str, elsewhere: bool, pick: int) -> None:
        if actor == "owed":  # someone who has something to withdraw, if anyone has
            owed = sorted((a, t) for (a, t), c in self.credits.items() if c) + [(FEE_RECIPIENT, t) for t in TOKENS
                                                                                   if self.fees[t]]
            actor, token = owed[pick % len(owed)] if owed else ("stranger", token)
        owed = self.credits[(actor, token)] + (self.fees[token] if actor == FEE_RECIPIENT else 0)
        expect = Expect() if owed else Expect(errors.NothingToWithdraw)
        to = "stranger" if elsewhere and actor != "stranger" else actor
        paid = self.run(expect, lambda: self.escrows[actor].withdraw(self.tokens[token],
                                                                     self.addr(to) if to != actor else None))
        if expect.ok:
            assert paid == owed
            self.credits[(actor, token)] = 0
            if actor == FEE_RECIPIENT:
                self.fees[token] = 0
            self.withdrawn_total[(actor, token)] += paid
            assert self.withdrawn_total[(actor, token)] <= self.owed_total[(actor, token)]
            self.wallet[(to, token)] += paid
            self.touched.update({(actor, token), (to, token)})

    @rule(supplier=st.sampled_from(SUPPLIERS), first=st.integers(0, BATCH_SIZE - 1), count=st.integers(1, 3),
          delivered=st.booleans())
    def revoke(self, supplier: str, first: int, count: int, delivered: bool) -> None:
        """The supplier revokes cards: delivered ones (the buyer gets refunded at settlement) or any."""
        batch = self.batches[supplier]
        pool = sorted(self.delivered[batch] - self.revoked[batch] - self.redeemed[batch]) if delivered else []
        if pool:
            cards = sorted({pool[(first + i) % len(pool)] for i in range(count)})
        else:
            cards = sorted({(first + 7 * i) % BATCH_SIZE for i in range(count)} - self.revoked[batch]
                           - self.redeemed[batch])
        if not cards:
            return
        self.world.env.registry(supplier).revoke_cards(batch, cards, 1)
        self.revoked[batch].update(cards)

    @rule(supplier=st.sampled_from(SUPPLIERS), first=st.integers(0, BATCH_SIZE - 1))
    def redeem(self, supplier: str, first: int) -> None:
        """A delivered card is used: its issuer (or redeemer) marks it redeemed; it is paid for in any case."""
        batch = self.batches[supplier]
        pool = sorted(self.delivered[batch] - self.revoked[batch] - self.redeemed[batch])
        if not pool:
            return
        card = pool[first % len(pool)]
        self.world.env.registry(supplier).mark_redeemed(batch, [card])
        self.redeemed[batch].add(card)

    @rule()
    def advance_time(self) -> None:
        self.world.advance(JUMP)
        self.epoch += 1

    # ------------------------------------------------------------------ invariants

    def open_escrow(self, token: str) -> int:
        live = (OrderStatus.FUNDED, OrderStatus.DELIVERED, OrderStatus.DISPUTED)
        return sum(o.amount for o in self.orders.values() if o.token == token and o.status in live)

    @invariant()
    def escrow_is_fully_backed(self) -> None:
        if not self.batches:  # before @initialize
            return
        env = self.world.env
        for token in TOKENS:
            balance = Token(env.admin, self.tokens[token]).balance_of(self.world.escrow_address)
            owed = sum(self.credits[(a, token)] for a in ACCOUNTS) + self.fees[token]
            assert balance - self.escrow_start[token] == self.open_escrow(token) + owed
        self.check(self.touched)
        self.touched = set()

    def check(self, pairs: set[tuple[str, str]]) -> None:
        env = self.world.env
        escrow = self.escrows["stranger"]
        for who, token in sorted(pairs):
            chain_credit = escrow.credits(self.addr(who), self.tokens[token])
            model_credit = self.credits[(who, token)] + (self.fees[token] if who == FEE_RECIPIENT else 0)
            assert chain_credit == model_credit, (who, token)
            assert Token(env.admin, self.tokens[token]).balance_of(self.addr(who)) == self.wallet[(who, token)]
            assert self.withdrawn_total[(who, token)] <= self.owed_total[(who, token)]

    def teardown(self) -> None:
        env = self.world.env
        try:
            if self.batches:
                self.check({(a, t) for a in ACCOUNTS for t in TOKENS})
                escrow = self.escrows["stranger"]
                for order_id, order in self.orders.items():
                    assert escrow.order(order_id).status == order.status
        finally:
            env.revert(self.snapshot)
            env.admin._next_nonce = None


def test_escrow_state_machine(chain_env: ChainEnv) -> None:
    examples, steps = BUDGET[chain_env.backend]
    OUTCOMES.clear()
    EPISODES["count"] = 0
    machine = type("EscrowMachineOn", (EscrowMachine,), {"env": chain_env})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        phases=(Phase.explicit, Phase.generate, *((Phase.shrink,) if SHRINK else ())),
    ))
    # The run must not be vacuous: every transition succeeded at least once, and reverts were exercised.
    missing = [name for name in MUST_SUCCEED if not OUTCOMES[(name, "ok")]]
    assert not missing, f"never succeeded: {missing}; outcomes: {dict(OUTCOMES)}"
    assert OUTCOMES[("settle", "with revoked cards")], dict(OUTCOMES)
    assert OUTCOMES[("release", "dispute expired")], dict(OUTCOMES)  # disputes end
    assert OUTCOMES[("withdraw_dispute", "delivered again")], dict(OUTCOMES)
    assert OUTCOMES[("withdraw_dispute", "settled")], dict(OUTCOMES)
    assert OUTCOMES[("resolve", "DisputeDeadlinePassed")], dict(OUTCOMES)
    assert OUTCOMES[("settle", "redeemed cards of a revoked batch")], dict(OUTCOMES)  # no refund for used cards
    assert OUTCOMES[("prove", "settled")] and OUTCOMES[("prove", "partly proven")], dict(OUTCOMES)
    assert OUTCOMES[("settle", "membership, unproven cards refunded")], dict(OUTCOMES)
    for refused in ("InvalidDeliveryProof", "CardNotInOrder", "NotMembershipDispute", "DisputeDeadlinePassed"):
        assert OUTCOMES[("prove", refused)], (refused, dict(OUTCOMES))
    assert sum(n for (_, outcome), n in OUTCOMES.items() if outcome != "ok") > 50
