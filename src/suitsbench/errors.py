"""The one error type for bad inputs (files, manifest rows, configuration keys).

Every message is one line of the form ``"<file or key or row>: <what is wrong>; <what to do>"``
so that a user can fix the input without reading a traceback.
"""
from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A problem with user input, found before any expensive work.

    ``InputError(where, problem, fix)`` formats the message ``"where: problem; fix"``;
    ``InputError(message)`` takes a ready message. The parts are kept as attributes
    ``where``, ``problem`` and ``fix`` (``None`` when a ready message was given).
    """

    def __init__(self, where: str, problem: str | None = None, fix: str | None = None) -> None:
        self.where = str(where)
        self.problem = problem
        self.fix = fix
        if problem is None:
            message = self.where
        else:
            message = f"{self.where}: {problem}"
            if fix:
                message += f"; {fix}"
        # one line, always
        super().__init__(" ".join(message.split()))
