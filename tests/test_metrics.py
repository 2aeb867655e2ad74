"""Tests for suitsbench.metrics: Dice, HD95 and Jacobian statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from suitsbench import metrics
from suitsbench.pairid import split_pair_id


def _grid_mm(shape, spacing):
    return np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")


def _sphere(shape, spacing, centre_mm, radius_mm):
    x = _grid_mm(shape, spacing)
    return sum((xi - ci) ** 2 for xi, ci in zip(x, centre_mm)) <= radius_mm**2


def test_dice_offset_cubes_exact():
    a = np.zeros((30, 30, 30), np.uint8)
    b = np.zeros_like(a)
    a[5:15, 5:15, 5:15] = 1
    b[8:18, 5:15, 5:15] = 1  # offset 3 along i: overlap 7*10*10
    a[20:25, 20:25, 20:25] = 2  # label 2 only in a
    out = metrics.dice(a, b, [1, 2, 3])
    assert out[1] == pytest.approx(2 * 700 / 2000)
    assert out[2] == 0.0
    assert math.isnan(out[3])  # absent from both


def test_dice_offset_spheres_matches_lens_volume():
    r, d = 10.0, 6.0
    shape = (48, 40, 40)
    a = _sphere(shape, (1, 1, 1), (18, 20, 20), r)
    b = _sphere(shape, (1, 1, 1), (18 + d, 20, 20), r)
    # two equal spheres at distance d intersect in a lens of volume pi (4r+d)(2r-d)^2 / 12
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    expected = lens / (4 / 3 * math.pi * r**3)
    got = metrics.dice(a.astype(np.uint8), b.astype(np.uint8), [1])[1]
    assert got == pytest.approx(expected, abs=0.02)


def test_identical_masks_torch_and_5d_shape():
    rng = np.random.default_rng(1)
    lab = (ndimage.gaussian_filter(rng.normal(size=(20, 22, 24)), 2) > 0).astype(np.int64)
    t = torch.from_numpy(lab)[None, None]
    assert metrics.dice(t, lab, [1])[1] == 1.0
    assert metrics.hd95(t, lab, (1.0, 2.0, 3.0), [1])[1] == 0.0


@pytest.mark.parametrize("reduction", ["pooled", "max"])
def test_hd95_concentric_spheres_anisotropic(reduction):
    spacing = (1.0, 1.5, 2.0)
    shape = (64, 44, 34)
    centre = (32.0, 33.0, 33.0)
    r1, r2 = 9.0, 17.0
    a = _sphere(shape, spacing, centre, r1).astype(np.uint8)
    b = _sphere(shape, spacing, centre, r2).astype(np.uint8)
    got = metrics.hd95(a, b, spacing, [1], reduction=reduction)[1]
    assert abs(got - (r2 - r1)) <= max(spacing)
    # the spacing matters: the same voxels read as isotropic 1 mm give a different value
    iso = metrics.hd95(a, b, (1.0, 1.0, 1.0), [1])[1]
    assert abs(iso - got) > 0.5


def test_hd95_empty_policies():
    a = np.zeros((10, 12, 14), np.uint8)
    b = np.zeros_like(a)
    b[2:5, 2:5, 2:5] = 1
    spacing = (2.0, 1.0, 1.0)
    diag = math.sqrt((9 * 2.0) ** 2 + 11**2 + 13**2)
    assert metrics.hd95(a, b, spacing, [1])[1] == pytest.approx(diag)
    assert math.isnan(metrics.hd95(a, b, spacing, [1], empty="nan")[1])
    assert math.isnan(metrics.hd95(a, a, spacing, [1])[1])
    with pytest.raises(ValueError):
        metrics.hd95(a, b, spacing, [1], empty="zero")
    with pytest.raises(ValueError):
        metrics.hd95(b, b, spacing, [1], empty="zero")  # rejected even when not needed
    with pytest.raises(ValueError):
        metrics.hd95(b, b, spacing, [1], reduction="mean")


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        metrics.dice(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), [1])


def _blobs(seed, shape=(36, 32, 28)):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.normal(size=shape), 2.5) > 0.03
    b = ndimage.gaussian_filter(rng.normal(size=shape), 2.5) > 0.03
    return a, b


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_deepmind_surface_distance(seed):
    """The independent DeepMind implementation places surface elements on voxel corners and
    weights them by area, and takes the max of the two directed 95th percentiles; we use the
    centres of boundary voxels, unweighted. With reduction="max" the two agree to within one
    voxel (the largest spacing); Dice is identical."""
    sd = pytest.importorskip("surface_distance")
    spacing = (1.0, 1.5, 2.5)
    a, b = _blobs(seed)
    ref = sd.compute_surface_distances(a, b, spacing)
    ref_hd = sd.compute_robust_hausdorff(ref, 95)
    ours = metrics.hd95(a.astype(np.uint8), b.astype(np.uint8), spacing, [1], reduction="max")[1]
    assert abs(ours - ref_hd) <= max(spacing)
    assert metrics.dice(a.astype(np.uint8), b.astype(np.uint8), [1])[1] == pytest.approx(
        sd.compute_dice_coefficient(a, b), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 3])
def test_hd95_crop_does_not_change_result(seed):
    a, b = _blobs(seed, shape=(30, 26, 22))  # blobs touch the image border
    a[:, :, :4] = False  # and leave room elsewhere
    spacing = (1.0, 2.0, 1.5)
    d_ab, d_ba = metrics.directed_surface_distances(a, b, spacing)  # full grid, no crop
    full = float(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    assert metrics.hd95_mask(a, b, spacing) == pytest.approx(full, abs=1e-12)
    small = np.zeros((30, 26, 22), bool)
    small[10:14, 10:14, 10:14] = True
    ca, cb = metrics.crop_to_union(small, small)
    assert ca.shape == (6, 6, 6)


def test_jacobian_identity_is_one():
    u = torch.zeros(1, 3, 8, 9, 10)
    det = metrics.jacobian_determinant(u)
    assert det.shape == (8, 9, 10)
    np.testing.assert_allclose(det, 1.0)
    s = metrics.jacobian_stats(u)
    assert s["jac_frac_nonpos"] == 0.0
    assert s["jac_std_log"] == pytest.approx(0.0)
    assert s["jac_min"] == pytest.approx(1.0)


def test_jacobian_affine_field_determinant():
    # x + u = A x with A = diag(2, 0.5, 1.5) + shear: det = 1.5
    d, h, w = 7, 8, 9
    i, j, k = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    u = np.stack([1.0 * i + 0.3 * j, -0.5 * j, 0.5 * k])[None]
    det = metrics.jacobian_determinant(u)
    np.testing.assert_allclose(det, 2 * 0.5 * 1.5)


def test_jacobian_folding_field_detected():
    d = h = w = 16
    i = np.arange(d, dtype=np.float64)[:, None, None] * np.ones((1, h, w))
    u = np.zeros((1, 3, d, h, w))
    u[0, 0] = 3.0 * np.sin(2 * np.pi * i / d)  # d/di = 1 + 6pi/16 cos(...) < 0 near the middle
    s = metrics.jacobian_stats(u)
    assert 0.0 < s["jac_frac_nonpos"] < 1.0
    assert s["jac_min"] < 0
    u_mirror = np.zeros((1, 3, d, h, w))
    u_mirror[0, 0] = -2 * i  # x -> -x: det = -1 everywhere
    s = metrics.jacobian_stats(u_mirror)
    assert s["jac_frac_nonpos"] == 1.0
    assert math.isnan(s["jac_std_log"])


def _quadratic_field(a, d=8, h=6, w=5):
    """u_i = a i^2 / 2: d(i + u_i)/di = 1 + a i, exact under central differences in the
    interior; one-sided at the ends: 1 + a/2 at i = 0 and 1 + a (2d - 3)/2 at i = d - 1."""
    i = np.arange(d, dtype=np.float64)[:, None, None] * np.ones((1, h, w))
    u = np.zeros((1, 3, d, h, w))
    u[0, 0] = a * i**2 / 2
    return u


def test_jacobian_stats_hand_computed_smooth_field():
    s = metrics.jacobian_stats(_quadratic_field(0.5))
    # det per i-slab: 1.25 (one-sided), 1.5, 2, 2.5, 3, 3.5, 4, 4.25 (one-sided)
    whole = [1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.25]
    assert s["jac_std_log"] == pytest.approx(np.std(np.log(whole)), rel=1e-12)
    assert s["jac_n_nonpos"] == 0 and s["jac_frac_nonpos"] == 0.0
    # Learn2Reg's SDlogJ: interior i = 2..5 (det 2, 2.5, 3, 3.5), plus 3, log, population std
    assert s["jac_sdlogj"] == pytest.approx(np.std(np.log([5.0, 5.5, 6.0, 6.5])), rel=1e-12)
    assert metrics.sdlogj(_quadratic_field(0.5), shift=0.0) == pytest.approx(np.std(np.log([2, 2.5, 3, 3.5])))
    # a constant Jacobian (affine field, det 1.5 everywhere) has SDlogJ 0
    d, h, w = 7, 8, 9
    i, j, k = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    affine_u = np.stack([1.0 * i + 0.3 * j, -0.5 * j, 0.5 * k])[None]
    assert metrics.sdlogj(affine_u) == pytest.approx(0.0, abs=1e-12)
    assert metrics.jacobian_stats(affine_u)["jac_std_log"] == pytest.approx(0.0, abs=1e-12)


def test_jacobian_stats_hand_computed_fold():
    s = metrics.jacobian_stats(_quadratic_field(-0.5))
    # det per i-slab: 0.75, 0.5, 0, -0.5, -1, -1.5, -2, -2.25: six of eight slabs fold
    assert s["jac_frac_nonpos"] == 0.75
    assert s["jac_n_nonpos"] == 6 * 6 * 5
    assert s["jac_std_log"] == pytest.approx(np.std(np.log([0.75, 0.5])), rel=1e-12)
    # interior det 0, -0.5, -1, -1.5; plus 3: 3, 2.5, 2, 1.5
    assert s["jac_sdlogj"] == pytest.approx(np.std(np.log([3.0, 2.5, 2.0, 1.5])), rel=1e-12)
    # without the shift the clip at 1e-9 takes every folded voxel: interior det 0.5, 0.25, 0, -0.25
    got = metrics.sdlogj(_quadratic_field(-0.25), shift=0.0)
    assert got == pytest.approx(np.std(np.log([0.5, 0.25, 1e-9, 1e-9])), rel=1e-12)
    assert math.isnan(metrics.sdlogj(np.zeros((1, 3, 4, 9, 9))))  # nothing left after the crop


def test_tail_mean_hand_computed():
    v = [0.1, 0.9, 0.5, float("nan"), 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0]  # 10 finite: 3 in a tail
    assert metrics.tail_mean(v) == pytest.approx(0.2)
    assert metrics.tail_mean(v, highest=True) == pytest.approx(0.9)
    assert metrics.tail_mean([4.0, 1.0, 3.0, 2.0, 5.0]) == pytest.approx(1.5)  # round(1.5) = 2
    assert metrics.tail_mean([7.0]) == 7.0
    assert math.isnan(metrics.tail_mean([float("nan")]))
    with pytest.raises(ValueError):
        metrics.tail_mean(v, fraction=0.0)


# ----------------------------------------------------------------------------- evaluate
# (suitsbench.evaluate: the one evaluator that warps moving labels and calls these metrics)

ORGANS = {1: "liver", 2: "spleen"}


def _labels(shape=(24, 20, 18)):
    lab = np.zeros(shape, np.uint8)
    lab[6:14, 5:12, 4:10] = 1
    lab[15:20, 10:16, 8:14] = 2
    return lab


def test_evaluate_pair_identity_and_pair_ids():
    from suitsbench import evaluate

    fixed = _labels()
    moving = np.roll(fixed, 2, axis=0)
    rows = evaluate.evaluate_pair(fixed[None, None], moving[None, None], None, ORGANS, (2.0, 2.0, 2.0))
    assert [r["organ"] for r in rows] == ["liver", "spleen"]
    liver = rows[0]
    assert liver["dice"] == pytest.approx(2 * 6 * 7 * 6 / (2 * 8 * 7 * 6))
    assert liver["hd95"] == pytest.approx(4.0)  # 2 voxels of 2 mm
    assert liver["hd95_vox"] == pytest.approx(2.0)
    assert liver["jac_sdlogj"] == pytest.approx(0.0, abs=1e-12) and liver["jac_n_nonpos"] == 0
    aniso = evaluate.evaluate_pair(fixed[None, None], moving[None, None], None, ORGANS, (2.0, 3.0, 1.0))[0]
    assert aniso["hd95"] == pytest.approx(4.0) and aniso["hd95_vox"] == pytest.approx(2.0)
    assert liver["fixed_voxels"] == liver["warped_voxels"] == 8 * 7 * 6
    assert liver["jac_frac_nonpos"] == 0.0 and liver["jac_mean"] == pytest.approx(1.0)
    assert split_pair_id("ct3__to__mr1") == ("ct3", "mr1")
    with pytest.raises(ValueError):
        split_pair_id("ct3-mr1")
    aff = np.diag([1.5, 2.0, 3.0, 1.0])[[1, 0, 2, 3]]  # array axis 0 runs along world y
    aff[:3, 2] = [0.0, 0.6 * 3.0, 0.8 * 3.0]  # oblique axis 2, still 3 mm
    assert evaluate.spacing_from_affine(aff) == pytest.approx((1.5, 2.0, 3.0))


def test_evaluate_pair_uncovered_fraction_of_a_partial_scan():
    from suitsbench import evaluate

    fixed = _labels()
    fov = np.zeros_like(fixed)
    fov[:10] = 1  # the moving scan covers slices 0-9: liver (6-13) half, spleen (15-19) not at all
    rows = evaluate.evaluate_pair(fixed[None, None], fixed[None, None], None, ORGANS,
                                  (2.0, 2.0, 2.0), moving_fov=fov[None, None])
    assert rows[0]["uncovered"] == pytest.approx(4 / 8)
    assert rows[1]["uncovered"] == pytest.approx(1.0)
    # a field that shifts by +2 voxels along axis 0 samples the moving scan at i + 2: 0-7 covered
    u = np.zeros((1, 3) + fixed.shape, np.float32)
    u[:, 0] = 2.0
    shifted = evaluate.evaluate_pair(fixed[None, None], fixed[None, None], u, ORGANS,
                                     (2.0, 2.0, 2.0), moving_fov=fov[None, None])
    assert shifted[0]["uncovered"] == pytest.approx(6 / 8)
    no_mask = evaluate.evaluate_pair(fixed[None, None], fixed[None, None], None, ORGANS, (2.0, 2.0, 2.0))
    assert math.isnan(no_mask[0]["uncovered"])
    with pytest.raises(ValueError, match="field-of-view mask"):
        evaluate.evaluate_pair(fixed[None, None], fixed[None, None], None, ORGANS, (2.0, 2.0, 2.0),
                               moving_fov=fov[None, None, :5])


def test_write_and_read_metrics_roundtrip(tmp_path):
    from suitsbench import evaluate

    rows = [{"method": "initial", "pair": "a__to__b", "organ": "liver", "label": 1, "dice": 1 / 3,
             "hd95": float("nan"), "hd95_vox": float("nan"), "fixed_voxels": 5, "warped_voxels": 0,
             "uncovered": 0.25, "jac_frac_nonpos": 0.0, "jac_n_nonpos": 0, "jac_std_log": 0.0, "jac_sdlogj": 0.0,
             "jac_min": 1.0, "jac_mean": 1.0}]
    evaluate.write_metrics(rows, tmp_path / "m" / "initial.tsv")
    evaluate.write_metrics(list(reversed(rows)), tmp_path / "m" / "again.tsv")
    text = (tmp_path / "m" / "initial.tsv").read_text()
    assert text.splitlines()[0].split("\t") == list(evaluate.ROW_COLUMNS)
    assert text == (tmp_path / "m" / "again.tsv").read_text()
    df = evaluate.read_metrics([tmp_path / "m" / "initial.tsv"])
    assert df.loc[0, "dice"] == 1 / 3  # full precision
    assert math.isnan(df.loc[0, "hd95"])


def test_evaluate_method_translation_field(tmp_path):
    """A constant field u = +2 voxels along i maps moving = roll(fixed, +2) back onto fixed."""
    sio = pytest.importorskip("suits.io")
    pytest.importorskip("suits.warp")
    import nibabel as nib

    from suitsbench import evaluate

    fixed = _labels()
    moving = np.roll(fixed, 2, axis=0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(fixed, affine), tmp_path / "fixed.nii.gz")
    nib.save(nib.Nifti1Image(moving, affine), tmp_path / "moving.nii.gz")
    u = torch.zeros(1, 3, *fixed.shape)
    u[0, 0] = 2.0
    sio.save_field(tmp_path / "field.nii.gz", u, affine)
    kwargs = dict(
        pairs=["moving__to__fixed"],
        fixed_label_path=lambda p: tmp_path / "fixed.nii.gz",
        moving_label_path=lambda p: tmp_path / "moving.nii.gz",
        organs=ORGANS,
    )
    warped_rows = evaluate.evaluate_method("shift", field_path_for=lambda p: tmp_path / "field.nii.gz", **kwargs)
    initial_rows = evaluate.evaluate_method("initial", field_path_for=lambda p: None, **kwargs)
    for w, i in zip(warped_rows, initial_rows):
        assert w["method"] == "shift" and w["pair"] == "moving__to__fixed"
        assert w["dice"] == pytest.approx(1.0)
        assert w["hd95"] == pytest.approx(0.0)
        assert i["dice"] < 0.9 and i["hd95"] == pytest.approx(4.0)
        assert w["jac_frac_nonpos"] == 0.0
    bad = torch.zeros(1, 3, 4, 4, 4)
    with pytest.raises(ValueError, match="fixed grid"):
        evaluate.evaluate_pair(fixed[None, None], moving[None, None], bad, ORGANS, (2.0, 2.0, 2.0))
