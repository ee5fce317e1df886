"""Errors of the issuer package.

Every error's ``str()`` is one human-readable line that is safe to show to a user
or write to a log: it never contains a card's secret code, a key, or a batch
secret.  Public identifiers (batch ids, serials, CSV line numbers, currencies)
may appear.

Each class also inherits the builtin exception that describes it best where there
is one (``LookupError`` for "not found", ``ValueError`` for bad input, ...), so
generic callers can catch those.  ``code`` is a stable machine-readable name (as
on :class:`chain.errors.CardproofError`) and ``http_status`` a hint for the web API.
"""

from __future__ import annotations

from typing import ClassVar

from chain.errors import CardproofError

__all__ = [
    "IssuerError",
    "BatchNotFound",
    "CardNotFound",
    "WrongCode",
    "InvalidCsv",
    "DuplicateCode",
    "UnsupportedCurrency",
    "InvalidCount",
    "InvalidBatchState",
    "AlreadyRedeemed",
    "CardRevoked",
    "RedemptionPending",
    "MasterKeyError",
    "StorageError",
    "DecryptionError",
]

_MAX_MESSAGE = 300


def _one_line(text: object, limit: int = _MAX_MESSAGE) -> str:
    """Collapse whitespace (newlines included) and cut overly long text."""
    line = " ".join(str(text).split())
    if len(line) > limit:
        line = line[: limit - 3] + "..."
    return line


def _short(value: object, limit: int = 80) -> str:
    """A user-supplied *public* value, quoted and bounded, for use inside a message."""
    return repr(_one_line(value, limit))


class IssuerError(CardproofError):
    """Base of every error raised by the issuer package."""

    #: Stable machine-readable code (API error bodies, --json output); never a card code.
    code: ClassVar[str] = "issuer_error"
    #: HTTP status the web API should answer with.
    http_status: ClassVar[int] = 400

    def __init__(self, message: str = "") -> None:
        self.message = _one_line(message or self.__class__.__doc__ or self.__class__.__name__)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.message!r})"

    def __reduce__(self):  # subclasses take other constructor arguments; pickle the state
        return (_restore, (self.__class__, self.message, dict(self.__dict__)))


def _restore(cls: type[IssuerError], message: str, state: dict) -> IssuerError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class BatchNotFound(IssuerError, LookupError):
    """No such batch."""

    code = "batch_not_found"
    http_status = 404

    def __init__(self, batch_id: object = None) -> None:
        self.batch_id = batch_id
        if batch_id is None:
            super().__init__("batch not found")
        else:
            super().__init__(f"batch {_short(batch_id, 70)} not found")


class CardNotFound(IssuerError, LookupError):
    """No such card."""

    code = "card_not_found"
    http_status = 404

    def __init__(self, serial: object = None) -> None:
        self.serial = serial
        if serial is None:
            super().__init__("card not found")
        else:
            super().__init__(f"card {_short(serial, 40)} not found")


class WrongCode(IssuerError, ValueError):
    """The code does not match this card."""

    code = "wrong_code"
    http_status = 403

    def __init__(self, serial: object = None) -> None:
        self.serial = serial
        # Never echo the code that was tried.
        if serial is None:
            super().__init__("the code does not match this card")
        else:
            super().__init__(f"the code does not match card {_short(serial, 40)}")


class InvalidCsv(IssuerError, ValueError):
    """The CSV file is not valid."""

    code = "invalid_csv"

    def __init__(self, line: int | None, reason: str) -> None:
        # ``reason`` is written by cardproof code, never copied from a cell that may
        # hold a code.
        self.line = line
        self.reason = _one_line(reason, 200)
        where = f"CSV line {line}" if line is not None else "CSV file"
        super().__init__(f"{where}: {self.reason}")


class DuplicateCode(InvalidCsv):
    """A code appears twice (in the file, or already in another batch)."""

    code = "duplicate_code"
    http_status = 409

    def __init__(self, line: int | None, first_line: int | None = None, *,
                 other_batch: bool = False) -> None:
        self.first_line = first_line
        self.other_batch = other_batch
        if other_batch:
            reason = "duplicate code: this code was already imported in another batch"
        elif first_line is not None:
            reason = f"duplicate code: same code as line {first_line}"
        elif line is None:
            reason = "duplicate code: a code is already stored (imported before, or twice in this file)"
        else:
            reason = "duplicate code"
        super().__init__(line, reason)


class UnsupportedCurrency(IssuerError, ValueError):
    """The currency is not a supported ISO 4217 code."""

    code = "unsupported_currency"

    def __init__(self, currency: object) -> None:
        self.currency = currency
        super().__init__(
            f"unsupported currency {_short(currency, 12)}: use an ISO 4217 code such as USD or EUR"
        )


class InvalidCount(IssuerError, ValueError):
    """The number of cards is out of range."""

    code = "invalid_count"

    def __init__(self, count: object, minimum: int | None = 1, maximum: int | None = None) -> None:
        self.count = count
        if maximum is not None and minimum is not None and minimum == maximum:
            bounds = f"{minimum:,} (the number of codes in the file), or left out"
        elif maximum is not None and minimum is not None:
            bounds = f"between {minimum:,} and {maximum:,}"
        elif maximum is not None:
            bounds = f"at most {maximum:,}"
        elif minimum is not None:
            bounds = f"at least {minimum:,}"
        else:
            bounds = "a whole number"
        super().__init__(f"invalid card count {_short(count, 24)}: must be {bounds}")


class InvalidBatchState(IssuerError, RuntimeError):
    """The batch is not in a state that allows this."""

    code = "invalid_batch_state"
    http_status = 409

    def __init__(self, batch_id: object, state: object, wanted: object | None = None,
                 detail: str | None = None) -> None:
        self.batch_id = batch_id
        self.state = state
        self.wanted = wanted
        if detail:
            msg = f"batch {batch_id} is {state}: {detail}"
        elif wanted is not None:
            msg = f"batch {batch_id} cannot go from {state} to {wanted}"
        else:
            msg = f"batch {batch_id} is {state}"
        super().__init__(msg)


def _when(value: object) -> str:
    """A time for people: a datetime or unix seconds as ``2026-12-02 07:10 UTC``; anything else as given."""
    import datetime as dt

    from chain.humanize import format_time

    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, int):
        return format_time(value)
    return _short(value, 40)


def _reason_name(reason: object) -> str:
    """A revocation reason by name (``1`` -> ``leaked``)."""
    from issuer.revocation import RevokeReason

    try:
        return RevokeReason(int(reason)).name.lower()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"code {reason}" if isinstance(reason, int) else f"code {_short(reason, 10)}"


class AlreadyRedeemed(IssuerError):
    """The card was already redeemed."""

    code = "already_redeemed"
    http_status = 409

    def __init__(self, serial: object = None, redeemed_at: object = None) -> None:
        self.serial = serial
        self.redeemed_at = redeemed_at
        card = f"card {_short(serial, 40)}" if serial is not None else "the card"
        when = f" at {_when(redeemed_at)}" if redeemed_at is not None else ""
        super().__init__(f"{card} was already redeemed{when}")


class RedemptionPending(IssuerError):
    """A redemption transaction of this card was sent and is not settled yet."""

    code = "redemption_pending"
    http_status = 409

    def __init__(self, serial: object = None, tx_hash: str | None = None) -> None:
        self.serial = serial
        self.tx_hash = tx_hash
        card = f"card {_short(serial, 40)}" if serial is not None else "the card"
        tx = f" (transaction {tx_hash})" if tx_hash else ""
        super().__init__(f"a redemption of {card} is still pending on chain{tx}; try again shortly")


class CardRevoked(IssuerError):
    """The card was revoked by its issuer."""

    code = "card_revoked"
    http_status = 410

    def __init__(self, serial: object = None, reason: int | None = None) -> None:
        self.serial = serial
        self.reason = reason
        card = f"card {_short(serial, 40)}" if serial is not None else "the card"
        why = f" (reason: {_reason_name(reason)})" if reason is not None else ""
        super().__init__(f"{card} was revoked by its issuer{why}")


class MasterKeyError(IssuerError):
    """The master key is missing, malformed, unsafe or wrong."""

    code = "master_key_error"
    http_status = 500

    def __init__(self, message: str = "master key error") -> None:
        super().__init__(message)


class StorageError(IssuerError):
    """The database could not do what was asked."""

    code = "storage_error"
    http_status = 500

    def __init__(self, message: str = "storage error") -> None:
        super().__init__(message)


class DecryptionError(StorageError, ValueError):
    """Stored ciphertext does not authenticate (corrupted, moved, or wrong key)."""

    code = "decryption_error"

    def __init__(self, message: str = "stored ciphertext does not authenticate") -> None:
        super().__init__(message)
