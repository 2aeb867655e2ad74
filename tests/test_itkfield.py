"""suits.fieldfile: the ITK displacement field (LPS mm, intent 1007) that ITK, ANTs and 3D Slicer
apply, checked by applying it with SimpleITK against the suite's own label warper."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from suits import fieldfile, io as sio
from suits.warp import warp
from suitsbench.evaluate import warp_label_map

SHAPE = (40, 36, 30)


def oblique_affine() -> np.ndarray:
    """Rotated (about two axes), anisotropic, with an origin: a non-identity direction."""
    def rot(axis, deg):
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r

    a = np.eye(4)
    a[:3, :3] = rot(2, 25.0) @ rot(0, -15.0) @ np.diag([1.5, 2.0, 2.5])
    a[:3, 3] = [-20.0, 13.0, 7.5]
    return a


def smooth_field(shape, amplitude=3.0, seed=1) -> np.ndarray:
    """A smooth, non-trivial voxel field (3, X, Y, Z): low-pass noise plus a rotation-like term."""
    rng = np.random.default_rng(seed)
    u = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 4.0, mode="wrap") for _ in range(3)])
    u *= amplitude / np.abs(u).max()
    i, j, _ = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    u[0] += 0.06 * (j - shape[1] / 2)
    u[1] -= 0.06 * (i - shape[0] / 2)
    return u


def label_map(shape) -> np.ndarray:
    """Three organ-like ellipsoids (centres and radii as fractions of the grid)."""
    g = np.meshgrid(*[np.arange(n, dtype=np.float64) / n for n in shape], indexing="ij")
    lab = np.zeros(shape, np.uint8)
    organs = [((.35, .35, .45), (.22, .2, .25)), ((.7, .6, .5), (.15, .18, .2)),
              ((.4, .75, .5), (.12, .1, .22))]
    for k, (c, r) in enumerate(organs, 1):
        inside = sum(((g[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1
        lab[inside & (lab == 0)] = k
    return lab


def test_voxel_itk_round_trip_and_hand_case():
    a = oblique_affine()
    u = smooth_field(SHAPE)
    d = fieldfile.voxel_to_itk(u, a)
    assert d.shape == SHAPE + (3,)
    np.testing.assert_allclose(fieldfile.itk_to_voxel(d, a), u, atol=1e-10)
    # hand case: 1 voxel along i on a 2 mm RAS grid is 2 mm towards R, i.e. -2 mm in LPS x
    u1 = np.zeros((3, 2, 2, 2))
    u1[0] = 1.0
    d1 = fieldfile.voxel_to_itk(u1, np.diag([2.0, 3.0, 4.0, 1.0]))
    np.testing.assert_allclose(d1[0, 0, 0], [-2.0, 0.0, 0.0])
    u1 = np.zeros((3, 2, 2, 2))
    u1[2] = -0.5  # half a voxel along k (4 mm, superior) -> -2 mm along LPS z
    d1 = fieldfile.voxel_to_itk(u1, np.diag([2.0, 3.0, 4.0, 1.0]))
    np.testing.assert_allclose(d1[1, 1, 1], [0.0, 0.0, -2.0])


def test_file_header_and_contract_refusal(tmp_path):
    a = oblique_affine()
    u = smooth_field(SHAPE)
    sio.save_field(tmp_path / "contract.nii.gz", torch.from_numpy(u.astype(np.float32))[None], a)
    fieldfile.contract_to_itk(tmp_path / "contract.nii.gz", tmp_path / "itk.nii.gz")
    img = nib.load(str(tmp_path / "itk.nii.gz"))
    assert img.shape == SHAPE + (1, 3)
    assert int(img.header["intent_code"]) == 1007
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, a, atol=1e-5)
    d, aff = fieldfile.load_itk_field(tmp_path / "itk.nii.gz")
    np.testing.assert_allclose(fieldfile.itk_to_voxel(d, aff), u, atol=1e-4)
    with pytest.raises(ValueError, match="ITK displacement field"):
        sio.load_field(tmp_path / "itk.nii.gz")


def _sitk_warp(sitk, moving_path, itk_field_path):
    moving = sitk.ReadImage(str(moving_path))
    field = sitk.Cast(sitk.ReadImage(str(itk_field_path)), sitk.sitkVectorFloat64)
    assert field.GetNumberOfComponentsPerPixel() == 3
    tx = sitk.DisplacementFieldTransform(field)
    # the field's own grid is the fixed grid: resample onto it
    out = sitk.Resample(moving, sitk.ReadImage(str(itk_field_path)), tx, sitk.sitkNearestNeighbor, 0)
    return np.transpose(sitk.GetArrayFromImage(out), (2, 1, 0))  # sitk (z, y, x) -> (i, j, k)


def _fg_agree(a, b, where):
    """Fraction of equal labels among the voxels labelled in either map (within ``where``)."""
    fg = where & ((a > 0) | (b > 0))
    return float((a == b)[fg].mean())


@pytest.mark.parametrize("oblique", [True, False])
def test_simpleitk_applies_the_field_like_the_suite(tmp_path, oblique):
    sitk = pytest.importorskip("SimpleITK")
    a = oblique_affine() if oblique else np.diag([2.0, 2.0, 2.0, 1.0])
    u = smooth_field(SHAPE)
    moving = label_map(SHAPE)
    sio.save_labels(tmp_path / "moving.nii.gz", moving, a)
    fieldfile.save_itk_field(tmp_path / "itk.nii.gz", u, a)
    got = _sitk_warp(sitk, tmp_path / "moving.nii.gz", tmp_path / "itk.nii.gz")
    ut = torch.from_numpy(u.astype(np.float32))[None]
    # the evaluator's warper: one-hot, trilinear per class, argmax
    ours = warp_label_map(torch.from_numpy(moving.astype(np.int64))[None, None], ut, 4)[0].numpy()
    # the suite's nearest-neighbour warp: the same points, the same rounding as ITK
    nearest = warp(torch.from_numpy(moving.astype(np.float32))[None, None], ut, mode="nearest")[0, 0].numpy()
    # the sample points x + u(x) that stay inside the grid (outside, ITK pads with 0 and the
    # suite clamps to the border)
    pts = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")) + u
    inside = np.all([(pts[c] >= 0) & (pts[c] <= n - 1) for c, n in enumerate(SHAPE)], axis=0)
    assert inside.mean() > 0.8
    assert (got == nearest)[inside].mean() == 1.0
    agree = (got == ours)[inside].mean()
    assert agree >= 0.99, agree
    print(f"ITK vs suite: {agree:.4f} of voxels, {_fg_agree(got, ours, inside):.4f} of labelled voxels")
    # and the field matters: without it the labelled voxels differ
    assert _fg_agree(got, ours, inside) > 0.9
    assert _fg_agree(moving, ours, inside) < 0.8
    # a wrong convention (RAS vectors stored as they are) would not agree
    wrong = np.einsum("rc,c...->...r", a[:3, :3], u).astype(np.float32)
    bad = nib.Nifti1Image(wrong[:, :, :, None, :], a)
    bad.header.set_intent("vector", (), name="displacement")
    nib.save(bad, str(tmp_path / "ras.nii.gz"))
    got_bad = _sitk_warp(sitk, tmp_path / "moving.nii.gz", tmp_path / "ras.nii.gz")
    assert _fg_agree(got_bad, ours, inside) < 0.8
