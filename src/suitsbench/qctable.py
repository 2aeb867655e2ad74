"""The affine QC's table (``affine/qc.tsv``), its per-image rows, the pairs it checks and
its messages: the parts of :mod:`suitsbench.affineqc` that load no torch (the workflow's parse
step and Table 2 use them).
"""
from __future__ import annotations

import csv
import math
import os
from typing import Sequence

import numpy as np

from suits.atomic import atomic_path
from suitsbench.errors import InputError
from suitsbench.pairid import split_pair_id

__all__ = ["COLUMNS", "ROLE_ORDER", "TRAIN_PAIRS_PER_IMAGE", "select_pairs", "image_rows",
           "write_qc", "read_qc", "flagged", "failure_message", "table_note"]

#: columns of ``affine/qc.tsv``
COLUMNS = ["kind", "id", "role", "n_pairs", "overlap", "nmi", "mind_ssd", "cost_zero",
           "cost_far", "shift_mm", "gain", "verdict", "reason"]
ROLE_ORDER = ("test", "val", "train")
#: training pairs per training image (:func:`select_pairs`)
TRAIN_PAIRS_PER_IMAGE = 3


def select_pairs(test: Sequence[str], val: Sequence[str], train: Sequence[str],
                 per_image: int = TRAIN_PAIRS_PER_IMAGE) -> dict[str, str]:
    """``{pair id: role}`` of the pairs to check: every test pair, every validation pair not
    among them, and training pairs in the given order, each taken when one of its images is
    in no pair yet or both are in fewer than ``per_image``: every image is checked, and a
    training image in about ``per_image`` pairs (its majority vote) at a cost linear in the
    number of images."""
    roles: dict[str, str] = {}
    count: dict[str, int] = {}

    def take(p: str, role: str) -> None:
        roles[p] = role
        for i in split_pair_id(p):
            count[i] = count.get(i, 0) + 1

    for role, pairs in (("test", test), ("val", val)):
        for p in pairs:
            if p not in roles:
                take(p, role)
    for p in train:
        if p in roles:
            continue
        n = [count.get(i, 0) for i in split_pair_id(p)]
        if min(n) == 0 or max(n) < per_image:
            take(p, "train")
    return roles


def _median(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if not math.isnan(x)], float)
    return float(np.median(v)) if v.size else float("nan")


def image_rows(pair_rows: Sequence[dict], ids: Sequence[str]) -> list[dict]:
    """One row per image of ``ids``: the median of the scores of its pairs, flagged when more
    than half of its pairs are (``misaligned`` before ``low_overlap``)."""
    out = []
    for image_id in ids:
        mine = [r for r in pair_rows if image_id in split_pair_id(r["id"])]
        row = {"kind": "image", "id": image_id,
               "role": min((r["role"] for r in mine), key=ROLE_ORDER.index, default=""),
               "n_pairs": len(mine)}
        for key in ("overlap", "nmi", "mind_ssd", "cost_zero", "cost_far", "shift_mm", "gain"):
            row[key] = _median([r[key] for r in mine])
        row["verdict"] = "ok"
        row["reason"] = f"ok in {len(mine)} of {len(mine)} pairs" if mine else "in no pair"
        for kind in ("misaligned", "low_overlap"):
            bad = [r["id"] for r in mine if r["verdict"] == kind]
            if 2 * len(bad) > len(mine):
                row["verdict"] = kind
                row["reason"] = f"{kind} in {len(bad)} of {len(mine)} pairs"
                break
        out.append(row)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if math.isinf(v) and v > 0 else f"{v:.4g}")
    return str(v)


def write_qc(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """``affine/qc.tsv``: a header of :data:`COLUMNS`, one line per row (atomic)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow([_fmt(r[c]) for c in COLUMNS])


def read_qc(path: str | os.PathLike) -> list[dict]:
    """Rows of a file of :func:`write_qc` (numbers as floats, ``n_pairs`` as int)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames != COLUMNS:
            raise InputError(str(path), "not an affine QC table (bad header)",
                             "re-run the affine_qc job")
        rows = []
        for r in reader:
            row = dict(r)
            row["n_pairs"] = int(r["n_pairs"])
            for c in COLUMNS[4:11]:
                row[c] = float(r[c])
            rows.append(row)
    return rows


def flagged(rows: Sequence[dict], kind: str | None = None, role: str | None = None
            ) -> list[dict]:
    """The rows whose verdict is not ``ok`` (of ``kind`` and ``role`` when given)."""
    return [r for r in rows if r["verdict"] != "ok" and (kind is None or r["kind"] == kind)
            and (role is None or r["role"] == role)]


def _names(rows: Sequence[dict], limit: int = 6) -> str:
    names = [f"{r['id']} ({r['verdict']})" for r in rows[:limit]]
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(names) + more


def failure_message(rows: Sequence[dict], where: str, stop: bool = False) -> str | None:
    """One line naming the flagged images and pairs (test pairs first) and the fix (``stop``:
    also how to continue anyway); None when every row is ok."""
    bad_images = flagged(rows, "image")
    bad_pairs = sorted(flagged(rows, "pair"), key=lambda r: ROLE_ORDER.index(r["role"]))
    if not bad_images and not bad_pairs:
        return None
    n_images = sum(r["kind"] == "image" for r in rows)
    n_pairs = sum(r["kind"] == "pair" for r in rows)
    n_test = sum(r["kind"] == "pair" and r["role"] == "test" for r in rows)
    bad_test = len(flagged(rows, "pair", "test"))
    parts = []
    if bad_images:
        parts.append(f"{len(bad_images)} of {n_images} images ({_names(bad_images)})")
    if bad_pairs:
        parts.append(f"{len(bad_pairs)} of {n_pairs} pairs, {bad_test} of {n_test} test "
                     f"pairs ({_names(bad_pairs)})")
    fix = ("check these scans' headers and fields of view or use affine.init: search "
           "(finds a partial scan in the other)")
    if stop:
        fix += ", or set affine.qc.on_failure: warn to continue"
    return (f"{where}: the affine stage left {' and '.join(parts)} misaligned or barely "
            f"overlapping; {fix}")


def table_note(rows: Sequence[dict], test_pairs: Sequence[str], where: str) -> str | None:
    """Table 2's caption line when a test pair or an image is flagged, else None."""
    test = set(test_pairs)
    bad = [r for r in flagged(rows, "pair") if r["id"] in test]
    bad_images = flagged(rows, "image")
    if not bad and not bad_images:
        return None
    mis = sum(r["verdict"] == "misaligned" for r in bad)
    low = len(bad) - mis
    text = (f"Affine QC: {len(bad)} of {len(test)} test pairs look misaligned"
            if bad else f"Affine QC: all {len(test)} test pairs ok")
    if low:
        text += f" ({mis} misaligned, {low} with little field-of-view overlap)"
    if bad_images:
        text += f"; images flagged: {', '.join(r['id'] for r in bad_images)}"
    return f"{text} ({where})"
