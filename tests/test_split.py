"""Train/test splits: unpaired cross products, k-fold, paired pairs, fixed splits."""
from __future__ import annotations

from pathlib import Path

import pytest

from suitsbench.manifest import Record
from suitsbench.pairid import pair_id
from suitsbench.split import make_split, select_test


def unpaired(n_ct: int, n_mr: int) -> list[Record]:
    return ([Record(f"c{i:02d}", "ct", Path(f"c{i}.nii"), None) for i in range(n_ct)]
            + [Record(f"m{i:02d}", "mr", Path(f"m{i}.nii"), None) for i in range(n_mr)])


def test_paper_unpaired_split_sizes():
    s = make_split(unpaired(20, 20), n_test=5, seed=0)
    assert len(s.test_ids) == 10 and len(s.train_ids) == 30
    assert len(s.test_pairs) == 25 and len(s.train_pairs) == 225
    assert not set(s.test_ids) & set(s.train_ids)
    test_ct = [i for i in s.test_ids if i.endswith("_ct")]
    test_mr = [i for i in s.test_ids if i.endswith("_mr")]
    assert len(test_ct) == len(test_mr) == 5
    assert s.test_pairs == sorted(pair_id(m, f) for m in test_ct for f in test_mr)
    assert all("__to__" in p and p.split("__to__")[0].endswith("_ct") for p in s.train_pairs)


def test_seed_determines_split():
    a = make_split(unpaired(10, 10), n_test=3, seed=1)
    b = make_split(unpaired(10, 10), n_test=3, seed=1)
    c = make_split(unpaired(10, 10), n_test=3, seed=2)
    assert a == b and a.test_ids != c.test_ids


def test_direction_follows_modalities():
    s = make_split(unpaired(4, 4), n_test=1, moving_modality="mr", fixed_modality="ct")
    assert all(p.split("__to__")[0].endswith("_mr") for p in s.test_pairs + s.train_pairs)


def test_kfold_covers_every_subject_once():
    recs = unpaired(20, 20)
    tests = [set(make_split(recs, n_test=0, folds=4, fold=f, seed=0).test_ids) for f in range(4)]
    assert all(len(t) == 10 for t in tests)
    assert set().union(*tests) == {r.id for r in recs}
    assert sum(len(t) for t in tests) == 40


def test_select_test_bad_fold():
    with pytest.raises(ValueError, match="fold"):
        select_test(["a", "b"], 1, folds=2, fold=2)


def test_paired_uses_manifest_pairs():
    recs = []
    for i in range(6):
        recs += [Record(f"case{i}", "mr", Path("a"), None, role="moving", pair=f"k{i}"),
                 Record(f"case{i}", "us", Path("b"), None, role="fixed", pair=f"k{i}")]
    s = make_split(recs, n_test=2, pairing="paired", moving_modality="mr", fixed_modality="us")
    assert len(s.test_pairs) == 2 and len(s.train_pairs) == 4
    for p in s.test_pairs + s.train_pairs:
        m, f = p.split("__to__")
        assert m.endswith("_mr") and f.endswith("_us") and m[:-3] == f[:-3]
    assert len(s.test_ids) == 4


def test_fixed_split_column_and_test_subjects():
    recs = [Record(f"c{i}", mod, Path("x"), None, pair=f"c{i}", split="test" if i < 2 else "train")
            for i in range(5) for mod in ("mr", "us")]
    s = make_split(recs, n_test=3, pairing="paired", moving_modality="mr", fixed_modality="us")
    assert s.test_pairs == ["c0_mr__to__c0_us", "c1_mr__to__c1_us"]
    s2 = make_split(unpaired(5, 5), n_test=1, test_subjects=["c01", "m03", "m04"])
    assert s2.test_ids == ["c01_ct", "m03_mr", "m04_mr"] and len(s2.test_pairs) == 2


def test_shared_subjects_stay_on_one_side():
    """Learn2Reg-like: some patients have both CT and MR; none may straddle train and test."""
    recs = ([Record(f"s{i}", "ct", Path("x"), None) for i in range(8)]
            + [Record(f"s{i}", "mr", Path("x"), None) for i in range(4, 12)])
    for seed in range(10):
        s = make_split(recs, n_test=2, seed=seed)
        test_subj = {i.rsplit("_", 1)[0] for i in s.test_ids}
        train_subj = {i.rsplit("_", 1)[0] for i in s.train_ids}
        assert not test_subj & train_subj
        assert sum(i.endswith("_ct") for i in s.test_ids) == 2
        assert sum(i.endswith("_mr") for i in s.test_ids) >= 2
    folds = [set(make_split(recs, n_test=0, folds=4, fold=f).test_ids) for f in range(4)]
    assert set().union(*folds) == {r.id for r in recs} and sum(map(len, folds)) == 16


def test_validation_subjects_come_from_the_training_side():
    base = make_split(unpaired(8, 8), n_test=3, seed=0)
    s = make_split(unpaired(8, 8), n_test=3, seed=0, n_val=2)
    assert s.test_ids == base.test_ids and s.test_pairs == base.test_pairs
    assert sorted(s.train_ids + s.val_ids) == base.train_ids
    assert not set(s.val_ids) & set(s.train_ids)
    assert len(s.val_ids) == 4 and len(s.val_pairs) == 4 and len(s.train_pairs) == 9
    val_ct = [i for i in s.val_ids if i.endswith("_ct")]
    val_mr = [i for i in s.val_ids if i.endswith("_mr")]
    assert s.val_pairs == sorted(pair_id(m, f) for m in val_ct for f in val_mr)
    assert make_split(unpaired(8, 8), n_test=3, seed=0, n_val=0).val_pairs == []


def test_manifest_val_marks_fix_the_validation_set():
    recs = [Record(f"s{i}", m, Path(f"{m}{i}.nii"), None, pair=f"k{i}",
                   split="test" if i < 2 else "val" if i == 2 else "train")
            for i in range(6) for m in ("ct", "mr")]
    s = make_split(recs, n_test=1, pairing="paired")
    assert s.test_pairs == [pair_id("s0_ct", "s0_mr"), pair_id("s1_ct", "s1_mr")]
    assert s.val_pairs == [pair_id("s2_ct", "s2_mr")]
    assert len(s.train_pairs) == 3
