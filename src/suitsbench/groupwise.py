"""Groupwise affine pre-registration into an unbiased mean space (Modat et al. 2014).

Paper section 4: "All pairwise transformations were computed and an unbiased groupwise mean was
obtained using matrix logarithms". Conventions (same as :mod:`suitsbench.affine`): every
transform is a 4x4 ``float64`` matrix in world millimetres; ``T[(i, j)]`` is
``register_affine(fixed=image i, moving=image j)`` and maps a world point of image ``i`` to the
corresponding world point of image ``j``.

**Mean.** For image ``i`` of the group ``ids`` (``N`` images)::

    M_i = expm( (1/N) * sum_j L_ij ),   L_ii = 0,
    L_ij = (logm T_ij - logm T_ji) / 2   (symmetric=True, both directions registered)
    L_ij = logm T_ij                      (symmetric=False, or only T_ij available)
    L_ij = -logm T_ji                     (only T_ji available)

``M_i`` maps a world point of image ``i`` **into the mean space** ("image i registered to the
mean", i.e. ``register_affine`` convention with image ``i`` fixed and the mean space moving).
If ``T_ij = A_j inv(A_i)`` for image-to-template placements ``A_i``, then ``M_i ~ Abar inv(A_i)``
and every image's content lands at the same mean-space position. With the symmetrised logs
``L_ji = -L_ij``, so ``sum_i logm M_i = 0``: the mean space is the log-Euclidean mean of the
group and no image is preferred (unbiased). Symmetrisation replaces ``T_ij`` and ``inv(T_ji)``
(which differ by the registration's inverse inconsistency) by their log-Euclidean midpoint;
:func:`inverse_consistency_mm` measures that disagreement.

**Resampling.** :func:`resample_to_space` puts image ``i`` on a reference grid of the mean space:
output voxel ``v`` samples image ``i`` at voxel ``inv(A_i) @ inv(M_i) @ R @ v``.
:func:`mean_space_grid` gives the default reference grid: the preprocessed grid (direction,
spacing and shape of the first image) centred on the mean of the images' field-of-view centres
mapped into the mean space.

**Files.** :func:`save_transform` / :func:`load_transform`: a 4x4 text matrix (``%.17g``, exact
round trip, ``#`` comment header). :func:`save_row` / :func:`load_row`: the TSV
``affine/pairwise/{id}.tsv`` with columns ``fixed moving t00 t01 ... t33`` (row-major), one row
per other image.

**Torch.** Only the pairwise registration (:func:`pairwise_row`, :func:`pairwise_all`) loads
torch (:mod:`suitsbench.affine`), when called; the mean, the grid, the resampling (numpy and
scipy, :mod:`suitsbench.affinemap`) and the files do not.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
from scipy import linalg

from suits.atomic import atomic_path
from suitsbench.affinemap import resample_affine
from suitsbench.errors import InputError
from suitsbench.pairwise_plan import partners

__all__ = [
    "real_logm", "log_euclidean_mean", "load_fov_masks", "partners", "pairwise_row", "pairwise_all",
    "rows_to_pairs",
    "symmetrise", "inverse_consistency_mm", "template_ids", "groupwise_mean", "mean_space_grid",
    "resample_to_space", "save_transform", "load_transform", "save_row", "load_row",
]

PathLike = str | os.PathLike

if TYPE_CHECKING:
    from suitsbench.affine import ArrayLike

    Image = tuple[ArrayLike, np.ndarray] | PathLike


def real_logm(M: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    """Principal real matrix logarithm of a 4x4 homogeneous affine.

    Imaginary parts below ``tol`` (relative to the matrix norm, rounding noise of
    ``scipy.linalg.logm``) are dropped and the last row is set to zero (exact for an affine).
    Raises ``ValueError`` when no real logarithm exists (reflection, rotation of 180 degrees).
    """
    M = np.asarray(M, float)
    if M.shape != (4, 4) or not np.allclose(M[3], [0, 0, 0, 1]):
        raise ValueError(f"expected a 4x4 homogeneous affine, got {M!r}")
    if np.linalg.det(M[:3, :3]) <= 0:
        raise ValueError("affine with a non-positive determinant has no real logarithm")
    L = linalg.logm(M)
    L = np.asarray(L)
    if np.iscomplexobj(L):
        if np.abs(L.imag).max() > tol * max(1.0, np.abs(L.real).max()):
            raise ValueError("affine has no real logarithm (rotation near 180 degrees?)")
        L = L.real
    L = L.copy()
    L[3] = 0.0
    return L


def _expm(L: np.ndarray) -> np.ndarray:
    E = np.asarray(linalg.expm(L), float)
    E[3] = [0.0, 0.0, 0.0, 1.0]
    return E


def log_euclidean_mean(mats: Iterable[np.ndarray], weights: Sequence[float] | None = None
                       ) -> np.ndarray:
    """``expm(sum_k w_k logm(M_k))`` with weights ``w`` summing to 1 (default equal)."""
    logs = [real_logm(m) for m in mats]
    if not logs:
        raise ValueError("log_euclidean_mean of no matrices")
    w = np.full(len(logs), 1.0 / len(logs)) if weights is None else np.asarray(weights, float)
    return _expm(sum(wk * L for wk, L in zip(w, logs)))


def _load(image: Image) -> tuple[ArrayLike, np.ndarray]:
    if isinstance(image, (str, os.PathLike)):
        from suits.io import load_volume

        vol, aff = load_volume(image)
        return vol, np.asarray(aff, float)
    vol, aff = image
    return vol, np.asarray(aff, float)


def load_fov_masks(paths: Mapping[str, PathLike]) -> dict[str, np.ndarray]:
    """``{id: mask}`` of the field-of-view masks (preprocessing's ``*_fov.nii.gz``) that mark
    padding; masks without a zero voxel are left out (nothing to ignore)."""
    out = {}
    for k, path in paths.items():
        m = np.asarray(nib.load(str(path)).dataobj) > 0
        if not m.all():
            out[k] = m
    return out


def pairwise_row(fixed_id: str, images: Mapping[str, Image],
                 masks: Mapping[str, np.ndarray] | None = None,
                 moving_ids: Sequence[str] | None = None, **register_kwargs
                 ) -> dict[str, np.ndarray]:
    """``{j: T_ij}`` for ``i = fixed_id`` and every other image ``j`` of ``images`` (or only
    the ids ``moving_ids``, e.g. from :func:`partners`).

    ``images`` maps an id to ``(volume, affine)`` or to a NIfTI path (loaded with
    :func:`suits.io.load_volume`); ``masks`` optionally maps ids to field-of-view masks
    (nonzero = scanned); ``register_kwargs`` go to :func:`suitsbench.affine.register_affine`
    (``settings``, ``init``, ``device``, ...).
    """
    from suitsbench.affine import register_affine

    if fixed_id not in images:
        raise KeyError(f"fixed id {fixed_id!r} not among the images")
    wanted = set(images if moving_ids is None else moving_ids)
    if wanted - set(images):
        raise KeyError(f"moving ids {sorted(wanted - set(images))} not among the images")
    masks = masks or {}
    fixed, fixed_affine = _load(images[fixed_id])
    row = {}
    for j, img in images.items():
        if j == fixed_id or j not in wanted:
            continue
        moving, moving_affine = _load(img)
        row[j] = register_affine(fixed, moving, fixed_affine, moving_affine,
                                 fixed_mask=masks.get(fixed_id), moving_mask=masks.get(j),
                                 **register_kwargs)
    return row


def pairwise_all(images: Mapping[str, Image], directions: str = "both", **register_kwargs
                 ) -> dict[tuple[str, str], np.ndarray]:
    """The pairwise transforms ``{(i, j): T_ij}`` of the rows of :func:`partners`: all
    ``N (N - 1)`` ordered pairs (``"both"``, so that :func:`groupwise_mean` can symmetrise) or
    each unordered pair once (``"one"``). Paths are loaded once."""
    loaded = {k: _load(v) for k, v in images.items()}
    return rows_to_pairs({i: pairwise_row(i, loaded, moving_ids=partners(list(loaded), i, directions),
                                          **register_kwargs) for i in loaded})


def rows_to_pairs(rows: Mapping[str, Mapping[str, np.ndarray]]
                  ) -> dict[tuple[str, str], np.ndarray]:
    """``{i: {j: T_ij}}`` (e.g. from :func:`load_row` per image) to ``{(i, j): T_ij}``."""
    return {(i, j): np.asarray(T, float) for i, row in rows.items() for j, T in row.items()}


def _pair_log(T: Mapping[tuple[str, str], np.ndarray], i: str, j: str, symmetric: bool
              ) -> np.ndarray:
    fwd, bwd = T.get((i, j)), T.get((j, i))
    if fwd is None and bwd is None:
        raise KeyError(f"no transform between {i!r} and {j!r} in either direction")
    if fwd is not None and (bwd is None or not symmetric):
        return real_logm(fwd)
    if fwd is None:
        return -real_logm(bwd)
    return 0.5 * (real_logm(fwd) - real_logm(bwd))


def symmetrise(T: Mapping[tuple[str, str], np.ndarray], ids: Sequence[str]
               ) -> dict[tuple[str, str], np.ndarray]:
    """Inverse-consistent transforms ``S_ij = expm((logm T_ij - logm T_ji) / 2)`` for all
    ordered pairs of ``ids`` (``S_ji = inv(S_ij)`` exactly; a missing direction is replaced by
    the inverse of the other)."""
    return {(i, j): _expm(_pair_log(T, i, j, True)) for i in ids for j in ids if i != j}


def inverse_consistency_mm(T_ij: np.ndarray, T_ji: np.ndarray, affine: np.ndarray,
                           shape: Sequence[int]) -> float:
    """Largest distance (mm) between ``p`` and ``T_ji @ T_ij @ p`` over the corners of the
    field of view (``affine``, ``shape``) of image ``i``: 0 for inverse-consistent pairs."""
    c = np.array([[a, b, d, 1.0] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1)
                  for d in (0, shape[2] - 1)]).T
    p = np.asarray(affine, float) @ c
    q = np.asarray(T_ji, float) @ np.asarray(T_ij, float) @ p
    return float(np.linalg.norm((q - p)[:3], axis=0).max())


def template_ids(ids: Sequence[str], masks: Mapping[str, np.ndarray] | None = None,
                 template_fov: float = 0.0) -> list[str]:
    """The images that span the mean space: those whose field of view (the nonzero voxels of
    ``masks[i]``; an image without a mask fills its grid) covers at least ``template_fov``
    times the largest fraction of the grid in the group. 0 (or no masks): all of them."""
    masks = masks or {}
    frac = {i: float(np.mean(np.asarray(masks[i]) > 0)) if i in masks else 1.0 for i in ids}
    top = max(frac.values(), default=1.0)
    return [i for i in ids if frac[i] >= float(template_fov) * top]


def groupwise_mean(T: Mapping[tuple[str, str], np.ndarray], ids: Sequence[str],
                   symmetric: bool = True, masks: Mapping[str, np.ndarray] | None = None,
                   template_fov: float = 0.0) -> dict[str, np.ndarray]:
    """``{i: M_i}``: each image's transform into the unbiased mean space (module docstring).

    ``T`` holds ``T_ij`` for ordered pairs (at least one direction of each pair needed;
    ``T_ii`` entries are ignored: the identity is used). ``M_i = expm(mean_j L_ij)`` over the
    template images ``j`` (:func:`template_ids` of ``masks`` and ``template_fov``; by default
    all of ``ids``), including ``i`` itself when it is one (``L_ii = 0``). The mean space is
    then the log-Euclidean mean of the template images, and a partial scan (an axial slab) is
    placed only through its transforms to them: two slabs of different heights share no
    anatomy, and their transform would pull each other's placement.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate ids: {ids}")
    template = template_ids(ids, masks, template_fov)
    out = {}
    for i in ids:
        acc = np.zeros((4, 4))
        for j in template:
            if j != i:
                acc += _pair_log(T, i, j, symmetric)
        out[i] = _expm(acc / len(template))
    return out


def mean_space_grid(affines: Sequence[np.ndarray], shapes: Sequence[Sequence[int]],
                    transforms: Sequence[np.ndarray], spacing: float | None = None,
                    shape: Sequence[int] | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """Reference grid ``(affine, shape)`` in the mean space.

    Direction cosines of ``affines[0]``, isotropic ``spacing`` (default: the smallest voxel size
    of ``affines[0]``) and ``shape`` (default ``shapes[0]``); the grid centre is the mean over
    the images of their field-of-view centre mapped into the mean space (``M_k @ centre_k``).
    For preprocessed images this is the common preprocessed grid, moved to where the group's
    anatomy lies in the mean space. One image (e.g. only a reference) is allowed.
    """
    if not (len(affines) == len(shapes) == len(transforms)) or not affines:
        raise ValueError("need as many affines, shapes and transforms, at least one")
    a0 = np.asarray(affines[0], float)
    vox = np.linalg.norm(a0[:3, :3], axis=0)
    sp = float(vox.min()) if spacing is None else float(spacing)
    out_shape = tuple(int(s) for s in (shapes[0] if shape is None else shape))[:3]
    centres = []
    for a, s, M in zip(affines, shapes, transforms):
        c = np.append((np.asarray(s[:3], float) - 1) / 2, 1.0)
        centres.append((np.asarray(M, float) @ np.asarray(a, float) @ c)[:3])
    centre = np.mean(centres, 0)
    ref = np.eye(4)
    ref[:3, :3] = a0[:3, :3] / vox * sp
    ref[:3, 3] = centre - ref[:3, :3] @ ((np.asarray(out_shape, float) - 1) / 2)
    return ref, out_shape


def resample_to_space(image: ArrayLike, affine: np.ndarray, T: np.ndarray,
                      reference_affine: np.ndarray, reference_shape: Sequence[int],
                      order: int = 1, cval: float | None = None) -> np.ndarray:
    """Image (``order=1``, trilinear) or label map (``order=0``, nearest) in the mean space.

    ``T`` maps the image's world into the mean space (:func:`groupwise_mean`); output voxel
    ``v`` of the reference grid samples the image at voxel
    ``inv(affine) @ inv(T) @ reference_affine @ v``. Outside the image's field of view the value
    is ``cval`` (default: the image minimum for ``order > 0``, as preprocessing pads; 0 for
    labels). Returns a numpy array of ``reference_shape`` (float32 for images, the input dtype
    for labels).
    """
    data = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if cval is None:
        cval = float(data.min()) if order > 0 else 0.0
    return resample_affine(data, affine, np.linalg.inv(np.asarray(T, float)), reference_affine,
                           reference_shape, order=order, cval=cval)


def save_transform(path: PathLike, T: np.ndarray, comment: str | None = None) -> None:
    """Write a 4x4 transform as text (atomic), full double precision."""
    T = np.asarray(T, float)
    if T.shape != (4, 4):
        raise ValueError(f"transform must be 4x4, got {T.shape}")
    header = "4x4 affine, world mm (RAS as in the NIfTI affines)"
    if comment:
        header += "; " + " ".join(str(comment).split())
    with atomic_path(path) as tmp:
        np.savetxt(tmp, T, fmt="%.17g", header=header)


def _check_affine(T: np.ndarray, where: str) -> np.ndarray:
    if T.shape != (4, 4) or not np.all(np.isfinite(T)) or not np.allclose(T[3], [0, 0, 0, 1]):
        raise InputError(where, "not a finite 4x4 affine with last row 0 0 0 1",
                         "re-run the affine stage that writes it")
    return T


def load_transform(path: PathLike) -> np.ndarray:
    """Read a transform written by :func:`save_transform` (any whitespace 4x4 text matrix)."""
    try:
        T = np.loadtxt(path, comments="#", dtype=float, ndmin=2)
    except (OSError, ValueError) as e:
        raise InputError(str(path), f"cannot read a 4x4 transform ({e})",
                         "re-run the affine stage that writes it") from e
    return _check_affine(T, str(path))


_ROW_COLUMNS = ["fixed", "moving"] + [f"t{r}{c}" for r in range(4) for c in range(4)]


def save_row(path: PathLike, fixed_id: str, row: Mapping[str, np.ndarray]) -> None:
    """Write ``{moving_id: T_fixed,moving}`` as a TSV (columns ``fixed moving t00..t33``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(_ROW_COLUMNS)
            for j, T in row.items():
                T = np.asarray(T, float)
                w.writerow([fixed_id, j] + [f"{v:.17g}" for v in T.ravel()])


def load_row(path: PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read a TSV of :func:`save_row`: ``{fixed_id: {moving_id: T}}`` (one fixed id per file
    in the workflow; several are allowed). Merge files with ``{**a, **b}`` and pass through
    :func:`rows_to_pairs`."""
    out: dict[str, dict[str, np.ndarray]] = {}
    with open(path, newline="") as fh:
        r = csv.reader(fh, delimiter="\t")
        header = next(r, None)
        if header != _ROW_COLUMNS:
            raise InputError(str(path), "not a pairwise transform row (bad header)",
                             "re-run the affine_pairwise stage")
        for n, rec in enumerate(r, start=2):
            if len(rec) != len(_ROW_COLUMNS):
                raise InputError(f"{path}:{n}", f"{len(rec)} columns, expected 18",
                                 "re-run the affine_pairwise stage")
            T = _check_affine(np.array([float(v) for v in rec[2:]]).reshape(4, 4), f"{path}:{n}")
            out.setdefault(rec[0], {})[rec[1]] = T
    return out
