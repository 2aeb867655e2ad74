"""Phantom generator: determinism, labels, anatomy in RAS, appearance, ingestion grids."""
from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest

from suitsbench import phantom
from suitsbench.manifest import read_manifest

SMALL = (40, 32, 32)
SMALL_SPACING = 4.0


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Histogram mutual information (nats) of two equally shaped arrays."""
    h, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins)
    p = h / h.sum()
    px, py = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (px @ py)[nz])).sum())


def zssd(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of z-normalised arrays."""
    za, zb = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return float(((za - zb) ** 2).mean())


def world_centroid(label: np.ndarray, affine: np.ndarray, value: int) -> np.ndarray:
    idx = np.argwhere(label == value).mean(0)
    return affine[:3, :3] @ idx + affine[:3, 3]


def test_generate_is_deterministic(tmp_path):
    kw = dict(n_per_modality=1, shape=SMALL, spacing=SMALL_SPACING, seed=3)
    m1 = phantom.generate(tmp_path / "a", **kw)
    m2 = phantom.generate(tmp_path / "b", **kw)
    m3 = phantom.generate(tmp_path / "c", **{**kw, "seed": 4})
    names = sorted(p.name for p in m1.parent.iterdir())
    assert names == sorted(p.name for p in m2.parent.iterdir())
    for name in names:
        assert (m1.parent / name).read_bytes() == (m2.parent / name).read_bytes(), name
    a = nib.load(m1.parent / "p000_ct_image.nii.gz").get_fdata()
    c = nib.load(m3.parent / "p000_ct_image.nii.gz").get_fdata()
    assert not np.array_equal(a, c)


def test_render_is_deterministic_and_modalities_share_labels():
    geom = phantom.make_geometry(11, SMALL, SMALL_SPACING)
    ct1, lab1, aff = phantom.render(geom, "ct")
    ct2, lab2, _ = phantom.render(phantom.make_geometry(11, SMALL, SMALL_SPACING), "ct")
    mr, lab_mr, aff_mr = phantom.render(geom, "mr")
    assert np.array_equal(ct1, ct2) and np.array_equal(lab1, lab2)
    assert np.array_equal(lab1, lab_mr) and np.array_equal(aff, aff_mr)
    assert ct1.dtype == np.float32 and lab1.dtype == np.uint8


def test_default_data_set_fast_with_all_labels(tmp_path):
    t0 = time.perf_counter()
    manifest = phantom.generate(tmp_path)          # defaults: 2 x 6 volumes of 80x64x64
    elapsed = time.perf_counter() - t0
    records = read_manifest(manifest)
    assert len(records) == 12
    assert [r.modality for r in records].count("ct") == 6
    assert len({r.subject for r in records}) == 12          # every image another patient
    for r in records:
        img = nib.load(r.image)
        lab = np.asarray(nib.load(r.label).dataobj)
        assert img.shape == (80, 64, 64) and lab.dtype == np.uint8
        assert np.allclose(img.header.get_zooms(), 2.0)
        assert set(np.unique(lab)) == set(range(7)), r.id
        for v in range(1, 7):
            assert (lab == v).sum() >= 50, (r.id, v)      # not a speck
    assert elapsed < 30, f"default phantom took {elapsed:.1f} s"   # ~4 s on 2 busy cores


def test_patients_differ():
    a = phantom.render(phantom.make_geometry(0), "ct")[1]
    b = phantom.render(phantom.make_geometry(1), "ct")[1]
    overlap = [2 * ((a == v) & (b == v)).sum() / ((a == v).sum() + (b == v).sum())
               for v in range(1, 7)]
    assert max(overlap) < 0.97 and min(overlap) > 0.0      # varied, yet same anatomy


@pytest.mark.parametrize("seed", [0, 5])
def test_anatomy_in_ras_world(seed):
    img, lab, aff = phantom.render(phantom.make_geometry(seed), "ct")
    c = {name: world_centroid(lab, aff, v) for v, name in phantom.LABELS.items()}
    # RAS: +x is the patient's right, +y anterior, +z superior
    assert c["liver"][0] > 0 > c["spleen"][0]
    assert c["r_kidney"][0] > 0 > c["l_kidney"][0]
    assert c["r_psoas"][0] > 0 > c["l_psoas"][0]
    assert c["l_kidney"][1] < c["liver"][1] and c["r_kidney"][1] < c["liver"][1]
    assert c["liver"][2] > c["r_psoas"][2] and c["spleen"][2] > c["l_psoas"][2]
    assert (lab[img < -900] == 0).all()                    # no organ in air or gas


def test_ct_and_mr_appearance_models():
    geom = phantom.make_geometry(2)
    ct, lab, aff = phantom.render(geom, "ct", blur=0)
    mr, _, _ = phantom.render(geom, "mr", blur=0)
    x = np.indices(ct.shape).reshape(3, -1)
    tissue = phantom._tissues_and_labels(
        geom, phantom._to_body(geom, (aff[:3, :3] @ x + aff[:3, 3:4]).T))[0].reshape(ct.shape)
    med = lambda img, t: float(np.median(img[tissue == t]))  # noqa: E731
    # CT: fat negative, bone brightest, gas dark, liver/spleen/muscle within 40 HU
    assert med(ct, phantom.FAT) < 0 < med(ct, phantom.MUSCLE) < med(ct, phantom.BONE)
    assert med(ct, phantom.GAS) < -800
    soft = [med(ct, t) for t in (phantom.LIVER, phantom.SPLEEN, phantom.MUSCLE)]
    assert max(soft) - min(soft) < 40
    # MR: fat brightest, bone and muscle dark, spleen below liver (another ordering)
    assert med(mr, phantom.FAT) > med(mr, phantom.LIVER) > med(mr, phantom.SPLEEN)
    assert med(mr, phantom.BONE) < med(mr, phantom.MUSCLE) < med(mr, phantom.LIVER)
    # Rician-like noise: no negative MR values, air not exactly zero
    assert mr.min() >= 0 and med(mr, phantom.AIR) > 0


@pytest.mark.parametrize("seed", [0, 7])
def test_mi_finds_alignment_where_ssd_does_not(seed):
    """Aligned CT/MR of one patient: MI prefers the aligned pair over shifted copies; inside
    the body, z-normalised SSD prefers the shifted copies (tissue mapping is non-monotonic)."""
    geom = phantom.make_geometry(seed)
    ct, _, _ = phantom.render(geom, "ct")
    mr, _, _ = phantom.render(geom, "mr")
    body = ct > -500
    for axis in (0, 1, 2):
        for shift in (2, 4):
            def sl(a, lo, axis=axis, shift=shift):
                return np.take(a, range(lo, a.shape[axis] - shift + lo), axis=axis)
            ct_c, mask = sl(ct, shift), sl(body, shift)
            aligned, shifted = sl(mr, shift), sl(mr, 0)
            assert mutual_information(ct_c, aligned) > mutual_information(ct_c, shifted) + 0.05
            assert zssd(ct_c[mask], aligned[mask]) > zssd(ct_c[mask], shifted[mask])


def test_write_other_orientation_and_spacing(tmp_path):
    manifest = phantom.generate(tmp_path, n_per_modality=1, orientation="LPS", write_spacing=3.0)
    rec = read_manifest(manifest)[0]
    img = nib.load(rec.image)
    assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
    assert np.allclose(img.header.get_zooms()[:3], 3.0)
    assert img.shape == (53, 43, 43)                        # same 160x128x128 mm field of view
    # the same patient lies at the same world position on both grids
    geom = phantom.make_geometry(0)
    _, lab_ras, aff_ras = phantom.render(geom, "ct")
    lab_lps = np.asarray(nib.load(rec.label).dataobj)
    for v in (1, 5):
        d = world_centroid(lab_lps, img.affine, v) - world_centroid(lab_ras, aff_ras, v)
        assert np.linalg.norm(d) < 1.5, (v, d)


def test_grid_affine_centred():
    aff = phantom.grid_affine((10, 20, 30), (1.0, 2.0, 3.0), "PIL")
    assert nib.aff2axcodes(aff) == ("P", "I", "L")
    assert np.allclose(aff[:3, :3] @ np.array([4.5, 9.5, 14.5]) + aff[:3, 3], 0)


def test_variants_change_only_what_they_name():
    """The probe variants (deform_scale, fat_planes, mr_bias) change only what they name: the
    deformation lattice scales (the affine draw is kept), fat is painted only over the visceral
    filler (labels unchanged), the CT ignores mr_bias and the MR's bias field goes."""
    base = phantom.make_geometry(5, SMALL, SMALL_SPACING)
    assert not base.fat_planes
    scaled = phantom.make_geometry(5, SMALL, SMALL_SPACING, deform_scale=3.0)
    np.testing.assert_allclose(scaled.deform_grid, 3.0 * base.deform_grid)
    np.testing.assert_array_equal(scaled.affine, base.affine)

    fat = phantom.make_geometry(5, SMALL, SMALL_SPACING, fat_planes=True)
    x = phantom._to_body(base, phantom._world_points(base.shape, phantom.grid_affine(
        base.shape, base.spacing)))
    t0, l0 = phantom._tissues_and_labels(base, x)
    t1, l1 = phantom._tissues_and_labels(fat, x)
    np.testing.assert_array_equal(l0, l1)
    changed = t0 != t1
    assert changed.sum() > 0.005 * changed.size
    assert (t0[changed] == phantom.VISCERA).all() and (t1[changed] == phantom.FAT).all()

    ct0 = phantom.render(base, "ct")[0]
    np.testing.assert_array_equal(ct0, phantom.render(base, "ct", mr_bias=0.0)[0])
    mr0, lab, _ = phantom.render(base, "mr")
    mr1 = phantom.render(base, "mr", mr_bias=0.0)[0]
    liver = lab == 1
    cv = lambda img: img[liver].std() / img[liver].mean()  # noqa: E731
    assert cv(mr1) < 0.7 * cv(mr0)


def test_draw_slab_ranges_and_slab_grid():
    """A slab: 15-30 slices, its anatomy between -0.15 and 0.6 of the half height, its header
    centre 60-100 mm above or below the other scans' centre; the grid is the field of view's
    plane at that height."""
    draws = [phantom.draw_slab(np.random.default_rng(s), 64.0) for s in range(200)]
    slices, heights, shifts = map(np.array, zip(*draws))
    assert slices.min() == 15 and slices.max() == 30
    assert heights.min() >= -0.15 * 64 and heights.max() <= 0.6 * 64
    centres = heights + shifts
    assert (np.abs(centres) >= 60).all() and (np.abs(centres) <= 100).all()
    assert (centres > 0).any() and (centres < 0).any()
    assert phantom.draw_slab(np.random.default_rng(7), 64.0) == draws[7]
    shape, aff = phantom.slab_grid((80, 64, 64), 2.0, 20, 12.5, "LPS")
    assert shape == (80, 64, 20) and nib.aff2axcodes(aff) == ("L", "P", "S")
    assert np.allclose(aff @ np.array([39.5, 31.5, 9.5, 1.0]), [0, 0, 12.5, 1])


def test_mr_slab_is_a_partial_scan_with_its_header_off(tmp_path):
    """--mr-slab: the first N MR scans are axial slabs of the patient's own anatomy (the
    rendering at some height), written with a header 60-100 mm off the other scans' centre;
    seeded; the CTs and the other MR scans keep the full field of view."""
    kw = dict(n_per_modality=3, shape=SMALL, spacing=SMALL_SPACING, seed=2, mr_slab=2,
              slab_slices=(5, 8))
    recs = read_manifest(phantom.generate(tmp_path / "a", **kw))
    again = read_manifest(phantom.generate(tmp_path / "b", **kw))
    for n, rec in enumerate(recs):
        img, lab = nib.load(rec.image), np.asarray(nib.load(rec.label).dataobj)
        np.testing.assert_array_equal(np.asarray(img.dataobj),
                                      np.asarray(nib.load(again[n].image).dataobj))
        if rec.modality == "ct" or n == 5:
            assert img.shape == SMALL
            continue
        assert 5 <= img.shape[2] <= 8 and img.shape[:2] == SMALL[:2]
        centre = img.affine @ np.append((np.asarray(img.shape) - 1) / 2, 1.0)
        assert 60 <= abs(centre[2]) <= 100
        # the labels are the patient's anatomy at some height (not at the header's)
        geom = phantom.make_geometry(2 * 100003 + n, SMALL, SMALL_SPACING)
        at_header = phantom.render(geom, "mr", img.shape, img.affine)[1]
        assert not at_header.any() or not np.array_equal(at_header, lab)
        assert lab.any()



def test_orientation_and_spacing_of_one_modality(tmp_path):
    """--orientation / --spacing: only the named modality's stored grid changes; the anatomy
    stays at the same world position (anisotropic content resampled, not stretched)."""
    recs = read_manifest(phantom.generate(
        tmp_path, n_per_modality=1, shape=SMALL, spacing=SMALL_SPACING, orientation="LAS",
        write_spacing=(2.0, 2.0, 10.0), grid_modalities=("mr",)))
    ct, mr = nib.load(recs[0].image), nib.load(recs[1].image)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S") and ct.shape == SMALL
    assert nib.aff2axcodes(mr.affine) == ("L", "A", "S")
    assert np.allclose(mr.header.get_zooms()[:3], (2.0, 2.0, 10.0))
    assert mr.shape == (80, 64, 13)                           # 160 x 128 x 128 mm
    _, lab_ras, aff_ras = phantom.render(phantom.make_geometry(1, SMALL, SMALL_SPACING), "mr")
    lab = np.asarray(nib.load(recs[1].label).dataobj)
    for v in (1, 2, 5, 6):                                    # left/right organs stay put
        d = world_centroid(lab, mr.affine, v) - world_centroid(lab_ras, aff_ras, v)
        assert np.linalg.norm(d) < 3.0, (v, d)


@pytest.mark.parametrize("value", [-1024.0, -3024.0])
def test_ct_padding_outside_a_cylindrical_scan_field_of_view(tmp_path, value):
    """--ct-padding: the CT outside the reconstruction cylinder (radius half the larger
    in-plane extent, about the superior-inferior axis) takes the value; the body inside is
    untouched, the MR is not padded."""
    kw = dict(n_per_modality=1, shape=SMALL, spacing=SMALL_SPACING, seed=4)
    plain = read_manifest(phantom.generate(tmp_path / "a", **kw))
    padded = read_manifest(phantom.generate(tmp_path / "b", ct_padding=value, **kw))
    ct0 = np.asarray(nib.load(plain[0].image).dataobj)
    ct1 = np.asarray(nib.load(padded[0].image).dataobj)
    aff = nib.load(padded[0].image).affine
    idx = np.indices(SMALL).reshape(3, -1).T
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    r = np.hypot(world[:, 0], world[:, 1]).reshape(SMALL)
    outside = r > 0.5 * SMALL[0] * SMALL_SPACING
    assert 0.05 < outside.mean() < 0.25                       # the corners of the axial plane
    assert (ct1[outside] == value).all()
    np.testing.assert_array_equal(ct1[~outside], ct0[~outside])
    assert (ct0[outside] > -1100).all()                       # was air and body, not padding
    np.testing.assert_array_equal(np.asarray(nib.load(plain[1].image).dataobj),
                                  np.asarray(nib.load(padded[1].image).dataobj))


def test_pad_scan_fov_hand_case():
    """A 5 x 5 x 1 grid of 1 mm centred on the origin, radius 2 mm: the 4 corners and the 8
    cells at distance sqrt(5) are outside, the 13 others inside."""
    img = np.zeros((5, 5, 1), np.float32)
    out = phantom.pad_scan_fov(img, phantom.grid_affine((5, 5, 1), 1.0), -3024.0, radius=2.0)
    assert (out == -3024).sum() == 12
    assert out[2, 2, 0] == 0 and out[0, 2, 0] == 0 and out[1, 1, 0] == 0
    assert out[0, 0, 0] == -3024 and out[0, 1, 0] == -3024
