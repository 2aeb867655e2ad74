"""Training pairs of ``suits train``: the pairs TSV and its images.

The TSV has a header with the columns ``PAIR_COLUMNS`` (``fixed_image``, ``moving_image``,
``fixed_labels``, ``moving_labels``) and optionally ``MASK_COLUMNS`` (``fixed_fov``,
``moving_fov``: field-of-view masks, 1 = voxel from the scan, 0 = padding; both or neither),
tab separated; lines starting with ``#`` are comments and relative paths resolve against the
TSV's folder. A problem with the file or its images raises
:class:`PairsError`, a ``ValueError`` whose message is one line naming the file and line.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["PAIR_COLUMNS", "MASK_COLUMNS", "PairsError", "read_pairs", "load_pairs"]

PAIR_COLUMNS = ("fixed_image", "moving_image", "fixed_labels", "moving_labels")
MASK_COLUMNS = ("fixed_fov", "moving_fov")


class PairsError(ValueError):
    """A pairs TSV, or an image it names, that cannot be used."""


def _existing(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise PairsError(f"{what}: file not found: {p}")
    return p


def read_pairs(tsv: str | os.PathLike, allow_empty: bool = False) -> list[dict[str, Path]]:
    """Rows of a pairs TSV as dicts of resolved paths (checked to exist); a file without rows
    is an error unless ``allow_empty`` (e.g. an optional validation set)."""
    tsv = _existing(tsv, "pairs file")
    with open(tsv, newline="") as fh:
        reader = csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t")
        missing = [c for c in PAIR_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PairsError(f"{tsv}: missing column(s) {', '.join(missing)}; the header must hold "
                             f"{', '.join(PAIR_COLUMNS)} (tab-separated)")
        masks = [c for c in MASK_COLUMNS if c in (reader.fieldnames or [])]
        if masks and len(masks) != len(MASK_COLUMNS):
            raise PairsError(f"{tsv}: column {masks[0]} without "
                             f"{[c for c in MASK_COLUMNS if c not in masks][0]}; give both "
                             "field-of-view mask columns or neither")
        rows = []
        for n, row in enumerate(reader, start=2):
            paths = {}
            for c in (*PAIR_COLUMNS, *masks):
                value = (row.get(c) or "").strip()
                if not value:
                    raise PairsError(f"{tsv}, line {n}: empty {c}")
                p = Path(value)
                p = p if p.is_absolute() else tsv.parent / p
                paths[c] = _existing(p, f"{tsv}, line {n}, {c}")
            rows.append(paths)
    if not rows and not allow_empty:
        raise PairsError(f"{tsv}: no pairs")
    return rows


def load_pairs(rows: Sequence[Mapping[str, Path]], source: str | os.PathLike) -> list[dict]:
    """The images of :func:`read_pairs` rows as the pair dicts of ``suits.train.train_suits``
    (``fixed``, ``moving``, ``fixed_labels``, ``moving_labels``, and ``fixed_fov``,
    ``moving_fov`` when the rows have masks), each pair checked to lie on one grid
    (``source``, the TSV, names the file in the message)."""
    from suits.io import load_labels, load_volume

    pairs = []
    for row in rows:
        pair = {"fixed": load_volume(row["fixed_image"])[0], "moving": load_volume(row["moving_image"])[0],
                "fixed_labels": load_labels(row["fixed_labels"])[0],
                "moving_labels": load_labels(row["moving_labels"])[0]}
        for c in MASK_COLUMNS:
            if c in row:
                pair[c] = load_volume(row[c])[0]
        grids = {c: tuple(v.shape[-3:]) for c, v in pair.items()}
        if len(set(grids.values())) != 1:
            raise PairsError(f"{source}: pair {row['moving_image'].name} -> {row['fixed_image'].name} "
                             f"has images on different grids {grids}; resample them onto one grid first")
        pairs.append(pair)
    return pairs
