"""Affine pre-registration: block matching, trimmed least squares, pairwise CT/MR registration of
known affines, the groupwise log-Euclidean mean space, resampling and transform files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from suitsbench import phantom as P
from suitsbench.affine import AffineSettings, initial_transform, register_affine, resample_affine
from suitsbench.blockmatch import block_match, trimmed_affine_fit
from suitsbench.errors import InputError
from suitsbench.groupwise import (groupwise_mean, inverse_consistency_mm, load_row,
                                  load_transform, log_euclidean_mean, mean_space_grid,
                                  pairwise_all, pairwise_row, real_logm, resample_to_space,
                                  save_row, save_transform, symmetrise)

SPACING = 2.0


def random_affine(rng: np.random.Generator, degrees: float = 10.0, scale: float = 0.1,
                  translation: float = 10.0) -> np.ndarray:
    """Rotation of exactly ``degrees`` about a random axis, per-axis scale within
    ``1 +- scale``, translation within ``+-translation`` mm per axis."""
    axis = rng.normal(size=3)
    R = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(degrees)).as_matrix()
    Y = np.eye(4)
    Y[:3, :3] = R @ np.diag(rng.uniform(1 - scale, 1 + scale, 3))
    Y[:3, 3] = rng.uniform(-translation, translation, 3)
    return Y


def shift(t) -> np.ndarray:
    S = np.eye(4)
    S[:3, 3] = t
    return S


def organ_points(label: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Homogeneous world coordinates (4, N) of the organ voxels."""
    idx = np.argwhere(label > 0).astype(float)
    return np.asarray(affine, float) @ np.c_[idx, np.ones(len(idx))].T


def mean_error_mm(T: np.ndarray, Y: np.ndarray, points: np.ndarray) -> float:
    return float(np.linalg.norm(((T - Y) @ points)[:3], axis=0).mean())


def render_moved(geom, modality: str, Y0: np.ndarray, header: np.ndarray | None = None):
    """The patient moved by ``Y0`` (world mm) on the standard grid, written with header
    ``header @ A``: a fixed-world point ``p`` of the unmoved patient is at header world
    ``header @ Y0 @ p`` of the result. Returns ``(image, label, affine, true T)``."""
    A = P.grid_affine(geom.shape, geom.spacing)
    H = np.eye(4) if header is None else header
    img, lab, _ = P.render(geom, modality, geom.shape, np.linalg.inv(Y0) @ A)
    return img, lab, H @ A, H @ Y0


@pytest.fixture(scope="module")
def patient():
    geom = P.make_geometry(11)
    ct, lab, A = P.render(geom, "ct")
    return geom, ct, lab, A


# ----------------------------------------------------------------------------- building blocks

def test_block_match_recovers_integer_shift():
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.avg_pool3d(torch.rand(1, 4, 28, 28, 28, generator=g), 3, 1)
    fixed = base[:, :, 3:21, 3:21, 3:21]
    moving = base[:, :, 2:20, 4:22, 3:21]      # moving(x + d) = fixed(x) with d = (1, -1, 0)
    centres, disp, distinct = block_match(fixed, moving, search=2, block=4, stride=2)
    assert centres.shape == disp.shape == distinct.shape == (512, 3)
    assert torch.all(distinct >= 0)
    # interior blocks (the shifted-in border is replicate padding)
    inner = (centres >= 3).all(1) & (centres <= 14).all(1)
    assert torch.allclose(disp[inner], torch.tensor([1.0, -1.0, 0.0]).expand_as(disp[inner]),
                          atol=0.15)


def test_trimmed_fit_ignores_outliers():
    rng = np.random.default_rng(0)
    U = random_affine(rng)
    src = rng.uniform(-60, 60, (300, 3))
    dst = src @ U[:3, :3].T + U[:3, 3]
    bad = rng.choice(300, 90, replace=False)
    dst[bad] += rng.normal(0, 30, (90, 3))
    fit = trimmed_affine_fit(src, dst, trim=0.5, iterations=4)
    assert np.allclose(fit, U, atol=1e-6)
    plain = trimmed_affine_fit(src, dst, trim=1.0)
    assert not np.allclose(plain, U, atol=1e-2)          # the outliers do matter untrimmed
    assert np.array_equal(trimmed_affine_fit(src[:5], dst[:5]), np.eye(4))


def test_initial_transform_aligns_centres_of_mass(patient):
    geom, ct, lab, A = patient
    T = initial_transform(ct, ct, A, shift([150.0, -80.0, 40.0]) @ A, "com")
    assert np.allclose(T, shift([150.0, -80.0, 40.0]), atol=1e-6)
    with pytest.raises(ValueError):
        initial_transform(ct, ct, A, A, "nonsense")


def test_resample_affine_pulls_back_through_T(patient):
    """The convention: moving resampled on the fixed grid through T reproduces the fixed."""
    geom, ct, lab, A = patient
    Y0 = random_affine(np.random.default_rng(3))
    _, lab_m, A_m, T_true = render_moved(geom, "mr", Y0, shift([0.0, 0.0, 300.0]))
    back = resample_affine(lab_m, A_m, T_true, A, lab.shape, order=0)
    assert back.dtype == lab_m.dtype
    organ = lab > 0
    assert (back[organ] == lab[organ]).mean() > 0.9     # nearest-neighbour boundary voxels
    wrong = resample_affine(lab_m, A_m, np.linalg.inv(T_true), A, lab.shape, order=0)
    assert (wrong[organ] == lab[organ]).mean() < 0.5


# ----------------------------------------------------------------------------- pairwise

@pytest.mark.parametrize("seed,header_shift", [(1, 0.0), (2, 0.0), (4, 180.0)])
def test_register_affine_recovers_known_affine_ct_to_mr(patient, seed, header_shift):
    """Same patient, CT fixed and MR moving, known affine (10 degrees, 10 % scale, 10 mm);
    ``header_shift`` moves the MR's world coordinates so the fields of view barely overlap."""
    geom, ct, lab, A = patient
    Y0 = random_affine(np.random.default_rng(seed))
    mr, _, A_m, T_true = render_moved(geom, "mr", Y0, shift([header_shift, -header_shift / 2,
                                                             header_shift]))
    pts = organ_points(lab, A)
    before = mean_error_mm(initial_transform(ct, mr, A, A_m), T_true, pts)
    T = register_affine(ct, mr, A, A_m, device="cpu")
    assert T.shape == (4, 4) and T.dtype == np.float64
    assert np.array_equal(T[3], [0, 0, 0, 1])
    err = mean_error_mm(T, T_true, pts)
    assert err < SPACING, f"mean organ error {err:.2f} mm (initial {before:.2f} mm)"
    assert err < 0.5 * before


def test_register_affine_accepts_tensors_and_identical_images(patient):
    geom, ct, lab, A = patient
    T = register_affine(torch.from_numpy(ct)[None, None], ct, A, A,
                        AffineSettings(levels=(4,), iterations=3))
    assert mean_error_mm(T, np.eye(4), organ_points(lab, A)) < 0.5 * SPACING


# ----------------------------------------------------------------------------- groupwise

def test_groupwise_of_known_affine_copies_lands_within_a_voxel(patient, tmp_path):
    geom, _, lab, A = patient
    rng = np.random.default_rng(7)
    images, labels, truth = {}, {}, {}
    for k, modality in enumerate(("ct", "mr", "mr")):
        Y0 = random_affine(rng, degrees=8.0)
        img, lab_k, A_k, Y = render_moved(geom, modality, Y0, shift([70.0 * k, 0.0, 0.0]))
        images[f"s{k}"], labels[f"s{k}"], truth[f"s{k}"] = (img, A_k), lab_k, Y
    ids = list(images)
    T = pairwise_all(images)
    assert set(T) == {(i, j) for i in ids for j in ids if i != j}
    M = groupwise_mean(T, ids)
    # unbiased: the log-Euclidean mean of the images' transforms is the identity
    assert np.abs(sum(real_logm(M[i]) for i in ids)).max() < 1e-8
    # an organ point x of the patient is at Y_i x in image i, at M_i Y_i x in the mean space
    pts = organ_points(lab, A)
    mapped = {i: (M[i] @ truth[i] @ pts)[:3] for i in ids}
    for a in ids:
        for b in ids:
            if a < b:
                d = np.linalg.norm(mapped[a] - mapped[b], axis=0).mean()
                assert d < SPACING, f"{a} vs {b}: {d:.2f} mm apart in the mean space"
    # resampled label maps overlap in the mean space (reference grid from the group)
    ref, shape = mean_space_grid([images[i][1] for i in ids], [lab.shape] * 3,
                                 [M[i] for i in ids])
    aligned = {i: resample_to_space(labels[i], images[i][1], M[i], ref, shape, order=0)
               for i in ids}
    img0 = resample_to_space(images["s0"][0], images["s0"][1], M["s0"], ref, shape)
    assert img0.shape == shape and img0.dtype == np.float32
    for a in ids:
        assert aligned[a].dtype == np.uint8 and set(np.unique(aligned[a])) <= set(range(7))
        for b in ids:
            if a < b:
                both = ((aligned[a] > 0) & (aligned[a] == aligned[b])).sum()
                dice = 2 * both / ((aligned[a] > 0).sum() + (aligned[b] > 0).sum())
                assert dice > 0.8, f"{a} vs {b}: organ Dice {dice:.2f}"
    # the registrations' own inverse inconsistency is small, and symmetrising removes it
    for a, b in (("s0", "s1"), ("s1", "s2")):
        assert inverse_consistency_mm(T[(a, b)], T[(b, a)], images[a][1], lab.shape) < 3 * SPACING
    S = symmetrise(T, ids)
    assert inverse_consistency_mm(S[("s0", "s1")], S[("s1", "s0")], A, lab.shape) < 1e-6
    # rows round-trip through the pairwise TSV files
    for i in ids:
        save_row(tmp_path / f"{i}.tsv", i, {j: T[(i, j)] for j in ids if j != i})
    rows = {}
    for i in ids:
        rows.update(load_row(tmp_path / f"{i}.tsv"))
    M2 = groupwise_mean({(i, j): t for i, r in rows.items() for j, t in r.items()}, ids)
    for i in ids:
        assert np.array_equal(M2[i], M[i])


def test_groupwise_mean_of_translations_is_exact():
    """Commuting transforms: every image's content lands exactly at the mean position."""
    offsets = {"a": np.array([0.0, 0, 0]), "b": np.array([30.0, -6, 3]),
               "c": np.array([-12.0, 9, 60])}
    Y = {k: shift(v) for k, v in offsets.items()}
    ids = list(Y)
    T = {(i, j): Y[j] @ np.linalg.inv(Y[i]) for i in ids for j in ids if i != j}
    M = groupwise_mean(T, ids)
    centre = np.mean(list(offsets.values()), 0)
    for i in ids:
        assert np.allclose(M[i] @ Y[i], shift(centre), atol=1e-9)
    # one direction per pair is enough (the inverse is used)
    half = {(i, j): t for (i, j), t in T.items() if i < j}
    M_half = groupwise_mean(half, ids)
    for i in ids:
        assert np.allclose(M_half[i], M[i], atol=1e-9)
    with pytest.raises(KeyError):
        groupwise_mean({("a", "b"): T[("a", "b")]}, ids)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16])
def test_one_direction_registers_every_pair_once_in_balanced_rows(n):
    from suitsbench.pairwise_plan import partners

    ids = [f"s{k:02d}" for k in range(n)]
    both = [(i, j) for i in ids for j in partners(ids, i, "both")]
    one = [(i, j) for i in ids for j in partners(ids, i, "one")]
    assert sorted(both) == sorted((i, j) for i in ids for j in ids if i != j)
    assert len(one) == len({frozenset(p) for p in one}) == n * (n - 1) // 2
    sizes = [len(partners(ids, i, "one")) for i in ids]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="directions"):
        partners(ids, ids[0], "half")


def test_pairwise_row_registers_only_the_partners(patient):
    """moving_ids limits a row to its partners; an unknown id is an error."""
    _, ct, _, A = patient
    images = {"a": (ct, A), "b": (ct, A), "c": (ct, A)}
    row = pairwise_row("a", images, moving_ids=["c"], settings=AffineSettings(levels=(4,)))
    assert list(row) == ["c"] and np.allclose(row["c"], np.eye(4), atol=0.05)
    with pytest.raises(KeyError, match="moving ids"):
        pairwise_row("a", images, moving_ids=["d"])


def test_symmetrised_mean_averages_inconsistent_pairs():
    rng = np.random.default_rng(5)
    Tab, Tba = random_affine(rng), random_affine(rng)      # deliberately inconsistent
    M = groupwise_mean({("a", "b"): Tab, ("b", "a"): Tba}, ["a", "b"])
    expected_log = 0.25 * (real_logm(Tab) - real_logm(Tba))
    assert np.allclose(real_logm(M["a"]), expected_log, atol=1e-8)
    assert np.allclose(M["b"], np.linalg.inv(M["a"]), atol=1e-8)
    Mf = groupwise_mean({("a", "b"): Tab, ("b", "a"): Tba}, ["a", "b"], symmetric=False)
    assert np.allclose(real_logm(Mf["a"]), 0.5 * real_logm(Tab), atol=1e-8)


def test_mean_of_identities_is_identity():
    ids = ["p0", "p1", "p2", "p3"]
    T = {(i, j): np.eye(4) for i in ids for j in ids if i != j}
    M = groupwise_mean(T, ids)
    for i in ids:
        assert np.array_equal(M[i], np.eye(4)) or np.allclose(M[i], np.eye(4), atol=1e-14)
    assert np.allclose(log_euclidean_mean([np.eye(4)] * 3), np.eye(4), atol=1e-14)


def test_log_euclidean_mean_and_real_logm():
    rng = np.random.default_rng(2)
    Y = random_affine(rng)
    assert np.allclose(log_euclidean_mean([Y, np.linalg.inv(Y)]), np.eye(4), atol=1e-9)
    assert np.allclose(log_euclidean_mean([Y, Y]), Y, atol=1e-9)
    half = log_euclidean_mean([Y, np.eye(4)])
    assert np.allclose(half @ half, Y, atol=1e-9)          # the geodesic midpoint
    L = real_logm(Y)
    assert L.dtype == np.float64 and np.array_equal(L[3], np.zeros(4))
    with pytest.raises(ValueError):
        real_logm(np.diag([-1.0, 1.0, 1.0, 1.0]))           # a reflection has no real log


def test_mean_space_grid_and_identity_resampling(patient):
    geom, ct, lab, A = patient
    ref, shape = mean_space_grid([A], [lab.shape], [shift([10.0, 0, -4.0])])
    assert shape == lab.shape
    assert np.allclose(ref[:3, :3], A[:3, :3]) and np.allclose(ref[:3, 3], A[:3, 3] + [10, 0, -4])
    same = resample_to_space(lab, A, np.eye(4), A, lab.shape, order=0)
    assert np.array_equal(same, lab)
    moved = resample_to_space(lab, A, shift([10.0, 0, -4.0]), ref, shape, order=0)
    assert np.array_equal(moved, lab)        # the grid moved with the image


def test_transform_files_round_trip(tmp_path):
    rng = np.random.default_rng(9)
    Y = random_affine(rng)
    path = tmp_path / "mean" / "p001.txt"
    save_transform(path, Y, comment="p001 -> mean space")
    assert np.array_equal(load_transform(path), Y)
    assert path.read_text().startswith("#")
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]   # no temp left
    (tmp_path / "bad.txt").write_text("1 0 0\n0 1 0\n0 0 1\n")
    with pytest.raises(InputError, match="bad.txt"):
        load_transform(tmp_path / "bad.txt")
    save_row(tmp_path / "row.tsv", "p001", {"p002": Y, "p003": np.eye(4)})
    rows = load_row(tmp_path / "row.tsv")
    assert list(rows) == ["p001"] and np.array_equal(rows["p001"]["p002"], Y)
    (tmp_path / "bad.tsv").write_text("a\tb\n")
    with pytest.raises(InputError):
        load_row(tmp_path / "bad.tsv")


# ----------------------------------------------------------------------------- global search

def test_masked_cost_map_matches_brute_force():
    """FFT cost maps against a direct sum over the overlap for a few offsets."""
    from suitsbench.globalinit import masked_cost_map
    g = torch.Generator().manual_seed(3)
    ff, fm = torch.rand(2, 5, 6, 4, generator=g).double(), torch.rand(2, 4, 3, 5, generator=g).double()
    wf = (torch.rand(5, 6, 4, generator=g) > 0.2).double()
    wm = (torch.rand(4, 3, 5, generator=g) > 0.2).double()
    ssd, n = masked_cost_map(ff, wf, fm, wm, "ssd")
    ncc, _ = masked_cost_map(ff, wf, fm, wm, "ncc")
    for d in [(0, 0, 0), (1, -2, 2), (-3, 1, -1), (2, 0, -3)]:
        pf, pm, w = [], [], []
        for v in np.ndindex(5, 6, 4):
            u = tuple(a + b for a, b in zip(v, d))
            if all(0 <= x < s for x, s in zip(u, (4, 3, 5))):
                ww = float(wf[v] * wm[u])
                if ww:
                    pf.append(ff[(slice(None),) + v].numpy())
                    pm.append(fm[(slice(None),) + u].numpy())
        e = (d[0] + 4, d[1] + 5, d[2] + 3)     # index d + sf - 1
        assert n[e] == len(pf)
        a, b = np.array(pf), np.array(pm)
        assert ssd[e] == pytest.approx(((a - b) ** 2).sum(1).mean(), rel=1e-9)
        a0, b0 = a - a.mean(0), b - b.mean(0)
        r = (a0 * b0).sum() / np.sqrt((a0 ** 2).sum() * (b0 ** 2).sum())
        assert ncc[e] == pytest.approx(1 - r, rel=1e-9, abs=1e-12)


def slab_of(geom, z_centre: float, slices: int, header_z: float, grid_slices: int = 64):
    """The patient's MR as an axial slab of ``slices`` 2 mm slices centred at height
    ``z_centre`` (mm), written with its header moved by ``header_z`` mm and padded to
    ``grid_slices`` slices with its minimum as preprocessing pads. Returns ``(image, label,
    affine, fov mask, true T)`` with ``T`` the slab's world -> the full grid's world."""
    from suitsbench.preprocess import crop_or_pad
    shape = (geom.shape[0], geom.shape[1], slices)
    A = P.grid_affine(shape, SPACING)
    A[2, 3] += z_centre
    img, lab, _ = P.render(geom, "mr", shape, A)
    H = shift([0.0, 0.0, header_z])
    full = (shape[0], shape[1], grid_slices)
    img_p, A_p = crop_or_pad(img, H @ A, full, float(img.min()))
    lab_p, _ = crop_or_pad(lab, H @ A, full, 0)
    mask, _ = crop_or_pad(np.ones(shape, np.uint8), H @ A, full, 0)
    return img_p, lab_p, A_p, mask, np.linalg.inv(H)


@pytest.mark.slow
def test_search_finds_a_slab_that_com_leaves_out_of_range(patient):
    """A 40 mm MR slab of the patient 44 mm above the CT's centre, its header 90 mm off: the
    centre of mass starts 44 mm away (beyond block matching's reach); the search lands within a
    lattice cell and the registration within 3 mm."""
    geom, ct, lab, A = patient
    mr, lab_s, A_s, mask, T_true = slab_of(geom, 44.0, 20, 90.0)
    pts = organ_points(lab_s, A_s)
    com = initial_transform(mr, ct, A_s, A, "com", fixed_mask=mask)
    T0 = initial_transform(mr, ct, A_s, A, "search", fixed_mask=mask)
    assert mean_error_mm(com, T_true, pts) > 30
    assert mean_error_mm(T0, T_true, pts) < 5
    T = register_affine(mr, ct, A_s, A, init="search", fixed_mask=mask)
    assert mean_error_mm(T, T_true, pts) < 3.0
    T_com = register_affine(mr, ct, A_s, A, init="com", fixed_mask=mask)
    assert mean_error_mm(T_com, T_true, pts) > 10


@pytest.mark.slow
def test_search_keeps_the_start_of_full_fields_of_view():
    """Full fields of view whose centres of mass agree (the embedded phantom's pairs): the
    search's winner does not beat the centre-of-mass start by the margin, the start is kept."""
    from suitsbench.globalinit import search_initial
    imgs = [P.render(P.make_geometry(n, deform_scale=3.0, fat_planes=True), m)
            for n, m in ((1, "ct"), (3, "ct"), (7, "mr"))]
    for (f, _, fa), (m, _, ma) in [(imgs[0], imgs[1]), (imgs[1], imgs[0]), (imgs[2], imgs[0])]:
        T0 = initial_transform(f, m, fa, ma, "com")
        T, res = search_initial(f, m, fa, ma, T0)
        assert np.array_equal(T, T0)
        assert res.start_overlap > 0.9
    f, _, fa = imgs[2]
    m, _, ma = imgs[0]
    assert register_affine(f, m, fa, ma, init="search").tobytes() == register_affine(
        f, m, fa, ma, init="com").tobytes()


# ----------------------------------------------------------------------------- partial scans

def test_mean_space_of_the_full_scans_places_slabs_through_them():
    """Three full scans and two slabs (field-of-view masks filling 30 % of the grid) with exact
    transforms, except between the slabs (they share no anatomy: 80 mm off). With
    template_fov 0.75 the mean space is the full scans' mean and every image lands exactly
    there; with every image in the template the slabs' wrong pair pulls everything off."""
    from suitsbench.groupwise import template_ids
    offsets = {"a": [0.0, 0, 0], "b": [30.0, -6, 3], "c": [-12.0, 9, 60], "s1": [5.0, 2, -40],
               "s2": [-8.0, 4, 25]}
    Y = {k: shift(v) for k, v in offsets.items()}
    ids = list(Y)
    T = {(i, j): Y[j] @ np.linalg.inv(Y[i]) for i in ids for j in ids if i != j}
    T[("s1", "s2")] = T[("s1", "s2")] @ shift([0.0, 0.0, 80.0])
    T[("s2", "s1")] = np.linalg.inv(T[("s1", "s2")])
    slab = np.zeros((10, 10, 10), bool)
    slab[:, :, :3] = True
    masks = {"s1": slab, "s2": slab, "a": np.ones((10, 10, 10), bool)}
    assert template_ids(ids, masks, 0.75) == ["a", "b", "c"]
    assert template_ids(ids, masks, 0.3) == ids
    assert template_ids(ids, None, 0.75) == ids
    centre = shift(np.mean([offsets[k] for k in "abc"], 0))
    M = groupwise_mean(T, ids, masks=masks, template_fov=0.75)
    for i in ids:
        assert np.allclose(M[i] @ Y[i], centre, atol=1e-9), i
    M_all = groupwise_mean(T, ids, masks=masks)
    assert not np.allclose(M_all["s1"] @ Y["s1"], M_all["a"] @ Y["a"], atol=1.0)
    # without partial scans the template is the whole group: the unweighted mean
    full = [i for i in ids if i[0] != "s"]
    assert all(np.array_equal(groupwise_mean(T, full, template_fov=0.75)[i],
                              groupwise_mean(T, full)[i]) for i in full)


def test_local_minima_of_a_cost_map():
    """Hand case: three basins; the lowest first, neighbours of a minimum are not minima,
    infinite cells never are."""
    from suitsbench.globalinit import _local_minima
    c = np.full((9, 1, 1), 5.0)
    c[:, 0, 0] = [3.0, 4.0, 5.0, 1.0, 1.5, 5.0, 2.0, 2.5, np.inf]
    assert _local_minima(c, 5, 1) == [(3, 0, 0), (6, 0, 0), (0, 0, 0)]
    assert _local_minima(c, 2, 1) == [(3, 0, 0), (6, 0, 0)]
    assert _local_minima(c, 5, 2) == [(3, 0, 0), (0, 0, 0)]     # 1.5 is within 2 of 6
    assert _local_minima(c, 5, 3) == [(3, 0, 0)]
    assert _local_minima(np.full((2, 2, 2), np.inf), 3, 1) == []


@pytest.mark.slow
def test_search_candidates_and_multi_start(patient):
    """``top`` returns the search's winner first and then other, worse local minima; the
    multi-start registration of a slab keeps the start with the lowest final cost (within
    3 mm here), and images without padding get one start: the default's result."""
    from suitsbench.affine import initial_starts
    from suitsbench.globalinit import search_translation
    geom, ct, lab, A = patient
    mr, lab_s, A_s, mask, T_true = slab_of(geom, 44.0, 20, 90.0)
    com = initial_transform(mr, ct, A_s, A, "com", fixed_mask=mask)
    one = search_translation(mr, ct, A_s, A, com, fixed_mask=mask)
    res = search_translation(mr, ct, A_s, A, com, fixed_mask=mask, top=3)
    assert np.array_equal(res.T, one.T) and len(res.candidates) == 3
    assert np.array_equal(res.candidates[0][0], one.T)
    costs = [c for _, c in res.candidates]
    assert costs == sorted(costs) and costs[0] == one.cost
    st = AffineSettings(init_starts=3)
    starts = initial_starts(mr, ct, A_s, A, "search", fixed_mask=mask, settings=st)
    assert len(starts) == 3 and any(np.array_equal(s, com) for s in starts)
    T = register_affine(mr, ct, A_s, A, st, init="search", fixed_mask=mask)
    pts = organ_points(lab_s, A_s)
    assert mean_error_mm(T, T_true, pts) < 3.0
    full = np.ones(mr.shape, np.uint8)
    assert len(initial_starts(mr, ct, A_s, A, "search", fixed_mask=full, settings=st)) == 1
    f, _, fa = P.render(P.make_geometry(7, deform_scale=3.0, fat_planes=True), "mr")
    assert register_affine(f, ct, fa, A, st, init="search").tobytes() == register_affine(
        f, ct, fa, A, init="search").tobytes()
