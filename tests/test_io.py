"""suits.io: NIfTI round trips and atomic writes."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from suits import io as sio
from suits.atomic import _HOST, atomic_path


@pytest.fixture
def affine():
    a = np.diag([2.0, 2.0, 2.5, 1.0])
    a[:3, 3] = [-10.0, 5.0, 3.25]
    return a


def test_volume_round_trip(tmp_path, affine):
    vol = torch.randn(1, 1, 5, 6, 7)
    p = tmp_path / "sub" / "img.nii.gz"
    sio.save_volume(p, vol, affine)
    out, aff = sio.load_volume(p)
    assert out.shape == (1, 1, 5, 6, 7) and out.dtype == torch.float32
    torch.testing.assert_close(out, vol)
    np.testing.assert_allclose(aff, affine, atol=1e-6)
    raw = nib.load(str(p))
    assert raw.shape == (5, 6, 7)  # i, j, k order, not transposed
    assert raw.get_data_dtype() == np.float32
    assert open(p, "rb").read(2) == b"\x1f\x8b"  # gzip compressed


def test_volume_dtype_and_numpy_input(tmp_path, affine):
    a = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    p = tmp_path / "i.nii"
    sio.save_volume(p, a, affine)
    assert nib.load(str(p)).get_data_dtype() == np.int16
    out, _ = sio.load_volume(p, dtype=torch.float64)
    assert out.dtype == torch.float64
    np.testing.assert_array_equal(out[0, 0].numpy(), a)


def test_labels_round_trip(tmp_path, affine):
    lab = torch.randint(0, 7, (1, 1, 4, 5, 6))
    p = tmp_path / "lab.nii.gz"
    sio.save_labels(p, lab, affine)
    assert nib.load(str(p)).get_data_dtype() == np.uint8
    out, aff = sio.load_labels(p)
    assert out.dtype == torch.int64 and out.shape == (1, 1, 4, 5, 6)
    assert torch.equal(out, lab)
    np.testing.assert_allclose(aff, affine, atol=1e-6)


def test_labels_uint16_and_errors(tmp_path, affine):
    lab = np.zeros((3, 3, 3), dtype=np.int64)
    lab[1, 1, 1] = 300
    p = tmp_path / "big.nii.gz"
    sio.save_labels(p, lab, affine)
    assert nib.load(str(p)).get_data_dtype() == np.uint16
    assert int(sio.load_labels(p)[0].max()) == 300
    with pytest.raises(ValueError):
        sio.save_labels(tmp_path / "neg.nii.gz", -lab, affine)
    img = tmp_path / "img.nii.gz"
    sio.save_volume(img, np.full((3, 3, 3), 0.5), affine)
    with pytest.raises(ValueError, match="non-integer"):
        sio.load_labels(img)


def test_field_round_trip_and_header(tmp_path, affine):
    u = torch.randn(1, 3, 4, 5, 6)
    p = tmp_path / "f.nii.gz"
    sio.save_field(p, u, affine)
    raw = nib.load(str(p))
    assert raw.shape == (4, 5, 6, 3)
    assert raw.get_data_dtype() == np.float32
    assert raw.header["descrip"].item().decode() == "displacement, voxels, ijk"
    assert raw.header.get_intent()[0] == "vector"
    np.testing.assert_allclose(np.asarray(raw.dataobj)[1, 2, 3], u[0, :, 1, 2, 3].numpy())
    out, aff = sio.load_field(p)
    assert out.shape == (1, 3, 4, 5, 6)
    torch.testing.assert_close(out, u)
    np.testing.assert_allclose(aff, affine, atol=1e-6)
    sio.save_field(tmp_path / "g.nii.gz", u[0].numpy(), affine)  # (3, D, H, W) accepted
    torch.testing.assert_close(sio.load_field(tmp_path / "g.nii.gz")[0], u)


def test_load_field_accepts_itk_layout(tmp_path, affine):
    data = np.random.default_rng(0).normal(size=(4, 5, 6, 1, 3)).astype(np.float32)
    p = tmp_path / "itk.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(p))
    out, _ = sio.load_field(p)
    np.testing.assert_allclose(out[0].permute(1, 2, 3, 0).numpy(), data[:, :, :, 0])


def test_failed_write_leaves_no_file(tmp_path, affine, monkeypatch):
    p = tmp_path / "x.nii.gz"

    def boom(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(sio.nib, "save", boom)
    with pytest.raises(OSError):
        sio.save_volume(p, np.zeros((2, 2, 2)), affine)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path, affine, monkeypatch):
    p = tmp_path / "x.nii.gz"
    sio.save_volume(p, np.ones((2, 2, 2)), affine)
    monkeypatch.setattr(sio.nib, "save", lambda img, f: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        sio.save_volume(p, np.zeros((2, 2, 2)), affine)
    assert [q.name for q in tmp_path.iterdir()] == ["x.nii.gz"]
    assert float(sio.load_volume(p)[0].min()) == 1.0


def test_bad_shapes(tmp_path, affine):
    with pytest.raises(ValueError):
        sio.save_field(tmp_path / "f.nii.gz", np.zeros((2, 4, 4, 4)), affine)
    with pytest.raises(ValueError):
        sio.save_volume(tmp_path / "v.nii.gz", np.zeros((2, 4, 4, 4)), affine)


def _writer_in_atomic_path(path, started, release):
    """Child process: enter atomic_path(path), write a partial temporary, then block."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        started.set()
        release.wait(60)


def test_next_write_removes_temporary_of_killed_writer(tmp_path, affine):
    """A SIGKILLed writer cannot clean up; the next write of the same file removes its
    temporary, but not the temporary of a writer that still runs, nor other files' ones."""
    import multiprocessing as mp
    import os
    import signal

    target = tmp_path / "img.nii.gz"
    ctx = mp.get_context("spawn")

    def start():
        started, release = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_writer_in_atomic_path, args=(target, started, release))
        proc.start()
        assert started.wait(60), "writer did not start"
        return proc, release

    killed, _ = start()
    os.kill(killed.pid, signal.SIGKILL)
    killed.join(30)
    debris = [p for p in tmp_path.iterdir() if p.name.startswith(".img.nii.gz.")]
    assert len(debris) == 1 and f".{killed.pid}." in debris[0].name

    alive, release = start()
    other = tmp_path / f".other.nii.gz.{_HOST}.{killed.pid}.0000.tmp.nii.gz"
    other.write_bytes(b"x")
    try:
        sio.save_volume(target, torch.zeros(2, 2, 2), affine)
        left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".img"))
        assert not debris[0].exists()
        assert len(left) == 1 and f".{alive.pid}." in left[0]  # the live writer's is kept
        assert other.exists()
    finally:
        release.set()
        alive.join(30)
    # the live writer ended normally: its temporary became the target, nothing is left
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "img.nii.gz"]
