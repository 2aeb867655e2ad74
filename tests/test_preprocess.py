"""Preprocessing: world coordinates kept, RAS isotropic output, labels, prostate cases."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from suitsbench import phantom
from suitsbench.errors import InputError
from suitsbench.preprocess import (crop_or_pad, isotropic_grid, normalise_image, shape_holding,
                                   preprocess_arrays, preprocess_case, relabel,
                                   reorient_canonical, resample_isotropic, resize_to_reference)

PROSTATE_LABELS = {1: "gland", 2: "landmark_1", 3: "landmark_2"}


def world_centroid(label: np.ndarray, affine: np.ndarray, value: int) -> np.ndarray:
    idx = np.argwhere(label == value).mean(0)
    return affine[:3, :3] @ idx + affine[:3, 3]


def test_lps_3mm_to_ras_2mm_keeps_world_centroids(tmp_path):
    """Phantom written in LPS at 3 mm: after preprocessing (RAS, 2 mm, cropped) every organ's
    world centroid moves by less than half an output voxel (the output grid pads, so no organ
    is cut)."""
    manifest = phantom.generate(tmp_path, n_per_modality=1, modalities=("ct",),
                                orientation="LPS", write_spacing=3.0, seed=2)
    img_p, lab_p = tmp_path / "p000_ct_image.nii.gz", tmp_path / "p000_ct_label.nii.gz"
    raw_lab = nib.load(lab_p)
    assert nib.aff2axcodes(raw_lab.affine) == ("L", "P", "S") and manifest.is_file()
    out = preprocess_case(img_p, lab_p, tmp_path / "o.nii.gz", tmp_path / "ol.nii.gz",
                          labels_map=phantom.LABELS, spacing=2.0, shape=(84, 68, 66))
    saved = nib.load(tmp_path / "o.nii.gz")
    assert saved.shape == (84, 68, 66)
    assert nib.aff2axcodes(saved.affine) == ("R", "A", "S")
    assert np.allclose(saved.header.get_zooms(), 2.0)
    assert np.allclose(saved.affine, out.affine)
    lab = np.asarray(nib.load(tmp_path / "ol.nii.gz").dataobj)
    assert lab.dtype == np.uint8
    raw = np.asarray(raw_lab.dataobj)
    for v in range(1, 7):
        d = world_centroid(lab, out.affine, v) - world_centroid(raw, raw_lab.affine, v)
        assert np.abs(d).max() < 1.0, (v, d)
    img = saved.get_fdata()
    assert abs(img.mean()) < 1e-4 and abs(img.std() - 1) < 1e-4   # z-score, whole volume


def test_reorient_canonical_is_lossless():
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    aff = phantom.grid_affine((2, 3, 4), (1.0, 2.0, 3.0), "PIL")
    can, can_aff = reorient_canonical(data, aff)
    assert nib.aff2axcodes(can_aff) == ("R", "A", "S") and can.shape == (4, 2, 3)
    # the voxel at world w has the same value in both
    for ijk in [(0, 0, 0), (1, 2, 3), (1, 0, 2)]:
        w = aff[:3, :3] @ ijk + aff[:3, 3]
        ijk2 = np.rint(np.linalg.solve(can_aff[:3, :3], w - can_aff[:3, 3])).astype(int)
        assert can[tuple(ijk2)] == data[ijk]


def test_isotropic_grid_keeps_fov_and_centre():
    aff = np.diag([3.0, 1.0, 0.5, 1.0])
    aff[:3, 3] = [10, -5, 2]
    out, shape = isotropic_grid(aff, (20, 30, 40), 2.0)
    assert shape == (30, 15, 10)
    assert np.allclose(np.linalg.norm(out[:3, :3], axis=0), 2.0)
    c_in = aff[:3, :3] @ ((np.array([20, 30, 40]) - 1) / 2) + aff[:3, 3]
    c_out = out[:3, :3] @ ((np.array(shape) - 1) / 2) + out[:3, 3]
    assert np.allclose(c_in, c_out)


def test_resample_identity_and_linear_ramp():
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 8, 6)).copy()
    same, same_aff = resample_isotropic(ramp, aff, 2.0)
    assert np.allclose(same, ramp, atol=1e-5) and np.allclose(same_aff, aff)
    fine, fine_aff = resample_isotropic(ramp, aff, 1.0, antialias=False)
    # a linear function of world x is reproduced inside the field of view
    x_world = fine_aff[0, 0] * np.arange(fine.shape[0]) + fine_aff[0, 3]
    inside = (x_world >= 0) & (x_world <= 18)
    assert np.allclose(fine[inside, 3, 3], x_world[inside] / 2, atol=1e-4)


def test_crop_or_pad_keeps_world_coordinates():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(9, 6, 7)).astype(np.float32)
    aff = phantom.grid_affine(data.shape, 2.0, "RAS")
    aff[:3, 3] += [3.0, -1.0, 7.0]
    out, out_aff = crop_or_pad(data, aff, (5, 10, 7), cval=-9)
    assert out.shape == (5, 10, 7)
    hits = 0
    for idx in np.ndindex(out.shape):
        w = out_aff[:3, :3] @ idx + out_aff[:3, 3]
        src = np.linalg.solve(aff[:3, :3], w - aff[:3, 3])
        src_i = np.rint(src).astype(int)
        assert np.allclose(src, src_i)
        if all(0 <= s < n for s, n in zip(src_i, data.shape)):
            assert out[idx] == data[tuple(src_i)]
            hits += 1
        else:
            assert out[idx] == -9
    assert hits == 5 * 6 * 7
    # the field of view centre stays (within half a voxel for odd/even changes)
    c = lambda a, s: a[:3, :3] @ ((np.array(s) - 1) / 2) + a[:3, 3]  # noqa: E731
    assert np.all(np.abs(c(out_aff, out.shape) - c(aff, data.shape)) <= 1.0 + 1e-9)


def test_multichannel_label_round_trip(tmp_path):
    shape = (12, 10, 8)
    truth = np.zeros(shape, np.uint8)
    truth[2:6, 2:7, 1:5] = 1
    truth[7:10, 3:8, 2:6] = 2
    truth[3:5, 3:5, 2:4] = 3                                # inside organ 1
    channels = np.stack([(truth == v) | ((v == 1) & (truth == 3)) for v in (1, 2, 3)],
                        -1).astype(np.float64)
    aff = np.diag([1.5, 1.5, 1.5, 1.0])
    img = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(img, aff), str(tmp_path / "i.nii.gz"))
    nib.save(nib.Nifti1Image(channels, aff), str(tmp_path / "l.nii.gz"))
    out = preprocess_case(tmp_path / "i.nii.gz", tmp_path / "l.nii.gz", tmp_path / "o.nii.gz",
                          tmp_path / "ol.nii.gz", labels_map={1: "a", 2: "b", 3: "c"},
                          evaluate=["b", "a"], spacing=1.5, shape=shape)
    expect = np.zeros(shape, np.uint8)
    expect[(truth == 1) | (truth == 3)] = 2                 # 'a' is organ 2 in evaluate order
    expect[truth == 2] = 1
    assert np.array_equal(out.label, expect)
    back = np.asarray(nib.load(tmp_path / "ol.nii.gz").dataobj)
    assert np.array_equal(back, expect)
    # the same labels as a 3-D index file give the same result (nearest neighbour path)
    nib.save(nib.Nifti1Image(truth, aff), str(tmp_path / "l3.nii.gz"))
    out3 = preprocess_case(tmp_path / "i.nii.gz", tmp_path / "l3.nii.gz", tmp_path / "o3.nii.gz",
                           tmp_path / "ol3.nii.gz", labels_map={1: "a", 2: "b", 3: "c"},
                           evaluate=["b", "a"], spacing=1.5, shape=shape)
    assert np.array_equal(out3.label[truth != 3], expect[truth != 3])
    assert (out3.label[truth == 3] == 0).all()              # 'c' not evaluated -> background


def test_multichannel_downsampled_keeps_organ_volume():
    shape = (40, 40, 40)
    x = np.indices(shape) - 19.5
    ball = (np.sqrt((x ** 2).sum(0)) < 12).astype(np.float32)
    out = preprocess_arrays(np.random.default_rng(0).normal(size=shape), np.eye(4),
                            ball[..., None], labels_map={1: "ball"}, spacing=2.0,
                            shape=(20, 20, 20))
    vol = (out.label == 1).sum() * 8.0
    assert abs(vol - ball.sum()) / ball.sum() < 0.1


def test_relabel_and_normalise():
    assert relabel(np.array([0, 3, 5, 7, 3.0]), [5, 3]).tolist() == [0, 2, 1, 0, 2]
    with pytest.raises(InputError, match="constant"):
        normalise_image(np.ones((3, 3, 3)))
    with pytest.raises(InputError, match="preprocess.normalise"):
        normalise_image(np.arange(8.0).reshape(2, 2, 2), "minmax")
    assert normalise_image(np.arange(8.0), "none").tolist() == list(range(8))


def test_resize_to_reference():
    data = np.zeros((8, 8, 8), np.float32)
    data[:4] = 1.0
    out = resize_to_reference(data, (4, 6, 10))
    assert out.shape == (4, 6, 10)
    assert np.allclose(out[:2], 1) and np.allclose(out[2:], 0)   # halves map onto halves
    lab = resize_to_reference(np.stack([data, 1 - data], -1), (4, 6, 10))
    assert lab.shape == (4, 6, 10, 2)
    idx = resize_to_reference(data.astype(np.uint8), (16, 8, 8), order=0)
    assert idx.dtype == np.uint8 and idx[:8].all() and not idx[8:].any()


def test_bad_label_file_is_reported(tmp_path):
    aff = np.eye(4)
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(5, 5, 5)), aff),
             str(tmp_path / "i.nii.gz"))
    nib.save(nib.Nifti1Image(np.full((5, 5, 5), 4, np.uint8), aff), str(tmp_path / "l.nii.gz"))
    with pytest.raises(InputError, match=r"l\.nii\.gz: label value\(s\) \[4\]"):
        preprocess_case(tmp_path / "i.nii.gz", tmp_path / "l.nii.gz", tmp_path / "o.nii.gz",
                        tmp_path / "ol.nii.gz", labels_map={1: "a"}, shape=(5, 5, 5))


@pytest.mark.parametrize("case, split", [("case000002", "train"), ("case000025", "test")])
def test_prostate_pair_preprocesses(prostate_dir, tmp_path, case, split):
    """3-D (case000002) and 4-D (case000025) label files; the moving MR is resized onto the
    fixed US grid (the data set's convention), then both get the same canonical grid."""
    d = prostate_dir / split
    fixed_img = d / "fixed_images" / f"{case}.nii.gz"
    kw = dict(labels_map=PROSTATE_LABELS, evaluate=["gland"], spacing=0.8, shape=(24, 30, 20))
    fix = preprocess_case(fixed_img, d / "fixed_labels" / f"{case}.nii.gz",
                          tmp_path / "f.nii.gz", tmp_path / "fl.nii.gz", **kw)
    mov = preprocess_case(d / "moving_images" / f"{case}.nii.gz",
                          d / "moving_labels" / f"{case}.nii.gz", tmp_path / "m.nii.gz",
                          tmp_path / "ml.nii.gz", reference=fixed_img, **kw)
    assert fix.image.shape == mov.image.shape == (24, 30, 20)
    assert np.allclose(fix.affine, mov.affine)
    assert set(np.unique(fix.label)) == {0, 1} and set(np.unique(mov.label)) == {0, 1}
    a, b = fix.label == 1, mov.label == 1
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice > 0.3                                      # roughly overlapping glands
    assert nib.aff2axcodes(fix.affine) == ("R", "A", "S")


def test_oblique_anisotropic_int16_scan(tmp_path):
    """An oblique (10 degrees), anisotropic (1.5 x 1.5 x 5 mm, PSR axes) int16 scan with a
    scale factor: preprocessing keeps organ world centroids within half an output voxel."""
    geom = phantom.make_geometry(4)
    shape, aff = phantom.grid_for((80, 64, 64), 2.0, "PSR", (1.5, 5.0, 1.5))
    rot = phantom._rotation(np.deg2rad([10.0, 0.0, 4.0]))
    aff = aff.copy()
    aff[:3] = rot @ aff[:3]
    img, lab, _ = phantom.render(geom, "ct", shape, aff)
    nii = nib.Nifti1Image(np.round(img / 2).astype(np.int16), aff)
    nii.header.set_slope_inter(2.0, 0.0)
    nib.save(nii, str(tmp_path / "i.nii.gz"))
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "l.nii.gz"))
    out = preprocess_case(tmp_path / "i.nii.gz", tmp_path / "l.nii.gz", tmp_path / "o.nii.gz",
                          tmp_path / "ol.nii.gz", labels_map=phantom.LABELS, spacing=2.0,
                          shape=(96, 80, 80))
    assert nib.aff2axcodes(out.affine) == ("R", "A", "S")
    assert np.allclose(np.linalg.norm(out.affine[:3, :3], axis=0), 2.0)
    for v in range(1, 7):
        d = world_centroid(out.label, out.affine, v) - world_centroid(lab, aff, v)
        assert np.abs(d).max() < 1.0, (v, d)


def test_fov_mask_marks_the_scanned_voxels_of_a_padded_slab():
    """A 3 mm slab of 10 slices (LPS) padded to a 2 mm grid of 40 slices: the mask covers the
    slab's 30 mm (15 slices) and nothing else; the image's padding lies outside it."""
    shape = (20, 16, 10)
    A = phantom.grid_affine(shape, 3.0, "LPS")
    img = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    out = preprocess_arrays(img, A, None, labels_map={1: "liver"}, spacing=2.0,
                            shape=(30, 24, 40), normalise="none")
    assert out.fov.dtype == np.uint8 and out.fov.shape == (30, 24, 40)
    assert out.fov[:, :, :13].sum() == 0 and out.fov[:, :, 28:].sum() == 0
    assert out.fov[:, :, 13:28].all()         # start (15 - 40) // 2 = -13
    assert np.all(out.image[out.fov == 0] == img.min())
    assert out.image[out.fov == 1].mean() == pytest.approx(100, abs=2)


def test_grid_that_crops_labels_warns_with_the_file_and_a_grid(capsys):
    shape = (40, 40, 40)
    A = phantom.grid_affine(shape, 2.0)
    img = np.random.default_rng(1).normal(0, 1, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[2:30, 10:30, 10:30] = 1                 # reaches 18 voxels below the centre
    preprocess_arrays(img, A, lab, labels_map={1: "liver"}, spacing=2.0, shape=(40, 40, 40),
                      where="ct_07.nii.gz")
    assert capsys.readouterr().err == ""
    out = preprocess_arrays(img, A, lab, labels_map={1: "liver"}, spacing=2.0,
                            shape=(24, 40, 40), where="ct_07.nii.gz")
    err = capsys.readouterr().err
    assert "ct_07.nii.gz" in err and "cuts off" in err and "[40, 40, 40]" in err
    assert (out.label > 0).sum() < (lab > 0).sum()
    assert shape_holding(lab > 0, (24, 40, 40)) == (40, 40, 40)
    assert shape_holding(lab > 0, (24, 40, 40), multiple=1) == (35, 40, 40)  # start 2
