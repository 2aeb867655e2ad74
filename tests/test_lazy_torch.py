"""The numpy paths of the I/O, the field-of-view masks, the mean-space resampling and
SimpleElastix-MI load no torch (the workflow's jobs that do not compute with torch save its
import), and they give the values of the tensor paths."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import suits
import suitsbench
from baselines.elastix_mi import padding_mask
from baselines.itk_space import lps_field_to_voxel_array, lps_field_to_voxels
from suits import io as sio
from suits.fov import binary_fov, binary_fov_array

ROOT = Path(__file__).resolve().parents[1]

NO_TORCH = r"""
import sys
from pathlib import Path

import numpy as np

from baselines.elastix_mi import padding_mask, register_files  # noqa: F401
from baselines.itk_space import lps_field_to_voxel_array, volume_array
from suits.fieldfile import contract_to_itk
from suits.fov import binary_fov_array
from suits.io import read_labels, read_volume, save_field, save_labels, save_volume
from suitsbench.affinemap import resample_affine
from suitsbench.groupwise import groupwise_mean, load_transform, resample_to_space, save_transform
from suitsbench.phantom import generate  # noqa: F401
from suitsbench.preprocess import preprocess_case  # noqa: F401

tmp = Path(sys.argv[1])
affine = np.diag([2.0, 2.0, 2.5, 1.0])
vol = np.random.default_rng(0).normal(size=(6, 5, 4))
lab = (np.arange(120).reshape(6, 5, 4) % 3).astype(np.uint8)
save_volume(tmp / "v.nii.gz", vol, affine)
save_labels(tmp / "l.nii.gz", lab, affine)
v, a = read_volume(tmp / "v.nii.gz")
l, _ = read_labels(tmp / "l.nii.gz")
assert v.dtype == np.float32 and v.shape == (6, 5, 4) and l.dtype == np.int64
T = np.eye(4)
T[0, 3] = 1.0
save_transform(tmp / "t.txt", T)
out = resample_to_space(v, a, load_transform(tmp / "t.txt"), a, v.shape, order=1)
assert out.dtype == np.float32 and out.shape == v.shape
resample_affine(l, a, T, a, l.shape, order=0)
groupwise_mean({("a", "b"): T, ("b", "a"): np.linalg.inv(T)}, ["a", "b"])
assert padding_mask(np.ones((6, 5, 4)), (6, 5, 4)) is None
assert binary_fov_array(np.pad(np.ones((4, 3, 2)), 1), "m").sum() == 24
volume_array(vol)
u = lps_field_to_voxel_array(np.zeros((6, 5, 4, 3)), affine)
save_field(tmp / "u.nii.gz", u, affine)
contract_to_itk(tmp / "u.nii.gz", tmp / "u_itk.nii.gz")
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
print("no torch")
"""


def test_numpy_paths_do_not_import_torch(tmp_path):
    """Import the modules of the jobs without torch and call their numpy paths in a fresh
    interpreter: torch stays out of ``sys.modules``."""
    paths = {str(Path(suits.__file__).resolve().parents[1]),
             str(Path(suitsbench.__file__).resolve().parents[1]), str(ROOT)}
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(tmp_path)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no torch"


def test_read_volume_and_labels_match_the_tensor_readers(tmp_path):
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    vol = np.random.default_rng(1).normal(size=(7, 6, 5)) * 1e3
    sio.save_volume(tmp_path / "v.nii.gz", vol, affine, dtype=np.float64)
    t, ta = sio.load_volume(tmp_path / "v.nii.gz")
    a, aa = sio.read_volume(tmp_path / "v.nii.gz")
    assert t.dtype == torch.float32 and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.array_equal(t[0, 0].numpy(), a) and np.array_equal(ta, aa)
    a64, _ = sio.read_volume(tmp_path / "v.nii.gz", dtype=np.float64)
    assert np.array_equal(sio.load_volume(tmp_path / "v.nii.gz", dtype=torch.float64)[0][0, 0].numpy(), a64)

    lab = np.random.default_rng(2).integers(0, 300, (7, 6, 5))
    sio.save_labels(tmp_path / "l.nii.gz", lab, affine)
    lt, _ = sio.load_labels(tmp_path / "l.nii.gz")
    la, _ = sio.read_labels(tmp_path / "l.nii.gz")
    assert la.dtype == np.int64 and np.array_equal(lt[0, 0].numpy(), la)
    with pytest.raises(ValueError, match="non-integer"):
        sio.read_labels(tmp_path / "v.nii.gz")


@pytest.mark.parametrize("mask, shape", [
    (np.ones((3, 4, 5)), None),
    (np.pad(np.full((2, 3, 4), 0.7), 1), (4, 5, 6)),
    (np.zeros((3, 4, 5)), None),
    (np.ones((3, 4, 5)), (3, 4, 6)),
    (np.ones((0, 4, 5)), None),
])
def test_binary_fov_array_matches_binary_fov(mask, shape):
    """Same 0/1 mask (uint8), same ``None``, same errors as the tensor form; SimpleElastix-MI's
    ``padding_mask`` goes through it."""
    def outcome(f):
        try:
            out = f()
        except ValueError as e:
            return "error", str(e)
        return ("none", None) if out is None else ("mask", np.asarray(out))

    t_kind, t_out = outcome(lambda: binary_fov(torch.from_numpy(mask), "fixed mask", shape=shape,
                                               dtype=torch.uint8))
    n_kind, n_out = outcome(lambda: binary_fov_array(mask, "fixed mask", shape=shape))
    assert t_kind == n_kind
    if t_kind == "mask":
        assert n_out.dtype == np.uint8 and np.array_equal(t_out, n_out)
        assert np.array_equal(padding_mask(mask, mask.shape, "fixed mask"), n_out)
    else:
        assert t_out == n_out


def test_lps_field_array_matches_tensor():
    d = np.random.default_rng(3).normal(size=(4, 5, 6, 3))
    affine = np.diag([-2.0, 1.5, 3.0, 1.0])
    t = lps_field_to_voxels(d, affine, (4, 5, 6))
    a = lps_field_to_voxel_array(d, affine, (4, 5, 6))
    assert a.dtype == np.float32 and a.shape == (1, 3, 4, 5, 6)
    assert np.array_equal(t.numpy(), a)
