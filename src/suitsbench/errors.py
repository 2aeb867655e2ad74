"""The one error type for bad inputs (files, manifest rows, configuration keys).

Every message is one line of the form ``"<file or key or row>: <what is wrong>; <what to do>"``
so that a user can fix the input without reading a traceback.
"""
from __future__ import annotations

__all__ = ["InputError", "InputErrors", "raise_all"]


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


class InputErrors(InputError):
    """Several input problems found in one pass, one :class:`InputError` each.

    The message is a count line followed by one line per problem, so that a user fixes
    every file of a manifest at once; ``errors`` keeps the single errors.
    """

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = list(errors)
        self.where, self.problem, self.fix = "input", f"{len(self.errors)} problems", None
        lines = [f"{len(self.errors)} input problems (one per line):"]
        lines += [str(e) for e in self.errors]
        ValueError.__init__(self, "\n".join(lines))


def raise_all(errors: list[InputError]) -> None:
    """Raise nothing for no errors, the error itself for one, :class:`InputErrors` for more."""
    flat = []
    for e in errors:
        flat.extend(e.errors if isinstance(e, InputErrors) else [e])
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise InputErrors(flat)
