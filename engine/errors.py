"""The exceptions Scarp expects. The CLI and the app show their message as one line, never a traceback."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path


def printable(text: str) -> str:
    """`text` safe to print on one line anywhere: control characters (newlines, NUL, escape codes) and
    the lone surrogates that stand for undecodable bytes in a file name are shown as escapes."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c)[0] == "C" else c for c in text
    )


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text)


class ScarpError(Exception):
    """An expected failure whose message is meant for the user."""


class InputError(ScarpError):
    """A file or value the user gave cannot be used; the message names the file and the problem.

    `source` keeps what was given (a path may hold any bytes); the message shows it printable.
    """

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{printable(self.source)}: {printable(_one_line(problem))}")


class NotFoundError(ScarpError):
    """A workspace record that was asked for does not exist."""


class ConflictError(ScarpError):
    """Another session changed the record since this one read it; nothing was overwritten."""
