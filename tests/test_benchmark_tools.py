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


@pytest.mark.slow
def test_bench_fov_slab_regions_are_the_slab_variants_scans(tmp_path):
    """The slab region of each full-field-of-view MR holds as many voxels as the slab
    variant's scan of the same patient covers, and nearly the same organ voxels."""
    import bench_fov

    full = bench_fov.prepare(tmp_path / "full", 2, bench_fov.VARIANTS["full"])
    slab = bench_fov.prepare(tmp_path / "slab", 2, bench_fov.VARIANTS["slab"])
    regions = bench_fov.slab_regions(full, 2)
    assert sorted(regions) == ["p002_mr", "p003_mr"]
    for key, region in regions.items():
        assert 0 < region.sum() < region.size
        assert region.sum() == (slab[key][3] > 0).sum()
        organs_full = (full[key][2][region] > 0).sum()
        organs_slab = (slab[key][2] > 0).sum()
        assert abs(organs_full - organs_slab) < 0.1 * organs_slab


def test_suits_claim_all_pairs_and_fov_masks(tmp_path):
    """suits_claim --pairs all: every moving x fixed pair of the run's subjects (train, val and
    test alike); pairs carry the aligned field-of-view masks when the run has them. In a
    subprocess: the script tunes the process that imports it."""
    import subprocess

    run = write_run(tmp_path, "aligned", ["a_mr__to__b_us"])
    for id_ in ("a_mr", "a_us"):
        fov = np.ones(SHAPE, np.uint8)
        fov[0] = 0
        save_labels(run / "aligned" / f"{id_}_fov.nii.gz", fov, np.eye(4))
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import suits_claim\n"
        "run = Path(sys.argv[2])\n"
        "print(suits_claim.split_pairs(run, 'all', 0))\n"
        "with_masks = suits_claim.load_pairs(run, ['a_mr__to__a_us'])[0]\n"
        "without = suits_claim.load_pairs(run, ['b_mr__to__b_us'])[0]\n"
        "print(tuple(with_masks['fixed_fov'].shape), float(with_masks['moving_fov'][0, 0, 0].max()),"
        " 'fixed_fov' in without)\n"
    )
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    out = subprocess.run([sys.executable, "-c", code, str(bench), str(run)], check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert out[0] == str(["a_mr__to__a_us", "a_mr__to__b_us", "b_mr__to__a_us", "b_mr__to__b_us"])
    assert out[1] == f"{(1, 1, *SHAPE)} 0.0 False"
