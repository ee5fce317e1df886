"""Account and contract addresses typed by people: the one parser every CLI option, config value and API field uses.

An address is ``0x`` and 40 hex digits. Mixed case is an EIP-55 checksum and must be right (a typo in a
checksummed address is refused, never sent to); all-lowercase or all-uppercase hex carries no checksum and is
accepted, as EIP-55 intends. The result is always the checksummed form.
"""

from __future__ import annotations

import re

from eth_utils import is_checksum_address, to_checksum_address

from chain.errors import ChainError

__all__ = ["AddressError", "address_problem", "parse_address"]

_HEX_ADDRESS = re.compile(r"^0[xX][0-9a-fA-F]{40}$")


class AddressError(ChainError, ValueError):
    """Not an address (0x + 40 hex digits), or a mixed-case address whose EIP-55 checksum is wrong."""

    code = "invalid_address"


def address_problem(text: object, noun: str = "address") -> str | None:
    """Why ``text`` is not an address people may give (one line, without ``text``), else None. ``noun`` names what
    was expected ("account address")."""
    if not isinstance(text, str) or not _HEX_ADDRESS.match(text.strip()):
        return f"is not an {noun} (0x + 40 hex digits)"
    raw = text.strip()
    body = raw[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address("0x" + body):
        return ("has a wrong EIP-55 checksum (its mixed case does not match: a typo?); "
                "copy it again, or give it all in lowercase")
    return None


def parse_address(text: object, what: str = "address", *, noun: str = "address") -> str:
    """The checksummed address ``text`` names; :class:`AddressError` (``what: 'text' <why>``) if it names none."""
    problem = address_problem(text, noun)
    if problem is not None:
        shown = repr(text.strip()) if isinstance(text, str) and len(text) <= 100 else "the value"
        raise AddressError(f"{what}: {shown} {problem}")
    return to_checksum_address("0x" + str(text).strip()[2:])
