"""The one-line error rule of every entry point (the CLI, ``python -m train``, ``python -m
evaluation``, the app, the survey and the library's own messages): an error is one line,
``"<prog>: error: <message>"``, never a traceback. Imported by everything, importing nothing
of colorizer's."""

from __future__ import annotations

import numbers
import sys
from typing import NoReturn

from tqdm import tqdm

__all__ = ["error_line", "first_line", "report_error", "fail", "check_count"]


def error_line(prog: str, error: BaseException | str, context: str | None = None, limit: int | None = 300) -> str:
    """``"<prog>: error: [<context>: ]<message>"`` on one line, the format of every
    entry point (this CLI, ``python -m train``, ``python -m evaluation``, the app and the
    survey): the message's lines joined, whitespace collapsed, cut at ``limit``
    characters (a state-dict mismatch lists every tensor; None: never cut)."""
    text = " ".join(str(error).split()) or type(error).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return f"{prog}: error: {context + ': ' if context else ''}{text}"


def first_line(error: BaseException | str) -> str:
    """An exception's (or a message's) first line; an exception's type when its message is empty."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0].strip()
    return type(error).__name__ if isinstance(error, BaseException) else ""


def report_error(prog: str, error: BaseException | str, context: str | None = None, status: int = 2) -> int:
    """Print ``error_line`` on stderr and return ``status`` (2: bad arguments or set-up),
    for ``return report_error(...)`` in a ``main``."""
    tqdm.write(error_line(prog, error, context), file=sys.stderr)
    return status


def fail(prog: str, error: BaseException | str, context: str | None = None) -> NoReturn:
    """End a command on a start-up error: one line on stderr, exit status 2."""
    raise SystemExit(report_error(prog, error, context))


def check_count(value, name: str, unit: str, other: str = "") -> int:
    """A public argument that counts something (``batch_size``, ``max_pixels``): a whole number
    >= 1, not a bool. Returns it as an int; raises ``TypeError`` or ``ValueError``, one line
    naming the argument, what it takes (``other``: what else it may be) and what it got."""
    takes = f"{name} must be a whole number of {unit} >= 1{other}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{takes}, got {type(value).__name__} {value!r}"[:300])
    if value < 1:
        raise ValueError(f"{takes}, got {value}")
    return int(value)
