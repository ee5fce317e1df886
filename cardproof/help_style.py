"""One style for every command's help: placeholders in capitals (BATCH_ID, ADDRESS), no type tags.

typer's rich help prints a type tag beside each parameter (``<str>``, ``<int>``, ``<bool>`` even for ``--help``).
:func:`tidy_help` walks the whole command tree once and swaps each parameter's class for a subclass that shows
instead its metavar, or its name in capitals: ``--face-value FACE_VALUE``, ``BATCH``; flags show nothing.
Choices keep their values (``text|json``); number ranges keep their bounds.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

try:  # typer >= 0.2x vendors click as typer._click
    from typer._click import Context
except ImportError:  # pragma: no cover - older typer on real click
    from click import Context

__all__ = ["tidy_help"]


def _placeholder(param: Any) -> str:
    if param.metavar:
        return param.metavar
    choices = getattr(getattr(param, "type_descriptor", None), "choices", None)
    if getattr(getattr(param, "type_descriptor", None), "is_choice", False) and choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    return (param.name or "value").upper()


class _TidyArgument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:  # noqa: ARG002 - the name column already says it
        return None


class _TidyOption(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:  # noqa: ARG002
        if self.is_flag or self.count:
            return None
        shown = _placeholder(self)
        return shown + "..." if self.nargs != 1 else shown


def _tidy_param(param: Any) -> None:
    if type(param) is TyperArgument:
        if param.metavar is None:
            param.metavar = (param.name or "value").upper()
        param.__class__ = _TidyArgument
    elif type(param) is TyperOption:
        param.__class__ = _TidyOption


def tidy_help(command: Any) -> None:
    """Give every parameter of ``command`` and its subcommands the house placeholder style (idempotent)."""
    for param in getattr(command, "params", ()):
        _tidy_param(param)
    help_option = command.get_help_option(Context(command))  # made once and cached by the command
    if help_option is not None:
        _tidy_param(help_option)
    for sub in (getattr(command, "commands", None) or {}).values():
        tidy_help(sub)
