"""Validation: every bad input raises one InputError line naming the row/file and the fix."""
from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from suitsbench.errors import InputError, InputErrors
from suitsbench.manifest import read_manifest, write_manifest
from suitsbench.validate import check_labels_config, validate_config, validate_records

LABELS = {1: "liver", 2: "spleen"}
SHAPE = (6, 5, 4)
COLUMNS = ("subject", "modality", "image", "label", "role", "pair", "split")


def _nii(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> str:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path.name


def _case(tmp: Path, name: str, image=None, label=None) -> dict:
    rng = np.random.default_rng(len(name))
    img = rng.normal(size=SHAPE).astype(np.float32) if image is None else image
    lab = np.zeros(SHAPE, np.uint8) if label is None else label
    if label is None:
        lab[1:3, 1:3, 1:3] = 1
        lab[3:5, 2:4, 1:3] = 2
    return dict(image=_nii(tmp / f"{name}_img.nii.gz", img),
                label=_nii(tmp / f"{name}_lab.nii.gz", lab))


def dataset(tmp: Path, n: int = 3, modalities=("ct", "mr"), **overrides) -> Path:
    """A valid unpaired manifest of n subjects per modality; ``overrides[id]`` replaces the
    image/label arrays of one case (dict with 'image'/'label')."""
    rows = []
    for k, mod in enumerate(modalities):
        for i in range(n):
            subj = f"{mod}{i}"
            case = _case(tmp, f"{subj}_{mod}", **overrides.get(f"{subj}_{mod}", {}))
            rows.append(dict(subject=subj, modality=mod, **case))
    return write_manifest(tmp / "manifest.tsv", rows, COLUMNS)


def run(manifest: Path, **kw):
    kw.setdefault("n_test", 1)
    return validate_records(read_manifest(manifest), kw.pop("labels", LABELS), **kw)


def expect(manifest: Path, needle: str, row: int | None = None, file: str | None = None, **kw):
    with pytest.raises(InputError) as exc:
        run(manifest, **kw)
    msg = str(exc.value)
    assert needle in msg, msg
    lines = msg.splitlines()                              # one line per problem, with a fix
    if isinstance(exc.value, InputErrors):
        assert lines[0] == f"{len(lines) - 1} input problems (one per line):", msg
        lines = lines[1:]
    else:
        assert len(lines) == 1, msg
    assert all("; " in line for line in lines), msg
    if row is not None:
        assert f"{manifest}:{row}" in msg, msg
    if file is not None:
        assert file in msg, msg
    return msg


def test_valid_dataset_passes(tmp_path):
    split = run(dataset(tmp_path))
    assert len(split.test_pairs) == 1 and len(split.train_pairs) == 4


def test_missing_file(tmp_path):
    m = dataset(tmp_path)
    (tmp_path / "ct1_ct_lab.nii.gz").unlink()
    expect(m, "file not found", row=3, file="ct1_ct_lab.nii.gz")


def test_truncated_gzip(tmp_path):
    m = dataset(tmp_path)
    p = tmp_path / "mr2_mr_img.nii.gz"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    expect(m, "corrupt", row=7, file="mr2_mr_img.nii.gz")


def test_corrupt_gzip_payload(tmp_path):
    m = dataset(tmp_path)
    p = tmp_path / "ct0_ct_img.nii.gz"
    raw = bytearray(p.read_bytes())
    raw[40:60] = b"\x00" * 20                             # damage the deflate stream
    p.write_bytes(bytes(raw))
    expect(m, "corrupt", row=2, file="ct0_ct_img.nii.gz")


def test_not_a_nifti(tmp_path):
    m = dataset(tmp_path)
    with gzip.open(tmp_path / "ct0_ct_img.nii.gz", "wb") as fh:
        fh.write(b"hello, not an image" * 30)
    expect(m, "NIfTI", row=2, file="ct0_ct_img.nii.gz")


def test_shape_mismatch(tmp_path):
    m = dataset(tmp_path, ct1_ct={"label": np.zeros((6, 5, 5), np.uint8)})
    expect(m, "differs from image shape", row=3, file="ct1_ct_lab.nii.gz")


def test_affine_mismatch(tmp_path):
    m = dataset(tmp_path)
    lab = np.zeros(SHAPE, np.uint8)
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    _nii(tmp_path / "mr0_mr_lab.nii.gz", lab, shifted)
    expect(m, "affine differs", row=5, file="mr0_mr_lab.nii.gz")


def test_affine_within_tolerance_passes(tmp_path):
    m = dataset(tmp_path)
    aff = np.eye(4)
    aff[0, 3] = 1e-4
    _nii(tmp_path / "mr0_mr_lab.nii.gz", np.zeros(SHAPE, np.uint8), aff)
    run(m)


def test_unknown_label_value(tmp_path):
    lab = np.zeros(SHAPE, np.uint8)
    lab[0, 0, 0] = 7
    m = dataset(tmp_path, mr1_mr={"label": lab})
    expect(m, "[7] not in data.labels", row=6, file="mr1_mr_lab.nii.gz")


def test_non_integer_index_label(tmp_path):
    lab = np.zeros(SHAPE, np.float32)
    lab[0, 0, 0] = 0.5
    m = dataset(tmp_path, mr1_mr={"label": lab})
    expect(m, "non-integer", row=6, file="mr1_mr_lab.nii.gz")


def test_multichannel_labels(tmp_path):
    ok = np.zeros(SHAPE + (2,), np.float64)
    ok[1:3, 1:3, 1:3, 0] = 1
    ok[3:5, 1:3, 1:3, 1] = 1
    (tmp_path / "a").mkdir()
    run(dataset(tmp_path / "a", ct0_ct={"label": ok}))
    extra = np.zeros(SHAPE + (3,), np.float64)
    extra[0, 0, 0, 2] = 1                                  # channel 2 = label value 3
    (tmp_path / "b").mkdir()
    m = dataset(tmp_path / "b", ct0_ct={"label": extra})
    expect(m, "label value(s) [3]", row=2, file="ct0_ct_lab.nii.gz")
    bad = ok * 2.0
    (tmp_path / "c").mkdir()
    expect(dataset(tmp_path / "c", ct0_ct={"label": bad}), "expected [0, 1]", row=2)


def test_nan_voxels(tmp_path):
    img = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    img[2, 2, 2] = np.nan
    m = dataset(tmp_path, ct2_ct={"image": img})
    expect(m, "NaN/inf", row=4, file="ct2_ct_img.nii.gz")


def test_inf_voxels(tmp_path):
    img = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    img[0, 0, 0] = np.inf
    m = dataset(tmp_path, ct2_ct={"image": img})
    expect(m, "NaN/inf", row=4, file="ct2_ct_img.nii.gz")


def test_constant_image(tmp_path):
    m = dataset(tmp_path, mr0_mr={"image": np.full(SHAPE, 3.0, np.float32)})
    expect(m, "constant", row=5, file="mr0_mr_img.nii.gz")


def test_unknown_modality(tmp_path):
    m = dataset(tmp_path, modalities=("ct", "mri"))
    expect(m, "modality 'mri'", row=5)


def test_too_few_subjects(tmp_path):
    m = dataset(tmp_path, n=2)
    msg = expect(m, "the split needs at least 3", n_test=2)
    assert "split.n_test" in msg
    expect(m, "needs at least 3", n_test=1, folds=3)


def test_subject_in_train_and_test(tmp_path):
    rows = [dict(subject=f"s{i}", modality=mod, split=split, **_case(tmp_path, f"s{i}_{mod}"))
            for i, mod, split in [(0, "ct", "train"), (1, "ct", "test"), (0, "mr", "test"),
                                  (2, "mr", "train")]]
    m = write_manifest(tmp_path / "m.tsv", rows, COLUMNS)
    expect(m, "subject s0 is in 'test' here and in 'train'", row=4)


def test_fixed_test_list_clashing_with_manifest_split(tmp_path):
    rows = [dict(subject=f"s{i}", modality=mod, split=split, **_case(tmp_path, f"s{i}_{mod}"))
            for i, mod, split in [(0, "ct", "train"), (1, "ct", "test"), (2, "mr", "test"),
                                  (3, "mr", "train")]]
    m = write_manifest(tmp_path / "m.tsv", rows, COLUMNS)
    run(m)
    expect(m, "subject(s) ['s0'] are in the train split", test_subjects=["s0", "s1"])


def test_subject_in_train_and_test_pairs(tmp_path):
    """Paired data whose pairs cross patients (a->b, b->a): a split over pairs puts patient a
    in a training and a test pair; validation reports the leakage."""
    rows = [dict(subject=subj, modality=mod, pair=pair, **_case(tmp_path, f"{subj}_{mod}"))
            for pair, subj, mod in [("k0", "a", "mr"), ("k0", "b", "us"),
                                    ("k1", "b", "mr"), ("k1", "a", "us")]]
    m = write_manifest(tmp_path / "m.tsv", rows, COLUMNS)
    msg = expect(m, "would be in train and test", pairing="paired", moving_modality="mr",
                 fixed_modality="us", read_files=False)
    assert "split' column" in msg


def test_empty_pair_list(tmp_path):
    m = dataset(tmp_path)
    rows = m.read_text().splitlines()
    rows = [rows[0]] + [r + "train" for r in rows[1:]]     # fixed split without test rows
    m.write_text("\n".join(rows) + "\n")
    expect(m, "no test pairs")


def test_paired_without_partner(tmp_path):
    rows = []
    for i in range(3):
        for mod in ("mr", "us"):
            if i == 2 and mod == "us":
                continue
            rows.append(dict(subject=f"c{i}", modality=mod, pair=f"c{i}",
                             **_case(tmp_path, f"c{i}_{mod}")))
    m = write_manifest(tmp_path / "m.tsv", rows, COLUMNS)
    expect(m, "no 'us' partner", row=6, pairing="paired", moving_modality="mr",
           fixed_modality="us")


def test_missing_label_when_required(tmp_path):
    m = dataset(tmp_path)
    rows = m.read_text().splitlines()
    cols = rows[3].split("\t")
    cols[3] = ""
    rows[3] = "\t".join(cols)
    m.write_text("\n".join(rows) + "\n")
    expect(m, "no label for ct2_ct", row=4)
    run(m, require_labels=False)


def test_labels_config_checks():
    assert check_labels_config({"1": "a", 2: "b"}) == {1: "a", 2: "b"}
    with pytest.raises(InputError, match="data.evaluate"):
        check_labels_config({1: "a"}, ["b"])
    with pytest.raises(InputError, match="data.labels.0"):
        check_labels_config({0: "bg"})
    with pytest.raises(InputError, match="used twice"):
        check_labels_config({1: "a", 2: "a"})


def test_prostate_set_validates(prostate_dir):
    root = Path(__file__).resolve().parents[1]
    recs = read_manifest(root / "config" / "prostate-mr-us.tsv")
    split = validate_records(recs, {1: "gland", 2: "landmark_1", 3: "landmark_2"},
                             moving_modality="mr", fixed_modality="us", pairing="paired",
                             evaluate=["gland"])
    # every 5th of the 25 training pairs is marked 'val' in the manifest
    assert len(split.train_pairs) == 20 and len(split.test_pairs) == 2
    assert [p.split("_")[0] for p in split.val_pairs] == [
        f"case0000{i:02d}" for i in (4, 9, 14, 19, 24)]
    assert not set(split.val_pairs) & set(split.train_pairs)
    with pytest.raises(InputError, match=r"channel\(s\)"):
        validate_records(recs, {1: "gland"}, moving_modality="mr", fixed_modality="us",
                         pairing="paired")


def test_validate_config(tmp_path):
    m = dataset(tmp_path)
    cfg = {"seed": 1, "data": {"manifest": str(m), "labels": {1: "liver", 2: "spleen"},
                               "evaluate": ["liver"], "moving_modality": "ct",
                               "fixed_modality": "mr", "pairing": "unpaired"},
           "split": {"n_test": 1, "folds": 1}}
    records, split = validate_config(cfg)
    assert len(records) == 6 and len(split.test_pairs) == 1
    cfg["data"]["evaluate"] = ["kidney"]
    with pytest.raises(InputError, match="data.evaluate"):
        validate_config(cfg)
    with pytest.raises(InputError, match="data.manifest"):
        validate_config({"data": {}})


def test_every_bad_file_is_reported_in_one_run(tmp_path):
    """Three broken cases (a NaN image, an unknown label value, a missing label file) and a
    good one: one run names all three, one line each, and not the good one."""
    nan = np.zeros(SHAPE, np.float32)
    nan[0, 0, 0] = np.nan
    bad_label = np.zeros(SHAPE, np.uint8)
    bad_label[1, 1, 1] = 9
    m = dataset(tmp_path, **{"ct0_ct": {"image": nan}, "mr1_mr": {"label": bad_label}})
    (tmp_path / "ct2_ct_lab.nii.gz").unlink()
    with pytest.raises(InputErrors) as exc:
        run(m)
    lines = str(exc.value).splitlines()
    assert lines[0] == "3 input problems (one per line):"
    assert len(exc.value.errors) == 3
    assert "ct0_ct_img" in lines[1] and "NaN" in lines[1]
    assert "ct2_ct_lab" in lines[2] and "file not found" in lines[2]
    assert "mr1_mr_lab" in lines[3] and "[9]" in lines[3]
    assert not any("ct1" in line or "mr0" in line for line in lines)


def test_every_bad_manifest_row_is_reported(tmp_path):
    m = tmp_path / "manifest.tsv"
    m.write_text("subject\tmodality\timage\tlabel\tsplit\n"
                 "a\tct\ta.nii\t\ttrain\n"
                 "b c\tct\tb.nii\t\t\n"
                 "d\tmr\t\t\t\n"
                 "e\tmr\te.nii\t\tvalidation\n"
                 "a\tct\tf.nii\t\t\n")
    with pytest.raises(InputErrors) as exc:
        read_manifest(m)
    lines = str(exc.value).splitlines()[1:]
    assert [line.split(": ")[0] for line in lines] == [f"{m}:{n}" for n in (3, 4, 5, 6)]
