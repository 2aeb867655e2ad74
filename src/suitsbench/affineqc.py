"""Quality check of the affine stage: does every pair of aligned images still need a large
translation?

After the groupwise affine stage every image lies on one reference grid (``aligned/``) with
its field-of-view mask (1 = scanned, 0 = padding or outside the source grid). A failed
alignment (a partial scan left far from its anatomy) is found per pair by a residual
translation check, absolute for one pair:

1. Both images go onto one coarse lattice (isotropic, about 12 cells along the smallest
   masked field of view, at most 8 mm: :func:`suitsbench.globalinit.coarse_spacing`),
   described by MIND-SSC; their masks are eroded by the MIND reach.
2. :func:`suitsbench.globalinit.masked_cost_map` scores every lattice translation of the
   moving image at once (``1 - r``, ``r`` the masked correlation of the features over the
   overlap), plus ``OVERLAP_WEIGHT * (1 - overlap fraction)`` as in the global search;
   translations overlapping less than ``min_overlap`` of the smaller mask are excluded.
3. ``gain = 1 - cost_far / cost_zero``, ``cost_far`` the best cost of the translations longer
   than ``max_shift_mm``: how much better the best far translation scores than none.

Verdict per pair: ``low_overlap`` when the two field-of-view masks overlap less than
``min_overlap`` of the smaller one; else ``misaligned`` when ``gain > margin``; else ``ok``.
Per image: the median of its pairs' scores; ``low_overlap`` or ``misaligned`` when more than
half of its pairs are, so that one failed scan is named and its partners are not (with one
pair both images are named). Checked are every test and validation pair and about three
training pairs per training image (:func:`suitsbench.qctable.select_pairs`); the table file,
the per-image rows and the messages are in :mod:`suitsbench.qctable`. The normalised mutual information of the intensities and the
mean MIND-SSC distance, both at zero translation in the overlap, are reported beside.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from suits.mind import mind_ssc
from suitsbench.errors import InputError
from suitsbench.globalinit import coarse_spacing, masked_cost_map
from suitsbench.pairid import split_pair_id
from suitsbench.qctable import image_rows

__all__ = ["QCSettings", "Features", "OVERLAP_WEIGHT", "lattice_spacing", "features",
           "fov_overlap", "nmi", "mind_distance", "residual_shift", "verdict", "check_pair",
           "affine_qc"]

#: weight of ``1 - overlap fraction`` in the cost (as :func:`suitsbench.globalinit.search_translation`)
OVERLAP_WEIGHT = 0.5
#: MIND-SSC patch radius and dilation on the lattice (as the global search)
MIND_RADIUS, MIND_DILATION = 1, 1


@dataclass(frozen=True)
class QCSettings:
    """Thresholds of the check (config ``affine.qc``)."""

    min_overlap: float = 0.5
    max_shift_mm: float = 20.0
    margin: float = 0.1


@dataclass(frozen=True)
class Features:
    """One image on the coarse lattice: MIND-SSC ``(12, ...)`` float64, the eroded 0/1
    weight, the lattice spacing (mm) per axis."""

    feat: torch.Tensor
    weight: torch.Tensor
    spacing: np.ndarray


def _voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def _bbox_shape(mask: np.ndarray) -> np.ndarray:
    idx = np.argwhere(np.asarray(mask) > 0)
    if not len(idx):
        return np.zeros(3, int)
    return idx.max(0) - idx.min(0) + 1


def lattice_spacing(affine: np.ndarray, masks: Sequence[np.ndarray]) -> float:
    """Lattice spacing (mm) for images on one grid: :func:`coarse_spacing` of the smallest
    masked extent per axis over ``masks`` (about 12 cells along it, at most 8 mm)."""
    shape = np.min([_bbox_shape(m) for m in masks], axis=0)
    shape = np.maximum(shape, 1)
    return coarse_spacing(affine, shape, affine, shape)


def features(image: np.ndarray, mask: np.ndarray, affine: np.ndarray, spacing: float
             ) -> Features:
    """``image`` (on the grid ``affine``) smoothed and sampled at ``spacing`` mm, MIND-SSC,
    and the cells inside ``mask`` eroded by the MIND reach."""
    k = np.maximum(float(spacing) / _voxel_sizes(affine), 1.0)   # voxels per cell, per axis
    shape = tuple(int(v) for v in np.maximum(np.floor(np.asarray(image.shape[:3]) / k), 1))
    offset = (k - 1.0) / 2.0                                     # cell centre in voxels
    src = ndimage.gaussian_filter(np.asarray(image, np.float32), (k - 1.0) / 2.0, mode="nearest")
    img = ndimage.affine_transform(src, k, offset=offset, output_shape=shape, order=1,
                                   mode="nearest")
    inside = ndimage.affine_transform(np.asarray(mask, np.float32), k, offset=offset,
                                      output_shape=shape, order=1, mode="constant") > 0.5
    x = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
    feat = mind_ssc(x, MIND_RADIUS, MIND_DILATION)[0].double()
    w = ndimage.binary_erosion(inside, iterations=MIND_RADIUS + MIND_DILATION, border_value=0)
    return Features(feat, torch.from_numpy(w.astype(np.float64)), k * _voxel_sizes(affine))


def fov_overlap(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """Voxels in both masks over the voxels of the smaller mask (0 when one is empty)."""
    a, b = np.asarray(mask_a) > 0, np.asarray(mask_b) > 0
    smaller = min(int(a.sum()), int(b.sum()))
    return float(np.logical_and(a, b).sum() / smaller) if smaller else 0.0


def nmi(a: np.ndarray, b: np.ndarray, mask: np.ndarray, bins: int = 32) -> float:
    """Normalised mutual information ``(H(A) + H(B)) / H(A, B)`` (1: independent, 2: one
    determines the other) of the voxels in ``mask``, ``bins`` equal bins over each range;
    NaN for fewer than two voxels or a constant image."""
    m = np.asarray(mask) > 0
    x, y = np.asarray(a, float)[m], np.asarray(b, float)[m]
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    p = joint / joint.sum()

    def entropy(q: np.ndarray) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hab = entropy(p)
    return (entropy(p.sum(1)) + entropy(p.sum(0))) / hab if hab > 0 else float("nan")


def mind_distance(fixed: Features, moving: Features) -> float:
    """Mean over the cells in both weights of the squared MIND-SSC distance (summed over
    channels) at zero translation; NaN without common cells."""
    w = fixed.weight * moving.weight
    n = float(w.sum())
    if n == 0:
        return float("nan")
    d2 = ((fixed.feat - moving.feat) ** 2).sum(0)
    return float((d2 * w).sum() / n)


def residual_shift(fixed: Features, moving: Features, settings: QCSettings
                   ) -> tuple[float, float, float]:
    """``(cost_zero, cost_far, shift_mm)``: the cost (module docstring) of no translation,
    the best cost of the translations longer than ``max_shift_mm`` and that translation's
    length. Costs are ``inf`` where nothing qualifies (``shift_mm`` NaN then)."""
    cost, n = masked_cost_map(fixed.feat, fixed.weight, moving.feat, moving.weight, "ncc")
    smaller = min(float(fixed.weight.sum()), float(moving.weight.sum()))
    if smaller <= 0:
        return math.inf, math.inf, float("nan")
    frac = n / smaller
    total = np.where(frac >= settings.min_overlap, cost + OVERLAP_WEIGHT * (1.0 - frac), np.inf)
    zero = tuple(int(s) - 1 for s in fixed.feat.shape[-3:])
    grids = np.meshgrid(*[np.arange(s) - z for s, z in zip(total.shape, zero)], indexing="ij")
    length = np.sqrt(sum((g * sp) ** 2 for g, sp in zip(grids, fixed.spacing)))
    far = np.where(length > settings.max_shift_mm, total, np.inf)
    best = np.unravel_index(int(np.argmin(far)), far.shape)
    cost_far = float(far[best])
    shift = float(length[best]) if math.isfinite(cost_far) else float("nan")
    return float(total[zero]), cost_far, shift


def _gain(cost_zero: float, cost_far: float) -> float:
    if not math.isfinite(cost_far):
        return float("nan")
    if not math.isfinite(cost_zero):
        return 1.0
    return 1.0 - cost_far / cost_zero if cost_zero > 0 else -math.inf


def verdict(overlap: float, gain: float, shift_mm: float, settings: QCSettings
            ) -> tuple[str, str]:
    """``(verdict, reason)`` of one pair (module docstring)."""
    if overlap < settings.min_overlap:
        return "low_overlap", (f"the fields of view overlap {100 * overlap:.0f} % of the "
                               f"smaller one (affine.qc.min_overlap {100 * settings.min_overlap:.0f} %)")
    if math.isfinite(gain) and gain > settings.margin:
        return "misaligned", (f"a {shift_mm:.0f} mm translation scores {100 * gain:.0f} % better "
                              f"than none (affine.qc.margin {100 * settings.margin:.0f} %)")
    if not math.isfinite(gain):
        return "ok", f"no translation beyond {settings.max_shift_mm:g} mm keeps the overlap"
    return "ok", f"best translation beyond {settings.max_shift_mm:g} mm: gain {gain:+.2f}"


def check_pair(fixed: Features, moving: Features, fixed_data: tuple[np.ndarray, np.ndarray],
               moving_data: tuple[np.ndarray, np.ndarray], settings: QCSettings) -> dict:
    """The scores and verdict of one pair (a row of the QC table without kind, id, role):
    ``*_data`` are ``(image, fov mask)`` on the common grid, ``fixed``/``moving`` their
    :func:`features`."""
    (f_img, f_mask), (m_img, m_mask) = fixed_data, moving_data
    overlap = fov_overlap(f_mask, m_mask)
    both = (np.asarray(f_mask) > 0) & (np.asarray(m_mask) > 0)
    cost_zero, cost_far, shift = residual_shift(fixed, moving, settings)
    gain = _gain(cost_zero, cost_far)
    v, reason = verdict(overlap, gain, shift, settings)
    return {"n_pairs": 1, "overlap": overlap, "nmi": nmi(f_img, m_img, both),
            "mind_ssd": mind_distance(fixed, moving), "cost_zero": cost_zero,
            "cost_far": cost_far, "shift_mm": shift, "gain": gain, "verdict": v,
            "reason": reason}


def affine_qc(images: Mapping[str, tuple[np.ndarray, np.ndarray]], affine: np.ndarray,
              pairs: Mapping[str, str], settings: QCSettings = QCSettings()) -> list[dict]:
    """Rows of the QC table (:data:`suitsbench.qctable.COLUMNS`): one per pair of ``pairs``
    (``{pair id: role}``, role test | val | train) and one per image of ``images`` (``{id: (image, fov mask)}``, every one on
    the grid ``affine``), images first."""
    shapes = {k: (np.shape(v[0])[-3:], np.shape(v[1])[-3:]) for k, v in images.items()}
    ref = next(iter(shapes.values()))[0]
    for k, (s_img, s_mask) in shapes.items():
        if s_img != ref or s_mask != ref:
            raise InputError(f"aligned image {k}", f"grid {s_img} / mask {s_mask}, expected {ref}",
                             "re-run the affine_resample jobs")
    data = {k: (np.asarray(v[0], np.float32).reshape(ref), np.asarray(v[1]).reshape(ref) > 0)
            for k, v in images.items()}
    spacing = lattice_spacing(affine, [m for _, m in data.values()])
    feats = {k: features(img, mask, affine, spacing) for k, (img, mask) in data.items()}
    rows = []
    for pair, role in pairs.items():
        moving_id, fixed_id = split_pair_id(pair)
        row = {"kind": "pair", "id": pair, "role": role}
        row.update(check_pair(feats[fixed_id], feats[moving_id], data[fixed_id],
                              data[moving_id], settings))
        rows.append(row)
    return image_rows(rows, list(images)) + rows
