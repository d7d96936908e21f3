"""The exceptions Scarp expects. The CLI and the app show their message as one line, never a traceback."""

from __future__ import annotations

from pathlib import Path


class ScarpError(Exception):
    """An expected failure whose message is meant for the user."""


class InputError(ScarpError):
    """A file or value the user gave cannot be used; the message names the file and the problem."""

    def __init__(self, source: str | Path, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class NotFoundError(ScarpError):
    """A workspace record that was asked for does not exist."""


class ConflictError(ScarpError):
    """Another session changed the record since this one read it; nothing was overwritten."""
