"""Preprocessing of one image (+ label) onto the benchmark grid.

Steps of :func:`preprocess_case` (each a pure function on arrays here):

0. optional (``reference``, the prostate MR/US convention ``resize_moving_to_fixed``):
   :func:`resize_to_reference` - resize the image over index space to the reference image's
   shape (the whole field of view onto the whole field of view, half-voxel aligned) and give it
   the reference's affine;
1. :func:`reorient_canonical` - RAS+ canonical axis order (``nibabel.as_closest_canonical``:
   axis permutation/flips only, no interpolation);
2. :func:`resample_isotropic` - onto an isotropic grid of ``spacing`` mm with the same direction
   cosines, covering the same field of view and with the same field-of-view centre (world
   coordinates preserved); images linear (after a Gaussian anti-aliasing filter when
   downsampling), index labels nearest-neighbour, multi-channel labels linear per channel then
   argmax (background = 1 - max channel);
3. :func:`crop_or_pad` - to ``shape``, centred on the centre of the field of view, the affine
   shifted so that every voxel keeps its world position; images padded with their minimum,
   labels with 0; the field-of-view mask (1 = voxel from the scan, 0 = padding) goes
   through steps 1-3 beside the image;
4. :func:`normalise_image` - z-score over the whole (cropped/padded) volume;
5. :func:`relabel` - organ indices 1..K in ``evaluate`` order (0 background; label values that
   are not evaluated become 0). 4-D label files: channel ``c`` is label value ``c + 1``.

Outputs are written with ``suits.io.save_volume`` (float32) / ``suits.io.save_labels`` (uint8).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from suitsbench.errors import InputError
from suitsbench.validate import check_image, check_label, check_labels_config, read_nifti

__all__ = [
    "Preprocessed", "preprocess_case", "preprocess_arrays", "resize_to_reference",
    "reorient_canonical", "isotropic_grid", "resample_isotropic", "resample", "crop_or_pad",
    "normalise_image", "relabel", "organ_channels", "voxel_sizes", "shape_holding",
    "warn_label_crop",
]

PathLike = str | os.PathLike
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocessed:
    """Result of preprocessing: ``image`` float32 ``(X, Y, Z)``, ``label`` uint8 index map or
    None, the common 4x4 ``affine`` and ``fov`` (uint8, 1 where the voxel came from the scan,
    0 where it is padding)."""

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    fov: np.ndarray | None = None


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Spacing along the array axes (column norms of the 3x3 part)."""
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def resize_to_reference(data: np.ndarray, ref_shape: Sequence[int], order: int = 1
                        ) -> np.ndarray:
    """Resize ``data`` (3-D, or 4-D with trailing channels) to ``ref_shape`` over index space.

    The field of view maps onto the field of view (voxel ``i`` of the output samples input
    position ``(i + 0.5) * n_in / n_out - 0.5``), linear (``order=1``) or nearest (``0``).
    """
    ref_shape = tuple(int(n) for n in ref_shape[:3])
    if data.ndim == 4:
        return np.stack([resize_to_reference(data[..., c], ref_shape, order)
                         for c in range(data.shape[3])], -1)
    scale = np.asarray(data.shape[:3], float) / np.asarray(ref_shape, float)
    return ndimage.affine_transform(np.asarray(data, np.float32 if order else data.dtype),
                                    scale, offset=0.5 * scale - 0.5, output_shape=ref_shape,
                                    order=order, mode="nearest")


def reorient_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip the first three axes into RAS+ canonical order; returns data and affine."""
    img = nib.as_closest_canonical(nib.Nifti1Image(data, np.asarray(affine, float)))
    return np.asanyarray(img.dataobj), np.asarray(img.affine, float)


def isotropic_grid(affine: np.ndarray, shape: Sequence[int], spacing: float
                   ) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Isotropic grid of ``spacing`` mm with the direction cosines of ``affine`` covering the
    whole field of view (``ceil(n * old / spacing)`` voxels) around the same centre."""
    affine = np.asarray(affine, float)
    old = voxel_sizes(affine)
    n = np.asarray(shape[:3], float)
    new_n = np.maximum(1, np.ceil(n * old / spacing - 1e-6)).astype(int)
    out = np.eye(4)
    out[:3, :3] = affine[:3, :3] / old * spacing
    centre = affine[:3, :3] @ ((n - 1) / 2) + affine[:3, 3]
    out[:3, 3] = centre - out[:3, :3] @ ((new_n - 1) / 2)
    return out, tuple(int(v) for v in new_n)


def resample(data: np.ndarray, affine: np.ndarray, out_affine: np.ndarray,
             out_shape: Sequence[int], order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Sample 3-D ``data`` (on ``affine``) at the voxel centres of the grid ``out_affine`` /
    ``out_shape``, in world coordinates. Inside the input's field of view (voxel centres plus
    half a voxel) the edge values are extended, outside it the result is ``cval``."""
    m = np.linalg.inv(np.asarray(affine, float)) @ np.asarray(out_affine, float)
    out_shape = tuple(int(s) for s in out_shape)
    out = ndimage.affine_transform(data, m[:3, :3], offset=m[:3, 3], output_shape=out_shape,
                                   order=order, mode="nearest")
    inside = ndimage.affine_transform(np.ones(data.shape, np.uint8), m[:3, :3],
                                      offset=m[:3, 3], output_shape=out_shape, order=0,
                                      mode="grid-constant", cval=0)
    out[inside == 0] = cval
    return out


def resample_isotropic(data: np.ndarray, affine: np.ndarray, spacing: float, order: int = 1,
                       cval: float = 0.0, antialias: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`resample` onto :func:`isotropic_grid`; 4-D data per trailing channel. With
    ``antialias`` and ``order > 0``, axes that are downsampled by a factor ``f`` are first
    smoothed with a Gaussian of ``(f - 1) / 2`` input voxels."""
    out_affine, out_shape = isotropic_grid(affine, data.shape, spacing)
    if data.ndim == 4:
        chans = [resample_isotropic(data[..., c], affine, spacing, order, cval, antialias)[0]
                 for c in range(data.shape[3])]
        return np.stack(chans, -1), out_affine
    src = data
    if antialias and order > 0:
        sigma = np.maximum(0.0, (spacing / voxel_sizes(affine) - 1) / 2)
        if np.any(sigma > 0):
            src = ndimage.gaussian_filter(np.asarray(data, np.float32), sigma, mode="nearest")
    if order > 0:
        src = np.asarray(src, np.float32)
    return resample(src, affine, out_affine, out_shape, order, cval), out_affine


def crop_or_pad(data: np.ndarray, affine: np.ndarray, shape: Sequence[int], cval: float = 0.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Crop or pad the first three axes to ``shape`` around the centre of the field of view.

    Output voxel ``j`` is input voxel ``j + start`` with ``start = (n - m) // 2`` per axis
    (negative = padding); the affine is shifted accordingly, so world positions are kept.
    """
    shape = tuple(int(s) for s in shape[:3])
    start = [(n - m) // 2 for n, m in zip(data.shape[:3], shape)]
    out = np.full(shape + tuple(data.shape[3:]), cval, dtype=data.dtype)
    src, dst = [], []
    for n, m, s in zip(data.shape[:3], shape, start):
        lo, hi = max(s, 0), min(s + m, n)
        src.append(slice(lo, max(lo, hi)))
        dst.append(slice(lo - s, lo - s + max(0, hi - lo)))
    out[tuple(dst)] = data[tuple(src)]
    new_affine = np.asarray(affine, float).copy()
    new_affine[:3, 3] = affine[:3, :3] @ np.asarray(start, float) + affine[:3, 3]
    return out, new_affine


def normalise_image(image: np.ndarray, method: str = "zscore", where: str = "image"
                    ) -> np.ndarray:
    """``zscore``: (x - mean) / std over the whole volume; ``none``: unchanged. float32."""
    x = np.asarray(image, np.float64)
    if method == "none":
        return x.astype(np.float32)
    if method != "zscore":
        raise InputError("preprocess.normalise", f"unknown method {method!r}",
                         "use 'zscore' or 'none'")
    sd = x.std()
    if not np.isfinite(sd) or sd == 0:
        raise InputError(where, "constant image after resampling/cropping",
                         "check preprocess.shape/spacing and the image content")
    return ((x - x.mean()) / sd).astype(np.float32)


def organ_channels(labels_map: Mapping[int, str], evaluate: Sequence[str] | None
                   ) -> list[int]:
    """Label values of the evaluated organs, in ``evaluate`` order (default: map order)."""
    labels = check_labels_config(labels_map, evaluate)
    names = list(evaluate) if evaluate is not None else list(labels.values())
    value_of = {name: v for v, name in labels.items()}
    return [value_of[n] for n in names]


def relabel(index_map: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Index map -> uint8 with ``values[k]`` -> ``k + 1``, everything else 0."""
    idx = np.asarray(index_map)
    if not np.issubdtype(idx.dtype, np.integer):
        idx = np.rint(idx).astype(np.int32)
    if idx.size and idx.min() < 0:
        idx = np.clip(idx, 0, None)
    lut = np.zeros(max(int(idx.max(initial=0)), max(values, default=0)) + 1, np.uint8)
    for k, v in enumerate(values):
        lut[v] = k + 1
    return lut[idx]


def shape_holding(mask: np.ndarray, shape: Sequence[int], multiple: int = 8
                  ) -> tuple[int, ...]:
    """Smallest shape (per axis at least ``shape``, a multiple of ``multiple``) whose centred
    crop (:func:`crop_or_pad`) of a grid of ``mask.shape`` keeps every nonzero voxel."""
    idx = np.argwhere(mask)
    out = []
    for a, (n, m) in enumerate(zip(mask.shape[:3], shape[:3])):
        lo, hi = (int(idx[:, a].min()), int(idx[:, a].max())) if len(idx) else (0, 0)
        m = int(m)
        while True:
            start = (n - m) // 2
            if start <= lo and start + m - 1 >= hi:
                break
            m += 1
        out.append(int(np.ceil(m / multiple) * multiple))
    return tuple(max(int(s), o) for s, o in zip(shape[:3], out))


def warn_label_crop(resampled: np.ndarray, cropped: np.ndarray, shape: Sequence[int],
                    spacing: float, max_fraction: float, where: str) -> float:
    """Fraction of labelled voxels of ``resampled`` (index map on the isotropic grid) that the
    crop to ``shape`` loses; above ``max_fraction`` a warning names the file and the
    ``preprocess.shape`` that would hold every labelled voxel. Returns the fraction."""
    total = int(np.count_nonzero(resampled))
    if total == 0:
        return 0.0
    lost = 1.0 - np.count_nonzero(cropped) / total
    if lost > max_fraction:
        need = shape_holding(resampled > 0, shape)
        msg = (f"{where}: the grid preprocess.shape {list(int(v) for v in shape)} at "
               f"{spacing:g} mm cuts off {100 * lost:.1f} % of the labelled voxels; "
               f"preprocess.shape {list(need)} would hold them")
        log.warning(msg)
        print(f"WARNING: {msg}", file=sys.stderr, flush=True)
    return float(lost)


def out_affine_of(affine: np.ndarray, shape: Sequence[int], spacing: float) -> np.ndarray:
    """Affine of :func:`isotropic_grid` (before cropping/padding)."""
    return isotropic_grid(affine, shape, spacing)[0]


def _channels_to_index(probs: np.ndarray) -> np.ndarray:
    """(X, Y, Z, K) probabilities -> index map 0..K (background 1 - max; ties -> first)."""
    if probs.shape[3] == 0:
        return np.zeros(probs.shape[:3], np.uint8)
    bg = 1.0 - probs.max(axis=3, keepdims=True)
    return np.argmax(np.concatenate([bg, probs], 3), axis=3).astype(np.uint8)


def preprocess_arrays(image: np.ndarray, affine: np.ndarray, label: np.ndarray | None = None,
                      *, labels_map: Mapping[int, str], evaluate: Sequence[str] | None = None,
                      spacing: float = 2.0, shape: Sequence[int] = (80, 64, 64),
                      normalise: str = "zscore", reference: tuple | None = None,
                      antialias: bool = True, where: str = "image",
                      max_label_crop: float = 0.01) -> Preprocessed:
    """Steps 0-5 of the module docstring on arrays. ``label`` is a 3-D index map or 4-D
    channels on the image grid; ``reference`` is ``(ref_shape, ref_affine)`` or None.
    :func:`warn_label_crop` warns when ``shape`` cuts off more than ``max_label_crop`` of the
    labelled voxels."""
    values = organ_channels(labels_map, evaluate)
    image = np.asarray(image, np.float32)
    multi = label is not None and label.ndim == 4
    if label is not None:
        if multi:   # evaluated channels only, as float probabilities
            lab = np.stack([label[..., v - 1] if v - 1 < label.shape[3] else
                            np.zeros(label.shape[:3]) for v in values], -1).astype(np.float32)
        else:
            lab = relabel(label, values)
    if reference is not None:
        ref_shape, affine = tuple(reference[0])[:3], np.asarray(reference[1], float)
        image = resize_to_reference(image, ref_shape, 1)
        if label is not None:
            lab = resize_to_reference(lab, ref_shape, 1 if multi else 0)
    image, can_affine = reorient_canonical(image, affine)
    pad = float(image.min())
    fov, _ = resample_isotropic(np.ones(image.shape, np.uint8), can_affine, spacing, 0, 0,
                                False)
    fov, _ = crop_or_pad(fov.astype(np.uint8), out_affine_of(can_affine, image.shape, spacing),
                         shape, 0)
    image, out_affine = resample_isotropic(image, can_affine, spacing, 1, pad, antialias)
    image, final_affine = crop_or_pad(image, out_affine, shape, pad)
    image = normalise_image(image, normalise, where)
    out_label = None
    if label is not None:
        lab, _ = reorient_canonical(lab, affine)
        lab, _ = resample_isotropic(lab, can_affine, spacing, 1 if multi else 0, 0.0, False)
        if multi:
            lab = _channels_to_index(lab)
        out_label, _ = crop_or_pad(lab.astype(np.uint8), out_affine, shape, 0)
        warn_label_crop(lab, out_label, shape, spacing, max_label_crop, where)
    return Preprocessed(image, out_label, final_affine, fov)


def preprocess_case(image_path: PathLike, label_path: PathLike | None, out_image: PathLike,
                    out_label: PathLike | None, *, labels_map: Mapping[int, str],
                    evaluate: Sequence[str] | None = None, spacing: float = 2.0,
                    shape: Sequence[int] = (80, 64, 64), normalise: str = "zscore",
                    reference: PathLike | None = None, antialias: bool = True,
                    out_fov: PathLike | None = None, max_label_crop: float = 0.01
                    ) -> Preprocessed:
    """Read, preprocess (module docstring) and write one case; returns the arrays written.

    ``out_fov``: where to write the field-of-view mask (uint8, 1 = voxel from the scan,
    0 = padding added by resampling or padding to ``shape``).

    ``reference``: path of the image whose grid this one is resized to over index space
    (``preprocess.resize_moving_to_fixed``: the pair's fixed image for the moving one).
    Bad inputs raise :class:`InputError` naming the file.
    """
    from suits.io import save_labels, save_volume

    image_path = Path(image_path)
    data, affine = read_nifti(image_path)
    data = check_image(data, str(image_path))
    label = None
    if label_path is not None:
        ldata, laff = read_nifti(label_path)
        label = check_label(ldata, check_labels_config(labels_map), str(label_path), data.shape)
        if np.max(np.abs(laff - affine)) > 0.01 * float(voxel_sizes(affine).min()):
            raise InputError(str(label_path), "label affine differs from the image affine",
                             "use the label exported on the image's grid")
    ref = None
    if reference is not None:
        ref_img = nib.load(str(reference))
        ref = (ref_img.shape[:3], ref_img.affine)
    out = preprocess_arrays(data, affine, label, labels_map=labels_map, evaluate=evaluate,
                            spacing=spacing, shape=shape, normalise=normalise, reference=ref,
                            antialias=antialias, where=str(image_path),
                            max_label_crop=max_label_crop)
    save_volume(out_image, out.image, out.affine)
    if out_label is not None and out.label is not None:
        save_labels(out_label, out.label, out.affine)
    if out_fov is not None:
        save_labels(out_fov, out.fov, out.affine)
    return out
