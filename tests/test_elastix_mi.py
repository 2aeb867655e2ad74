"""SimpleElastix-MI baseline: parameter map, field conversion (units, axis order, LPS, grids),
recovery of a known deformation, determinism, file I/O."""
from __future__ import annotations

import numpy as np
import pytest
import torch

sitk = pytest.importorskip("SimpleITK")
if not hasattr(sitk, "ElastixImageFilter"):
    pytest.skip("SimpleITK without elastix (install SimpleITK-SimpleElastix)", allow_module_level=True)

from baselines.elastix_mi import deformation_field, register, register_files, run_elastix, to_sitk  # noqa: E402
from baselines.elastix_params import format_map, parameter_map  # noqa: E402
from suits.io import load_field, save_volume  # noqa: E402
from suits.warp import warp  # noqa: E402
from suitsbench.phantom import grid_affine, make_geometry, render  # noqa: E402

SHAPE = (40, 32, 32)


@pytest.fixture(scope="module")
def phantom() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A small CT phantom: image (1,1,D,H,W), body mask (D,H,W) and its RAS 3 mm affine."""
    geom = make_geometry(3, SHAPE, 3.0)
    img, _, affine = render(geom, "ct")
    t = torch.from_numpy(img)[None, None]
    return t, torch.from_numpy(img > -500), affine


def test_parameter_map_paper_settings_and_overrides():
    pm = parameter_map()
    assert pm["Transform"] == ("BSplineTransform",)
    assert pm["NumberOfResolutions"] == ("4",)
    assert "AdvancedMattesMutualInformation" in pm["Metric"]
    assert pm["FinalGridSpacingInVoxels"] == ("4",)
    assert "FinalGridSpacingInPhysicalUnits" not in pm
    assert pm["BSplineTransformSplineOrder"] == ("2",)
    assert pm["Optimizer"] == ("AdaptiveStochasticGradientDescent",)   # elastix default kept
    assert pm["WriteResultImage"] == ("false",)
    pm2 = parameter_map({"MaximumNumberOfIterations": 10, "Metric1Weight": None},
                        final_grid_spacing_voxels=(8, 8, 6), seed=5)
    assert pm2["MaximumNumberOfIterations"] == ("10",)
    assert "Metric1Weight" not in pm2
    assert pm2["FinalGridSpacingInVoxels"] == ("8", "8", "6")
    assert pm2["RandomSeed"] == ("5",)
    assert '(NumberOfResolutions "4")' in format_map(pm)
    with pytest.raises(ValueError, match="only one"):
        parameter_map({"FinalGridSpacingInPhysicalUnits": 8})


def test_parameter_map_schedules_follow_number_of_resolutions():
    """Overriding NumberOfResolutions alone gives elastix's default schedule for that many levels
    (the finest entries of the 4-level one); a schedule of the wrong length is refused up front
    (elastix itself stops with an internal error)."""
    four = parameter_map()["GridSpacingSchedule"]
    assert len(four) == 4
    for n in (1, 2, 3):
        pm = parameter_map({"NumberOfResolutions": n})
        assert pm["NumberOfResolutions"] == (str(n),)
        assert pm["GridSpacingSchedule"] == four[4 - n:]
    assert parameter_map({"NumberOfResolutions": 2, "GridSpacingSchedule": [2, 1]})[
        "GridSpacingSchedule"] == ("2", "1")
    with pytest.raises(ValueError, match="GridSpacingSchedule has 3 values but NumberOfResolutions is 2"):
        parameter_map({"NumberOfResolutions": 2, "GridSpacingSchedule": [4, 2, 1]})
    with pytest.raises(ValueError, match="FixedImagePyramidSchedule has 2 values"):
        parameter_map({"FixedImagePyramidSchedule": [2, 1]})
    assert len(parameter_map({"FixedImagePyramidSchedule": [8] * 3 + [4] * 3 + [2] * 3 + [1] * 3})[
        "FixedImagePyramidSchedule"]) == 12
    with pytest.raises(ValueError, match="one integer"):
        parameter_map({"NumberOfResolutions": "two"})
    with pytest.raises(ValueError, match="give 6 values"):   # elastix would silently ignore it
        parameter_map({"NumberOfResolutions": 2, "FixedImagePyramidSchedule": [2, 1]})


def test_check_overrides_names_the_bad_key():
    from baselines.elastix_params import check_overrides

    check_overrides({"NumberOfResolutions": 3, "GridSpacingSchedule": [3, 2, 1],
                     "Metric1Weight": 30, "Metric": ["A", "B"], "WriteResultImage": False,
                     "FinalGridSpacingInVoxels": None, "FinalGridSpacingInPhysicalUnits": 8})
    # what elastix also accepts: per-axis grid schedules, nested pyramid schedules, numpy values
    check_overrides({"NumberOfResolutions": np.int64(2), "GridSpacingSchedule": [2, 2, 2, 1, 1, 1],
                     "FixedImagePyramidSchedule": [[2, 2, 2], [1, 1, 1]],
                     "Metric1Weight": np.float32(3), "WriteResultImage": np.bool_(False)})
    assert parameter_map({"WriteResultImage": np.bool_(True)})["WriteResultImage"] == ("true",)
    for bad, match in [({"Metric1Weight": {"a": 1}}, "Metric1Weight: value"),
                       ({"NumberOfResolutions": None}, "cannot be removed"),
                       ({"NumberOfResolutions": True}, "from 1 to 10"),
                       ({"MovingImagePyramidSchedule": [4, 2, 1, 1]}, "give 12 values"),
                       ({"NumberOfResolutions": 2, "GridSpacingSchedule": [2, 2, 1, 1]},
                        "give 2 or 6 values"),
                       ({"Metric": []}, "Metric: value"),
                       ({"Final Grid": 4}, "'Final Grid' is not"),
                       ({"GridSpacingSchedule": [2, 1]}, "has 2 values but NumberOfResolutions is 4"),
                       ({"NumberOfResolutions": 0}, "from 1 to 10"),
                       ({"FinalGridSpacingInPhysicalUnits": 8}, "only one")]:
        with pytest.raises(ValueError, match=match):
            check_overrides(bad)


def test_fewer_resolutions_run(phantom):
    """A map with 2 resolutions and only NumberOfResolutions overridden runs in elastix."""
    img, _, affine = phantom
    u = register(img, img, affine, params=parameter_map({"NumberOfResolutions": 2,
                                                         "MaximumNumberOfIterations": 20}), threads=2)
    assert u.shape == (1, 3, *SHAPE) and torch.isfinite(u).all()


def test_to_sitk_geometry_matches_nifti_affine():
    """Voxel (i,j,k) of the numpy volume lands at ITK index (i,j,k) and the NIfTI world point
    (RAS) equals ITK's physical point (LPS) with x, y negated."""
    affine = grid_affine((5, 6, 7), (2.0, 3.0, 1.5), "LPS")
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    img = to_sitk(vol, affine)
    assert img.GetSize() == (5, 6, 7)
    idx = (4, 1, 3)
    assert img.GetPixel(idx) == vol[idx]
    ras = affine @ np.array([*idx, 1.0])
    lps = img.TransformIndexToPhysicalPoint(idx)
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]], atol=1e-9)


def test_identical_images_give_near_zero_field(phantom):
    """Identical inputs: only optimiser noise, well below a voxel on average."""
    img, body, affine = phantom
    u = register(img, img, affine, threads=2)
    assert u.shape == (1, 3, *SHAPE) and u.dtype == torch.float32
    # elastix's default stochastic optimiser (ASGD, 2048 random samples per iteration, ~3600
    # B-spline parameters at the finest level) leaves sampling noise, not a systematic field
    n = u.norm(dim=1)[0]
    assert float(n[body].mean()) < 0.5
    assert float(torch.quantile(n.flatten(), 0.95)) < 1.0
    assert float(n.max()) < 2.5


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_pure_shift_axis_order_lps_anisotropic(phantom, axis):
    """fixed(x) = moving(x + s e_axis) on an LPS, anisotropic grid: u ≈ s e_axis in voxels."""
    img, body, _ = phantom
    affine = grid_affine(SHAPE, (2.0, 3.0, 2.5), "LPS")
    s = 1.5 if axis != 1 else -1.5
    shift = torch.zeros(1, 3, *SHAPE)
    shift[:, axis] = s
    fixed = warp(img, shift)
    u = register(fixed, img, affine, threads=2)
    inner = body.clone()
    inner[:4], inner[-4:], inner[:, :4], inner[:, -4:], inner[:, :, :4], inner[:, :, -4:] = (False,) * 6
    med = [float(u[0, c][inner].median()) for c in range(3)]
    for c in range(3):
        assert med[c] == pytest.approx(s if c == axis else 0.0, abs=0.3), med


def test_known_smooth_deformation_is_recovered(phantom):
    img, body, affine = phantom
    x = torch.from_numpy(np.indices(SHAPE).astype(np.float32))
    D, H, W = SHAPE
    u_true = torch.stack([
        2.0 * torch.sin(2 * np.pi * x[1] / H) * torch.cos(np.pi * x[0] / D),
        1.5 * torch.sin(2 * np.pi * x[2] / W),
        -1.5 * torch.cos(2 * np.pi * x[0] / D),
    ])[None]
    fixed = warp(img, u_true)
    u = register(fixed, img, affine, threads=2)
    epe = (u - u_true).norm(dim=1)[0][body]
    initial = u_true.norm(dim=1)[0][body]
    assert float(initial.mean()) > 1.2
    assert float(epe.mean()) < 1.0


def test_moving_on_another_grid_translation(phantom):
    """Same array, moving grid translated by 2 voxels along k in world: u ≈ (0, 0, 2)."""
    img, body, affine = phantom
    moving_affine = affine.copy()
    moving_affine[:3, 3] += affine[:3, :3] @ np.array([0.0, 0.0, 2.0])
    u = register(img, img, affine, moving_affine, threads=2)
    med = [float(u[0, c][body].median()) for c in range(3)]
    np.testing.assert_allclose(med, [0.0, 0.0, 2.0], atol=0.25)


def test_deterministic_and_register_files(tmp_path, phantom):
    img, _, affine = phantom
    small = img[..., ::2, ::2, ::2].contiguous()
    aff = affine.copy()
    aff[:3, :3] *= 2
    moving = torch.roll(small, 1, dims=2)
    params = parameter_map({"MaximumNumberOfIterations": 40})
    u1 = register(small, moving, aff, params=params, threads=2)
    u2 = register(small, moving, aff, params=params, threads=2)
    assert float(u1.abs().max()) > 0.1
    assert torch.equal(u1, u2)
    save_volume(tmp_path / "f.nii.gz", small, aff)
    save_volume(tmp_path / "m.nii.gz", moving, aff)
    seconds = register_files(tmp_path / "f.nii.gz", tmp_path / "m.nii.gz", tmp_path / "out" / "u.nii.gz",
                             params=params, threads=2)
    assert seconds > 0
    u3, a3 = load_field(tmp_path / "out" / "u.nii.gz")
    np.testing.assert_allclose(a3, aff, atol=1e-5)
    torch.testing.assert_close(u3, u1, atol=1e-5, rtol=0)


def test_deformation_field_is_converted_from_lps_millimetres():
    """A pure translation transform map (elastix's own, in LPS mm) becomes voxels ijk."""
    affine = grid_affine((6, 5, 4), (2.0, 4.0, 1.0), "RAS")
    tmap = {
        "Transform": ("TranslationTransform",), "NumberOfParameters": ("3",),
        "TransformParameters": ("2.0", "-8.0", "3.0"),                 # LPS mm
        "InitialTransformParameterFileName": ("NoInitialTransform",),
        "HowToCombineTransforms": ("Compose",), "FixedImageDimension": ("3",),
        "MovingImageDimension": ("3",), "FixedInternalImagePixelType": ("float",),
        "MovingInternalImagePixelType": ("float",), "Size": ("6", "5", "4"),
        "Index": ("0", "0", "0"), "Spacing": tuple(str(s) for s in to_sitk(np.zeros((6, 5, 4)), affine).GetSpacing()),
        "Origin": tuple(str(o) for o in to_sitk(np.zeros((6, 5, 4)), affine).GetOrigin()),
        "Direction": tuple(str(d) for d in to_sitk(np.zeros((6, 5, 4)), affine).GetDirection()),
        "UseDirectionCosines": ("true",), "ResampleInterpolator": ("FinalBSplineInterpolator",),
        "FinalBSplineInterpolationOrder": ("1",), "Resampler": ("DefaultResampler",),
        "DefaultPixelValue": ("0",), "ResultImageFormat": ("nii",), "ResultImagePixelType": ("float",),
        "CompressResultImage": ("false",),
    }
    u = deformation_field([tmap], affine, (6, 5, 4))
    # LPS (2, -8, 3) mm = RAS (-2, 8, 3) mm = voxels (-1, 2, 3) with spacing (2, 4, 1)
    expected = torch.tensor([-1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1).expand(1, 3, 6, 5, 4)
    torch.testing.assert_close(u, expected, atol=1e-4, rtol=0)


def test_run_elastix_returns_bspline_transform(phantom):
    img, _, affine = phantom
    small = img[..., ::2, ::2, ::2].contiguous()
    aff = affine.copy()
    aff[:3, :3] *= 2
    tmaps = run_elastix(small, small, aff, params=parameter_map({"MaximumNumberOfIterations": 5}),
                        threads=1)
    assert tmaps[-1]["Transform"] == ("BSplineTransform",)
    assert tmaps[-1]["BSplineTransformSplineOrder"] == ("2",)
    # final grid spacing 4 voxels of 6 mm = 24 mm
    assert [float(s) for s in tmaps[-1]["GridSpacing"]] == pytest.approx([24.0] * 3)


def _padded_pair(phantom):
    """On a 6 mm grid: fixed = phantom, moving = the phantom shifted by one voxel along k whose
    last 6 slices along i are padding (the image minimum), and the moving fov mask."""
    img, _, affine = phantom
    fixed = img[..., ::2, ::2, ::2].contiguous()
    aff = affine.copy()
    aff[:3, :3] *= 2
    moving = torch.roll(fixed, 1, dims=4)
    fov = torch.ones(fixed.shape[-3:])
    fov[-6:] = 0
    moving[0, 0][fov == 0] = float(fixed.min())
    return fixed, moving, fov, aff


def test_fov_masks_reach_elastix_only_with_padding(tmp_path, phantom):
    """A padded moving mask changes the field (elastix samples only inside it); masks of all
    ones give the very field of no masks; a mask on another grid is refused, naming the file."""
    fixed, moving, fov, affine = _padded_pair(phantom)
    shape = tuple(fov.shape)
    params = parameter_map({"NumberOfResolutions": 1, "MaximumNumberOfIterations": 30})
    for name, vol in [("f", fixed), ("m", moving), ("fov", fov), ("ones", torch.ones(shape)),
                      ("small", torch.ones(shape[0] - 1, *shape[1:]))]:
        save_volume(tmp_path / f"{name}.nii.gz", vol, affine)

    def run(fixed_mask, moving_mask, out):
        register_files(tmp_path / "f.nii.gz", tmp_path / "m.nii.gz", tmp_path / out, params=params,
                       threads=2, fixed_mask_path=fixed_mask, moving_mask_path=moving_mask)
        return load_field(tmp_path / out)[0]

    plain = run(None, None, "plain.nii.gz")
    ones = run(tmp_path / "ones.nii.gz", tmp_path / "ones.nii.gz", "ones_u.nii.gz")
    masked = run(tmp_path / "ones.nii.gz", tmp_path / "fov.nii.gz", "masked.nii.gz")
    assert torch.equal(ones, plain)
    assert masked.shape == (1, 3, *shape) and torch.isfinite(masked).all()
    assert float((masked - plain).abs().max()) > 0.05
    with pytest.raises(ValueError, match=r"small\.nii\.gz has shape \(19, 16, 16\)"):
        run(None, tmp_path / "small.nii.gz", "bad.nii.gz")


def test_masks_are_not_eroded_on_a_small_image(phantom):
    """With the default 4-level pyramid elastix's mask erosion empties the padded 20x16x16
    moving mask (every sample then maps outside it, an internal error); the masks are passed
    with ErodeMask false, so the run works; a map that asks for erosion gets it."""
    fixed, moving, fov, affine = _padded_pair(phantom)
    u = register(fixed, moving, affine, params=parameter_map({"MaximumNumberOfIterations": 5}),
                 threads=2, moving_mask=fov)
    assert u.shape == (1, 3, *fov.shape) and torch.isfinite(u).all()
    with pytest.raises(RuntimeError, match="elastix"):
        register(fixed, moving, affine, threads=2, moving_mask=fov,
                 params=parameter_map({"MaximumNumberOfIterations": 5, "ErodeMask": True}))
