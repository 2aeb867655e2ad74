"""The settings tools of benchmarks/ read a run's inputs from aligned/ or, without the affine
stage, from prep/, and score its validation pairs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from suits.io import save_labels, save_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sweep_settings  # noqa: E402

SHAPE = (6, 5, 4)


def write_case(folder: Path, id_: str, value: float, label_value: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_volume(folder / f"{id_}_image.nii.gz", np.full(SHAPE, value, np.float32), np.eye(4))
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:4, 1:4, 1:3] = label_value
    save_labels(folder / f"{id_}_label.nii.gz", lab, np.eye(4))


def write_run(root: Path, stage: str, val_pairs: list[str]) -> Path:
    for i, id_ in enumerate(("a_mr", "a_us", "b_mr", "b_us")):
        write_case(root / stage, id_, float(i), 1)
    split = {"train_pairs": ["a_mr__to__a_us"], "val_pairs": val_pairs,
             "test_pairs": ["b_mr__to__b_us"]}
    (root / "split.json").write_text(json.dumps(split))
    return root


def test_input_dir_is_prep_without_the_affine_stage(tmp_path):
    assert sweep_settings.input_dir(tmp_path) == tmp_path / "prep"
    (tmp_path / "aligned").mkdir()
    assert sweep_settings.input_dir(tmp_path) == tmp_path / "aligned"


def test_validation_pairs_load_from_prep(tmp_path):
    run = write_run(tmp_path, "prep", ["b_mr__to__b_us"])
    pairs = sweep_settings.load_pairs(run, "val_pairs")
    assert len(pairs) == 1
    fixed, moving = pairs[0][0], pairs[0][1]
    assert float(fixed.mean()) == 3.0 and float(moving.mean()) == 2.0   # b_us, b_mr
    # identical labels: the identity field scores Dice 1
    assert sweep_settings.pair_dice(pairs, lambda f, m, fa: torch.zeros(1, 3, *SHAPE)) == [1.0]


def test_missing_validation_pairs_name_the_fix(tmp_path):
    run = write_run(tmp_path, "prep", [])
    with pytest.raises(SystemExit, match="no val_pairs.*split.n_val"):
        sweep_settings.load_pairs(run, "val_pairs")
