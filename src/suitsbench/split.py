"""Train/test split of a manifest into image ids and registration pairs.

Unpaired (the paper's inter-patient setting): subjects are split per modality; the test pairs
are every test moving image x every test fixed image (paper: 5 x 5 = 25), the training pairs
every training moving x every training fixed (15 x 15 = 225). Paired: the unit is the pair
(the manifest's ``pair`` column, else the subject), and the pairs are the manifest's pairs.
A fixed split (the manifest's ``split`` column, or ``test_subjects``) overrides the random one.
Validation (``n_val``): the same rule again on the training side, so validation subjects (or
pair keys) are never test subjects and never training subjects; the validation pairs are the
pairs among validation images, the training pairs those among the remaining training images.
Pair ids are ``suitsbench.pairid.pair_id(moving_id, fixed_id)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from suitsbench.errors import InputError
from suitsbench.manifest import Record
from suitsbench.pairid import pair_id

__all__ = ["Split", "make_split", "carve_validation", "select_test"]


@dataclass(frozen=True)
class Split:
    """Image ids and pair ids of one fold (all lists sorted)."""

    train_ids: list[str]
    test_ids: list[str]
    train_pairs: list[str]
    test_pairs: list[str]
    val_ids: list[str] = field(default_factory=list)
    val_pairs: list[str] = field(default_factory=list)


def select_test(units: Sequence[str], n_test: int, folds: int = 1, fold: int = 0,
                seed: int = 0) -> list[str]:
    """Choose the test units: shuffle the sorted units with ``seed``; with ``folds == 1`` take
    the first ``n_test``, with ``folds > 1`` the ``fold``-th of ``folds`` near-equal parts
    (``n_test`` ignored)."""
    units = sorted(set(units))
    order = [units[i] for i in np.random.default_rng(seed).permutation(len(units))]
    if folds > 1:
        if not 0 <= fold < folds:
            raise InputError("split.fold", f"fold {fold} outside 0..{folds - 1}",
                             "choose a fold below split.folds")
        return sorted(np.array_split(np.array(order, dtype=object), folds)[fold].tolist())
    return sorted(order[:n_test])


def _fixed_test(records: Sequence[Record], test_subjects: Sequence[str] | None) -> set | None:
    if test_subjects is not None:
        return set(test_subjects)
    marked = [r for r in records if r.split]
    if not marked:
        return None
    return {r.subject for r in marked if r.split == "test"}


def make_split(records: Sequence[Record], n_test: int, folds: int = 1, fold: int = 0,
               seed: int = 0, pairing: str = "unpaired", moving_modality: str = "ct",
               fixed_modality: str = "mr", test_subjects: Sequence[str] | None = None,
               n_val: int = 0) -> Split:
    """Split ``records`` into train/test image ids and pair ids (see the module docstring).

    Unpaired: per modality, ``n_test`` subjects go to test (or fold ``fold`` of ``folds``);
    a subject id present in both modalities (same patient) goes to the same side as its
    moving image, the remaining fixed subjects fill up the fixed test set.
    Paired: the same over pair keys. ``test_subjects`` (or the manifest's ``split`` column)
    fixes the test subjects instead. Records of other modalities are ignored here (validation
    rejects them). ``n_val`` subjects per modality (pair keys when paired) of the training side
    become validation subjects (:func:`carve_validation`).
    """
    split = _train_test(records, n_test, folds, fold, seed, pairing, moving_modality,
                        fixed_modality, test_subjects)
    if n_val > 0 or any(r.split == "val" for r in records):
        return carve_validation(split, records, n_val, seed, pairing, moving_modality,
                                fixed_modality)
    return split


def carve_validation(split: Split, records: Sequence[Record], n_val: int, seed: int = 0,
                     pairing: str = "unpaired", moving_modality: str = "ct",
                     fixed_modality: str = "mr") -> Split:
    """Move ``n_val`` training subjects per modality (unpaired; a subject imaged in both
    modalities follows its moving image) or ``n_val`` training pair keys (paired) to a
    validation set, chosen like the test set with the seed ``seed + 2``; subjects marked
    ``val`` in the manifest's ``split`` column form the validation set instead."""
    train_ids = set(split.train_ids)
    # the manifest's train/test marks have done their work; only 'val' marks matter here
    train = [replace(r, split=None) for r in records if r.id in train_ids]
    marked = {r.subject for r in records if r.id in train_ids and r.split == "val"}
    val_split = _train_test(train, n_val, 1, 0, seed + 2, pairing, moving_modality,
                            fixed_modality, sorted(marked) or None)
    # _train_test's "test" side of the training records is the validation set
    return Split(val_split.train_ids, split.test_ids, val_split.train_pairs, split.test_pairs,
                 val_split.test_ids, val_split.test_pairs)


def _train_test(records: Sequence[Record], n_test: int, folds: int, fold: int, seed: int,
                pairing: str, moving_modality: str, fixed_modality: str,
                test_subjects: Sequence[str] | None) -> Split:
    moving_modality, fixed_modality = moving_modality.lower(), fixed_modality.lower()
    fixed_test = _fixed_test(records, test_subjects)
    mov = [r for r in records if r.modality == moving_modality]
    fix = [r for r in records if r.modality == fixed_modality]
    if pairing == "unpaired":
        test_ids, train_ids = set(), set()
        mov_subj = {r.subject for r in mov}
        if fixed_test is not None:
            test_mov = mov_subj & fixed_test
            test_fix = {r.subject for r in fix} & fixed_test
        else:
            test_mov = set(select_test(sorted(mov_subj), n_test, folds, fold, seed))
            # a subject imaged in both modalities follows its moving image (no leakage);
            # the other fixed subjects are split on their own
            shared = {r.subject for r in fix} & mov_subj
            free = sorted({r.subject for r in fix} - mov_subj)
            forced = shared & test_mov
            test_fix = forced | set(select_test(free, max(0, n_test - len(forced)), folds,
                                                fold, seed + 1))
        for group, test_subj in ((mov, test_mov), (fix, test_fix)):
            for r in group:
                (test_ids if r.subject in test_subj else train_ids).add(r.id)

        def pairs(ids: set) -> list[str]:
            return sorted(pair_id(m.id, f.id) for m in mov for f in fix
                          if m.id in ids and f.id in ids)
        return Split(sorted(train_ids), sorted(test_ids), pairs(train_ids), pairs(test_ids))
    if pairing != "paired":
        raise InputError("data.pairing", f"unknown pairing {pairing!r}",
                         "use 'unpaired' or 'paired'")
    key = lambda r: r.pair or r.subject  # noqa: E731
    by_key: dict[str, dict[str, Record]] = {}
    for r in mov + fix:
        by_key.setdefault(key(r), {})[r.modality] = r
    complete = {k: v for k, v in by_key.items() if len(v) == 2}
    if fixed_test is not None:
        test_keys = {k for k, v in complete.items() if any(r.subject in fixed_test
                                                           for r in v.values())}
    else:
        test_keys = set(select_test(list(complete), n_test, folds, fold, seed))
    split: dict[bool, tuple[set, list]] = {True: (set(), []), False: (set(), [])}
    for k, v in complete.items():
        ids, prs = split[k in test_keys]
        m, f = v[moving_modality], v[fixed_modality]
        ids.update((m.id, f.id))
        prs.append(pair_id(m.id, f.id))
    return Split(sorted(split[False][0]), sorted(split[True][0]), sorted(split[False][1]),
                 sorted(split[True][1]))
