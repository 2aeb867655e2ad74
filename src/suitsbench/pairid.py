"""Image ids and pair ids.

An image id is ``{subject}_{modality}`` (letters, digits, ``.``, ``-``, ``_``, starting with a
letter or digit); a registration pair's id is ``{moving_id}__to__{fixed_id}``. Every part of
the benchmark that builds, splits or matches pair ids uses this module.
"""
from __future__ import annotations

__all__ = ["SEPARATOR", "ID_PATTERN", "PAIR_PATTERN", "pair_id", "split_pair_id"]

SEPARATOR = "__to__"
# regular expression of one id part (subject, modality, image id), unanchored
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# regular expression of a pair id, unanchored
PAIR_PATTERN = f"{ID_PATTERN}{SEPARATOR}{ID_PATTERN}"


def pair_id(moving_id: str, fixed_id: str) -> str:
    """``"{moving_id}__to__{fixed_id}"``."""
    return f"{moving_id}{SEPARATOR}{fixed_id}"


def split_pair_id(pair: str) -> tuple[str, str]:
    """``"{moving_id}__to__{fixed_id}"`` -> ``(moving_id, fixed_id)``; ValueError otherwise."""
    moving, sep, fixed = pair.partition(SEPARATOR)
    if not sep or not moving or not fixed:
        raise ValueError(f"pair id {pair!r} is not of the form '<moving>{SEPARATOR}<fixed>'")
    return moving, fixed
