"""Synthetic CT-like / MR-like abdominal phantom: the embedded default data set.

Every image is a different synthetic "patient" (unpaired, inter-patient, as in the SUITS paper):
an elliptic torso with the paper's six labelled organs (1 liver, 2 spleen, 3 l_psoas,
4 r_psoas, 5 l_kidney, 6 r_kidney) and unlabelled context (subcutaneous fat, abdominal wall
muscle, vertebrae, aorta, vena cava, bowel with gas and mesenteric fat, perirenal fat).

Anatomy is defined in normalised body coordinates ``(u, v, w)`` (``u`` to the patient's right,
``v`` anterior, ``w`` superior; RAS world axes) scaled to the field of view, so any grid shape
gives a plausible torso. A patient = :class:`SubjectGeometry`: per-organ shape variation, a
global affine (rotation, scale, translation) and a smooth non-linear deformation, all defined in
world millimetres. :func:`render` samples a geometry on any grid (any orientation and spacing)
and in either modality, so the same patient can be rendered as an aligned CT/MR pair, and raw
files can be written in e.g. LPS at 3 mm to exercise ingestion. Everything is deterministic
given the seed. See ``docs/data.md`` for the model and its limits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from suits.io import save_labels, save_volume
from suitsbench.manifest import write_manifest

__all__ = [
    "LABELS", "MODALITIES", "SubjectGeometry", "make_geometry", "grid_affine", "grid_for",
    "render", "generate", "slab_grid", "draw_slab", "pad_scan_fov",
]

LABELS: dict[int, str] = {1: "liver", 2: "spleen", 3: "l_psoas", 4: "r_psoas",
                          5: "l_kidney", 6: "r_kidney"}
MODALITIES = ("ct", "mr")

# tissue classes (painted in this order of priority by _tissues)
AIR, FAT, MUSCLE, VISCERA, LIVER, SPLEEN, KIDNEY, BONE, DISC, BLOOD, GAS, CSF = range(12)
N_TISSUES = 12

# CT: HU-like, contrast enhanced (portal venous); liver/spleen/muscle differ by only ~10-20 HU.
_CT_MEAN = np.array([-1000, -100, 50, 35, 65, 55, 160, 650, 90, 180, -950, 10], float)
_CT_NOISE = 12.0
# MR: T1-like, non-monotonic in CT: fat brightest, bone, muscle, vessels (flow void) and gas
# dark, spleen darker than liver, kidneys in between.
_MR_MEAN = np.array([0.0, 1.0, 0.28, 0.45, 0.62, 0.40, 0.50, 0.12, 0.55, 0.08, 0.02, 0.20], float)
_MR_NOISE = 0.035


@dataclass(frozen=True)
class _Ellipsoid:
    """An ellipsoid in normalised body coordinates with a smooth surface perturbation."""

    centre: np.ndarray          # (3,)
    radii: np.ndarray           # (3,)
    rotation: np.ndarray        # (3, 3) body -> local
    wave_k: np.ndarray          # (n, 3) spatial frequencies (local units)
    wave_a: np.ndarray          # (n,) amplitudes
    wave_p: np.ndarray          # (n,) phases

    def inside(self, x: np.ndarray) -> np.ndarray:
        """Boolean mask of points ``x`` (N, 3) inside the perturbed ellipsoid."""
        q = ((x - self.centre) @ self.rotation.T) / self.radii
        r2 = np.einsum("ij,ij->i", q, q)
        near = r2 < 2.0
        out = np.zeros(len(x), bool)
        if near.any():
            qn = q[near]
            pert = (np.sin(qn @ self.wave_k.T + self.wave_p) * self.wave_a).sum(1)
            out[near] = np.sqrt(r2[near]) < 1.0 + pert
        return out


@dataclass(frozen=True)
class SubjectGeometry:
    """One synthetic patient: anatomy parameters plus its world placement and deformation.

    ``half_extent`` is the body scale in mm (half of the field of view per RAS axis);
    ``affine`` maps anatomy millimetres to world millimetres; ``deform_grid`` is a coarse
    backward displacement lattice (mm) spanning ``[-half_extent, half_extent]`` per axis.
    """

    seed: int
    shape: tuple                            # field of view in voxels (RAS axes)
    spacing: tuple                          # field of view spacing in mm (RAS axes)
    half_extent: np.ndarray                 # (3,) mm
    affine: np.ndarray                      # (4, 4) anatomy mm -> world mm
    deform_grid: np.ndarray                 # (3, n, n, n) mm
    fat: float                              # subcutaneous fat thickness (normalised)
    organs: dict = field(default_factory=dict)   # name -> _Ellipsoid (plus helpers)
    gas: tuple = ()                         # bowel gas ellipsoids
    mesentery: tuple = ()                   # (k (n,3), phase (n,)) texture of mesenteric fat
    fat_planes: bool = False                # fat around psoas, liver and spleen (a variant)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    """Rotation matrix from three angles (radians) about x, y, z."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid(rng: np.random.Generator, centre, radii, tilt=(0.0, 0.0, 0.0),
               jitter: float = 0.03, scale: float = 0.12, bumps: float = 0.07) -> _Ellipsoid:
    """A randomly varied ellipsoid around the nominal centre/radii/tilt."""
    c = np.asarray(centre, float) + rng.normal(0, jitter, 3)
    r = np.asarray(radii, float) * rng.uniform(1 - scale, 1 + scale, 3)
    ang = np.asarray(tilt, float) + rng.normal(0, np.deg2rad(6), 3)
    n = 4
    k = rng.normal(0, 1.0, (n, 3))
    k *= rng.uniform(1.5, 3.0, (n, 1)) / np.linalg.norm(k, axis=1, keepdims=True)
    return _Ellipsoid(c, r, _rotation(ang), k, rng.uniform(0, bumps, n) / np.sqrt(n),
                      rng.uniform(0, 2 * np.pi, n))


def make_geometry(seed: int, shape: Sequence[int] = (80, 64, 64),
                  spacing: float | Sequence[float] = 2.0, deform_scale: float = 1.0,
                  fat_planes: bool = False) -> SubjectGeometry:
    """Draw one patient for a field of view of ``shape`` voxels of ``spacing`` mm (RAS axes).

    Deterministic in ``seed``. Variability: organ position/size/orientation/surface shape,
    subcutaneous fat thickness, bowel gas, a global affine (rotation ~3 degrees, scale ~10 %,
    translation ~3 % of the field of view) and a smooth random deformation (~3 % of the field
    of view, times ``deform_scale``). Variants for probing the baselines (the defaults give the
    embedded data set): ``deform_scale`` scales the non-rigid deformation after it is drawn
    (the other draws are unchanged); ``fat_planes`` turns the visceral filler next to the psoas
    (retroperitoneal fat) and around liver and spleen into fat.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5017]))
    sp = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
    half = 0.5 * np.asarray(shape, float) * np.asarray(sp)
    organs = {
        "liver": _ellipsoid(rng, (0.36, 0.05, 0.45), (0.42, 0.50, 0.48), (0, 0, 0.3)),
        "liver_left": _ellipsoid(rng, (-0.02, 0.32, 0.55), (0.36, 0.20, 0.26), (0, 0, -0.2)),
        "spleen": _ellipsoid(rng, (-0.52, -0.18, 0.45), (0.15, 0.22, 0.28), (0, 0, -0.6)),
        "l_kidney": _ellipsoid(rng, (-0.38, -0.32, 0.18), (0.14, 0.13, 0.32), (0, -0.25, 0.5)),
        "r_kidney": _ellipsoid(rng, (0.38, -0.34, 0.04), (0.14, 0.13, 0.32), (0, 0.25, -0.5)),
    }
    psoas_shift = rng.normal(0, 0.02, 2)
    organs["psoas"] = (float(psoas_shift[0]), float(psoas_shift[1]),
                       float(rng.uniform(0.9, 1.15)), float(rng.uniform(0.15, 0.45)))
    organs["spine"] = (float(rng.normal(0, 0.02)), float(rng.uniform(0.0, 1.0)))
    gas = tuple(_ellipsoid(rng, (rng.uniform(-0.45, 0.45), rng.uniform(0.05, 0.55),
                                  rng.uniform(-0.85, 0.1)),
                           (0.07, 0.06, 0.08), jitter=0.0, scale=0.4, bumps=0.1)
                for _ in range(int(rng.integers(3, 7))))
    k = rng.normal(0, 1, (5, 3))
    k *= rng.uniform(10, 16, (5, 1)) / np.linalg.norm(k, axis=1, keepdims=True)
    mesentery = (k, rng.uniform(0, 2 * np.pi, 5))
    # global placement: anatomy mm -> world mm
    rot = _rotation(rng.normal(0, np.deg2rad(3), 3))
    scale = np.diag(rng.uniform(0.92, 1.08, 3) * rng.uniform(0.95, 1.05))
    aff = np.eye(4)
    aff[:3, :3] = rot @ scale
    aff[:3, 3] = rng.normal(0, 0.03, 3) * half
    n = 5
    deform = (rng.normal(0, 1, (3, n, n, n)) * (0.03 * half)[:, None, None, None]
              * float(deform_scale))
    return SubjectGeometry(seed=int(seed), shape=tuple(int(n) for n in shape), spacing=sp,
                           half_extent=half, affine=aff, deform_grid=deform,
                           fat=float(rng.uniform(0.06, 0.14)), organs=organs, gas=gas,
                           mesentery=mesentery, fat_planes=bool(fat_planes))


def grid_affine(shape: Sequence[int], spacing: float | Sequence[float],
                orientation: str = "RAS") -> np.ndarray:
    """Affine of a grid centred on the world origin with axes ``orientation`` (e.g. "LPS").

    ``spacing`` is per array axis. The centre of the field of view ``(shape - 1) / 2`` maps to
    world ``(0, 0, 0)``.
    """
    ornt = nib.orientations.axcodes2ornt(tuple(orientation.upper()))
    sp = np.broadcast_to(np.asarray(spacing, float), (3,))
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    for i, (world_axis, sign) in enumerate(ornt):
        aff[int(world_axis), i] = sign * sp[i]
    centre = (np.asarray(shape, float) - 1) / 2
    aff[:3, 3] = -aff[:3, :3] @ centre
    return aff


def _oriented_grid(ras_shape: Sequence[int], ras_spacing: Sequence[float], orientation: str
                   ) -> tuple[tuple[int, int, int], np.ndarray]:
    """``(array shape, affine)`` of a grid of ``ras_shape`` voxels of ``ras_spacing`` mm (both
    per RAS axis) stored in ``orientation``, centred on the world origin."""
    ornt = nib.orientations.axcodes2ornt(tuple(orientation.upper()))
    axes = [int(a) for a in ornt[:, 0]]
    arr_shape = tuple(int(ras_shape[a]) for a in axes)
    return arr_shape, grid_affine(arr_shape, [float(ras_spacing[a]) for a in axes], orientation)


def grid_for(shape: Sequence[int] = (80, 64, 64), spacing: float | Sequence[float] = 2.0,
             orientation: str = "RAS", write_spacing: float | Sequence[float] | None = None
             ) -> tuple[tuple[int, int, int], np.ndarray]:
    """Grid covering the field of view ``shape * spacing`` (RAS axes) in another orientation
    and/or spacing. Returns ``(array shape, affine)``; spacings are per RAS axis."""
    ras_sp = np.broadcast_to(np.asarray(spacing, float), (3,))
    new_sp = ras_sp if write_spacing is None else np.broadcast_to(
        np.asarray(write_spacing, float), (3,))
    extent = np.asarray(shape, float) * ras_sp
    ras_shape = np.maximum(1, np.round(extent / new_sp)).astype(int)
    return _oriented_grid(ras_shape, new_sp, orientation)


def slab_grid(shape: Sequence[int], spacing: float | Sequence[float], slices: int,
              height: float, orientation: str = "RAS",
              write_spacing: float | Sequence[float] | None = None
              ) -> tuple[tuple[int, int, int], np.ndarray]:
    """Grid of an axial slab of the field of view ``shape * spacing`` (RAS axes): its full
    in-plane extent, ``slices`` slices (of the written superior-inferior spacing) centred at
    world height ``height`` mm. Orientation and spacing as in :func:`grid_for`."""
    ras_sp = np.broadcast_to(np.asarray(spacing, float), (3,))
    new_sp = ras_sp if write_spacing is None else np.broadcast_to(
        np.asarray(write_spacing, float), (3,))
    ras_shape = np.maximum(1, np.round(np.asarray(shape, float) * ras_sp / new_sp)).astype(int)
    ras_shape[2] = int(slices)
    arr_shape, aff = _oriented_grid(ras_shape, new_sp, orientation)
    aff[2, 3] += float(height)
    return arr_shape, aff


def draw_slab(rng: np.random.Generator, half_height: float, slices: Sequence[int] = (15, 30),
              offset: Sequence[float] = (60.0, 100.0), lowest: float = -0.15,
              highest: float = 0.6) -> tuple[int, float, float]:
    """A random axial slab: ``(slices, height, header_shift)``.

    ``slices`` uniform in the closed range ``slices``; the anatomy it shows is centred at
    ``height`` mm, uniform in ``[lowest, highest] * half_height`` (``half_height``: half the
    field of view's superior-inferior extent; the default range holds liver, spleen and
    kidneys); ``header_shift`` (mm, superior) moves its header so that the slab's centre
    lies 60-100 mm (``offset``) above or below the centre of the other scans, as a scanner
    with its own table position writes it.
    """
    n = int(rng.integers(int(slices[0]), int(slices[1]) + 1))
    height = float(rng.uniform(lowest, highest) * half_height)
    centre = float(rng.uniform(*offset) * rng.choice([-1.0, 1.0]))
    return n, height, centre - height


def pad_scan_fov(image: np.ndarray, affine: np.ndarray, value: float,
                 radius: float | None = None) -> np.ndarray:
    """CT-like scan field of view: voxels farther than ``radius`` mm (default: half the larger
    in-plane extent) from the superior-inferior axis through the grid's centre (an axial
    cylinder, as a CT reconstruction circle) set to ``value`` (e.g. -1024 or -3024)."""
    a = np.asarray(affine, float)
    shape = np.asarray(image.shape[:3])
    if radius is None:
        extent = np.abs(a[:3, :3]) @ shape                  # mm along each world axis
        radius = 0.5 * float(max(extent[0], extent[1]))
    centre = a[:3, :3] @ ((shape - 1) / 2.0) + a[:3, 3]
    world = _world_points(image.shape[:3], a).reshape(*image.shape[:3], 3)
    r2 = ((world[..., :2] - centre[:2]) ** 2).sum(-1)
    out = np.array(image, copy=True)
    out[r2 > float(radius) ** 2] = value
    return out


def _world_points(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (N, 3) of all voxel centres, C order."""
    idx = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ idx + affine[:3, 3:4]).T


def _to_body(geom: SubjectGeometry, world: np.ndarray) -> np.ndarray:
    """World mm -> normalised body coordinates via the backward deformation and affine."""
    half = geom.half_extent
    n = geom.deform_grid.shape[1]
    lattice = (world / half + 1) / 2 * (n - 1)          # [-half, half] -> [0, n-1]
    disp = np.stack([ndimage.map_coordinates(geom.deform_grid[c], lattice.T, order=3,
                                             mode="nearest") for c in range(3)], 1)
    p = world + disp
    inv = np.linalg.inv(geom.affine)
    q = p @ inv[:3, :3].T + inv[:3, 3]
    return q / half


def _psoas(geom: SubjectGeometry, x: np.ndarray, side: float) -> np.ndarray:
    """Psoas major: a tube from beside the upper lumbar spine running inferior-laterally."""
    du, dv, thick, top = geom.organs["psoas"]
    u, v, w = x[:, 0], x[:, 1], x[:, 2]
    t = np.clip((top - w) / (top + 1.0), 0, None)      # 0 at the top, 1 at the bottom
    cu = side * (0.15 + 0.17 * t) + du
    cv = -0.40 + 0.12 * t + dv
    r = (0.035 + 0.075 * np.sqrt(np.clip(t, 0, 1))) * thick
    return (w < top) & (((u - cu) / r) ** 2 + ((v - cv) / (1.2 * r)) ** 2 < 1)


def _tissues_and_labels(geom: SubjectGeometry, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue class and organ label (0..6) of body points ``x`` (N, 3)."""
    u, v, w = x[:, 0], x[:, 1], x[:, 2]
    vv = np.where(v < 0, v * 1.12, v)                  # flatter back
    r = np.sqrt(u ** 2 + vv ** 2)
    tissue = np.full(len(x), AIR, np.uint8)
    label = np.zeros(len(x), np.uint8)
    body = r < 0.95
    tissue[body] = FAT
    wall_in = 0.95 - geom.fat
    tissue[r < wall_in] = MUSCLE
    cavity = (r < wall_in - 0.06) & (v > -0.52)        # behind it: paraspinal muscle
    tissue[cavity] = VISCERA
    k, ph = geom.mesentery
    mes = np.sin(x @ k.T + ph).sum(1) > 1.0
    tissue[cavity & mes & (v > -0.2)] = FAT
    for g in geom.gas:
        tissue[cavity & g.inside(x)] = GAS
    # perirenal fat, then organs (later wins)
    for name in ("l_kidney", "r_kidney"):
        e = geom.organs[name]
        tissue[cavity & replace(e, radii=e.radii * 1.35).inside(x)] = FAT
    liver = cavity & (geom.organs["liver"].inside(x) | geom.organs["liver_left"].inside(x))
    tissue[liver], label[liver] = LIVER, 1
    spleen = cavity & geom.organs["spleen"].inside(x)
    tissue[spleen], label[spleen] = SPLEEN, 2
    for side, lab in ((-1.0, 3), (1.0, 4)):             # patient left is -u
        m = _psoas(geom, x, side) & (r < wall_in)
        tissue[m], label[m] = MUSCLE, lab
    for name, lab in (("l_kidney", 5), ("r_kidney", 6)):
        e = geom.organs[name]
        m = cavity & e.inside(x)
        tissue[m], label[m] = KIDNEY, lab
        sinus = _Ellipsoid(e.centre + np.array([0.35 * np.sign(-e.centre[0]) * e.radii[0], 0, 0]),
                           e.radii * np.array([0.35, 0.4, 0.5]), e.rotation, e.wave_k,
                           e.wave_a * 0, e.wave_p).inside(x)
        tissue[m & sinus] = FAT                        # renal sinus fat, still labelled kidney
    # vessels and spine
    du, phase = geom.organs["spine"]
    aorta = ((u + 0.09 - du) / 0.065) ** 2 + ((v + 0.24) / 0.065) ** 2 < 1
    ivc = ((u - 0.13 - du) / 0.08) ** 2 + ((v + 0.22) / 0.06) ** 2 < 1
    tissue[aorta | ivc] = BLOOD
    label[aorta | ivc] = 0
    vert = ((u - du) / 0.12) ** 2 + ((v + 0.46) / 0.13) ** 2 < 1
    seg = np.mod(w * 4.0 + phase, 1.0)                 # vertebra period 0.25 in w
    canal = ((u - du) / 0.05) ** 2 + ((v + 0.65) / 0.05) ** 2 < 1
    arch = (((u - du) / 0.09) ** 2 + ((v + 0.65) / 0.09) ** 2 < 1) | (
        (np.abs(u - du) < 0.025) & (v < -0.65) & (v > -0.85)) | (
        (np.abs(u - du) < 0.2) & (np.abs(v + 0.6) < 0.025))
    bone = (vert | arch) & (r < 0.95)
    tissue[bone] = BONE
    tissue[vert & (seg > 0.82)] = DISC
    tissue[canal] = CSF
    label[bone | canal] = 0
    if geom.fat_planes:
        tissue[_fat_planes(geom, x) & (tissue == VISCERA)] = FAT
    return tissue, label


def _fat_planes(geom: SubjectGeometry, x: np.ndarray) -> np.ndarray:
    """Where the ``fat_planes`` variant paints fat over the visceral filler: a sheath around
    each psoas (thickness x 1.6, reaching 0.08 higher) and a rim around liver and spleen
    (radii x 1.1)."""
    du, dv, thick, top = geom.organs["psoas"]
    sheath = replace(geom, organs={**geom.organs, "psoas": (du, dv, thick * 1.6, top + 0.08)})
    rim = _psoas(sheath, x, -1.0) | _psoas(sheath, x, 1.0)
    for name in ("liver", "liver_left", "spleen"):
        e = geom.organs[name]
        rim |= replace(e, radii=e.radii * 1.10).inside(x)
    return rim


def render(geom: SubjectGeometry, modality: str, shape: Sequence[int] | None = None,
           affine: np.ndarray | None = None, noise_seed: int | None = None,
           blur: float = 0.6, mr_bias: float = 0.25
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a patient in ``modality`` ("ct" or "mr") on a grid.

    The default grid is the geometry's own field of view (RAS, ``geom.shape``, ``geom.spacing``);
    else the grid given by ``shape`` and ``affine`` (any orientation and spacing, e.g. from
    :func:`grid_for`). Returns
    ``(image float32, label uint8, affine)``. The label is the same for both modalities; the
    image gets partial-volume blur (Gaussian, ``blur`` voxels), and for MR a smooth
    multiplicative bias field (``exp(mr_bias * tanh(...))``: 0.25 is about +-22 %, 0 none) and
    Rician noise, for CT Gaussian noise. ``noise_seed`` (default:
    the geometry seed) makes the appearance deterministic.
    """
    modality = modality.lower()
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} not in {MODALITIES}")
    if shape is None or affine is None:
        shape, affine = geom.shape, grid_affine(geom.shape, geom.spacing)
    shape = tuple(int(s) for s in shape)
    world = _world_points(shape, affine)
    tissue, label = _tissues_and_labels(geom, _to_body(geom, world))
    tissue, label = tissue.reshape(shape), label.reshape(shape)
    seed = geom.seed if noise_seed is None else noise_seed
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), MODALITIES.index(modality),
                                                        0xA99]))
    means = (_CT_MEAN if modality == "ct" else _MR_MEAN).copy()
    means[1:] *= rng.uniform(0.95, 1.05, len(means) - 1) if modality == "mr" else 1.0
    if modality == "ct":
        means[1:] += rng.normal(0, 5, len(means) - 1)
    img = means[tissue]
    img = ndimage.gaussian_filter(img, blur, mode="nearest") if blur > 0 else img
    if modality == "ct":
        img = img + rng.normal(0, _CT_NOISE, shape)
        img = np.maximum(img, -1024.0)
    else:
        x = world / geom.half_extent                    # smooth bias in world coordinates
        k = rng.normal(0, 1.2, (4, 3))
        wave = np.sin(x @ k.T + rng.uniform(0, 2 * np.pi, 4)).sum(1)
        bias = np.exp(float(mr_bias) * np.tanh(wave))
        img = img * bias.reshape(shape)
        n1 = rng.normal(0, _MR_NOISE, shape)
        n2 = rng.normal(0, _MR_NOISE, shape)
        img = np.sqrt((img + n1) ** 2 + n2 ** 2) * 1000.0
    return img.astype(np.float32), label, affine


def generate(out_dir: str | os.PathLike, n_per_modality: int = 6,
             shape: Sequence[int] = (80, 64, 64), spacing: float | Sequence[float] = 2.0,
             seed: int = 0, modalities: Sequence[str] = MODALITIES, orientation: str = "RAS",
             write_spacing: float | Sequence[float] | None = None, deform_scale: float = 1.0,
             fat_planes: bool = False, mr_bias: float = 0.25,
             grid_modalities: Sequence[str] | None = None, mr_slab: int = 0,
             slab_slices: Sequence[int] = (15, 30),
             slab_offset: Sequence[float] = (60.0, 100.0),
             ct_padding: float | None = None) -> Path:
    """Write an unpaired phantom data set and its manifest; return the manifest path.

    Patient ``p{n:03d}`` (numbered over all modalities, so every image is another patient) is
    written as ``{subject}_{modality}_image.nii.gz`` (float32) and ``..._label.nii.gz`` (uint8,
    values 1..6 = :data:`LABELS`). ``shape``/``spacing`` give the field of view (RAS axes);
    ``orientation`` (e.g. "LPS") and ``write_spacing`` (mm, per RAS axis) change only the
    written grid (the same anatomy at the same world position), of the modalities in
    ``grid_modalities`` (default: all), to exercise ingestion. ``deform_scale``,
    ``fat_planes`` (:func:`make_geometry`) and ``mr_bias`` (:func:`render`) make variants.
    Partial and padded scans as real ones come: the first ``mr_slab`` MR scans are axial
    slabs (:func:`draw_slab`: ``slab_slices`` slices at a random height, the header
    ``slab_offset`` mm off the other scans' centre; seeded by ``seed`` and the patient);
    ``ct_padding`` (e.g. -1024 or -3024) fills the CT outside a cylindrical scan field of
    view (:func:`pad_scan_fov`). The defaults give the embedded data set.
    ``manifest.tsv`` lists ``subject, modality, image, label`` with paths
    relative to ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    varied = set(modalities if grid_modalities is None else grid_modalities)
    half_height = 0.5 * float(shape[2]) * float(np.broadcast_to(spacing, (3,))[2])
    rows = []
    n = 0
    for modality in modalities:
        grid = (orientation, write_spacing) if modality in varied else ("RAS", None)
        arr_shape, affine = grid_for(shape, spacing, *grid)
        for k in range(int(n_per_modality)):
            subject = f"p{n:03d}"
            geom = make_geometry(seed * 100003 + n, shape, spacing, deform_scale, fat_planes)
            img_shape, img_affine, header = arr_shape, affine, affine
            if modality == "mr" and k < int(mr_slab):
                rng = np.random.default_rng(np.random.SeedSequence([int(seed), n, 0x51AB]))
                slices, height, shift = draw_slab(rng, half_height, slab_slices, slab_offset)
                img_shape, img_affine = slab_grid(shape, spacing, slices, height, *grid)
                header = img_affine.copy()
                header[2, 3] += shift
            img, lab, _ = render(geom, modality, img_shape, img_affine, mr_bias=mr_bias)
            if modality == "ct" and ct_padding is not None:
                img = pad_scan_fov(img, img_affine, float(ct_padding))
            stem = f"{subject}_{modality}"
            save_volume(out / f"{stem}_image.nii.gz", img, header)
            save_labels(out / f"{stem}_label.nii.gz", lab, header)
            rows.append((subject, modality, f"{stem}_image.nii.gz", f"{stem}_label.nii.gz"))
            n += 1
    return write_manifest(out / "manifest.tsv", rows)
