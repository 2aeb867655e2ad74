"""Which pairs the groupwise affine stage registers (:mod:`suitsbench.groupwise`): one row of
pairwise transforms per image, each row one workflow job. Light: imported by the workflow's
rule definitions."""
from __future__ import annotations

from typing import Sequence

__all__ = ["DIRECTIONS", "partners"]

DIRECTIONS = ("both", "one")


def partners(ids: Sequence[str], fixed_id: str, directions: str = "both") -> list[str]:
    """The images that the row of ``fixed_id`` registers (as moving images).

    ``"both"``: every other image, so every pair is registered in both directions and
    :func:`suitsbench.groupwise.groupwise_mean` averages the two. ``"one"``: every unordered pair once, the rows
    balanced (a round robin over the order of ``ids``: image ``k`` takes the next
    ``(N - 1) // 2`` images cyclically, and for even ``N`` the first half also takes the image
    ``N / 2`` ahead); the mean uses the inverse for the other direction.
    """
    ids = list(ids)
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}")
    k, n = ids.index(fixed_id), len(ids)
    if directions == "both":
        return [j for j in ids if j != fixed_id]
    ahead = list(range(1, (n - 1) // 2 + 1))
    if n % 2 == 0 and k < n // 2:
        ahead.append(n // 2)
    return [ids[(k + d) % n] for d in ahead]
