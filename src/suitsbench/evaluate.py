"""The one evaluator for every method: warp the moving labels with the method's field, score.

For each pair the moving label map is warped onto the fixed grid with the shared
``suits.warp.warp_labels`` (one-hot, trilinear per class, ``argmax`` over classes) and compared
with the fixed label map per organ (Dice, HD95 in mm and in voxels of the grid); the field's
Jacobian statistics (``suitsbench.metrics.jacobian_stats``) are added to every row of the
pair. With the moving scan's field-of-view mask (1 = scanned, 0 = padding), ``uncovered`` is
the fraction of each fixed structure that the warped moving scan does not cover (NaN without a
mask), so that partial overlap shows as such and not only as a low Dice. A method without a field (``field_path_for`` returns None, e.g. ``initial``) is scored
with the identity, i.e. the unwarped moving labels.

Rows are long format, one per (method, pair, organ), columns ``ROW_COLUMNS``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from suits.atomic import write_text
from suitsbench import metrics

ROW_COLUMNS = (
    "method", "pair", "organ", "label", "dice", "hd95", "hd95_vox", "fixed_voxels", "warped_voxels",
    "uncovered", "jac_frac_nonpos", "jac_n_nonpos", "jac_std_log", "jac_sdlogj", "jac_min", "jac_mean",
)
PathLike = str | os.PathLike


def spacing_from_affine(affine: Any) -> tuple[float, float, float]:
    """Voxel size in mm along the array axes i, j, k (column norms of the affine's 3x3 part)."""
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.sqrt((a[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def warp_label_map(moving_labels: Any, u: Any | None, num_classes: int):
    """Moving label map ``(1,1,D,H,W)`` warped by ``u`` ``(1,3,D,H,W)`` -> index map ``(1,D,H,W)``.

    Uses ``suits.warp.warp_labels`` + ``argmax(1)`` for every method; ``u=None`` is the identity.
    """
    import torch

    labels = torch.as_tensor(moving_labels).long()
    if u is None:
        return labels[:, 0]
    from suits.warp import warp_labels

    u = torch.as_tensor(u, dtype=torch.float32, device=labels.device)
    return warp_labels(labels, u, num_classes).argmax(1)


def evaluate_pair(
    fixed_labels: Any,
    moving_labels: Any,
    u: Any | None,
    organs: Mapping[int, str],
    spacing: Sequence[float],
    hd95_empty: metrics.EmptyPolicy = "diagonal",
    hd95_reduction: metrics.Reduction = "pooled",
    moving_fov: Any | None = None,
) -> list[dict[str, Any]]:
    """Rows (without ``method``/``pair``) for one pair: per organ Dice/HD95, plus Jacobian stats.

    ``hd95`` is in mm (``spacing``), ``hd95_vox`` in voxels (unit spacing, as Learn2Reg's
    evaluation computes it on its isotropic grids).

    ``fixed_labels``/``moving_labels`` are index maps ``(1,1,D,H,W)``; ``u`` the voxel
    displacement ``(1,3,D,H,W)`` on the fixed grid, or None for the identity; ``moving_fov``
    the moving scan's field-of-view mask on the moving labels' grid, or None.
    """
    fixed = metrics.as_label_map(fixed_labels)
    if u is not None:
        u_shape = tuple(metrics.to_numpy(u).shape)
        if u_shape[2:] != fixed.shape or u_shape[:2] != (1, 3):
            raise ValueError(f"field of shape {u_shape} does not match the fixed grid {fixed.shape}")
    moving = metrics.as_label_map(moving_labels)
    num_classes = int(max(max(organs), int(fixed.max()), int(moving.max()))) + 1
    warped = metrics.as_label_map(warp_label_map(moving[None, None], u, num_classes))
    if warped.shape != fixed.shape:
        raise ValueError(f"warped labels {warped.shape} differ from the fixed grid {fixed.shape}")
    labels = [int(k) for k in organs]
    d = metrics.dice(fixed, warped, labels)
    h = metrics.hd95(fixed, warped, spacing, labels, empty=hd95_empty, reduction=hd95_reduction)
    hv = metrics.hd95(fixed, warped, (1.0, 1.0, 1.0), labels, empty=hd95_empty, reduction=hd95_reduction)
    jac = metrics.jacobian_stats(u if u is not None else np.zeros((1, 3) + fixed.shape))
    covered = None
    if moving_fov is not None:
        fov = (metrics.as_label_map(moving_fov) > 0).astype(np.int64)
        if fov.shape != moving.shape:
            raise ValueError(f"field-of-view mask {fov.shape} differs from the moving labels {moving.shape}")
        covered = metrics.as_label_map(warp_label_map(fov[None, None], u, 2)) > 0

    def uncovered(k: int) -> float:
        inside = fixed == k
        if covered is None or not inside.any():
            return float("nan")
        return float(1.0 - covered[inside].mean())

    return [
        {
            "organ": organs[k],
            "label": k,
            "dice": d[k],
            "hd95": h[k],
            "hd95_vox": hv[k],
            "fixed_voxels": int((fixed == k).sum()),
            "warped_voxels": int((warped == k).sum()),
            "uncovered": uncovered(k),
            **jac,
        }
        for k in labels
    ]


def evaluate_method(
    method: str,
    pairs: Iterable[str],
    field_path_for: Callable[[str], PathLike | None],
    fixed_label_path: Callable[[str], PathLike],
    moving_label_path: Callable[[str], PathLike],
    organs: Mapping[int, str],
    spacing: Sequence[float] | None = None,
    hd95_empty: metrics.EmptyPolicy = "diagonal",
    hd95_reduction: metrics.Reduction = "pooled",
    moving_fov_path: Callable[[str], PathLike | None] | None = None,
) -> list[dict[str, Any]]:
    """Score ``method`` on ``pairs``: one row per pair and organ (columns ``ROW_COLUMNS``).

    ``field_path_for(pair)`` gives the contract field file (or None for the identity);
    ``fixed_label_path(pair)`` / ``moving_label_path(pair)`` the label maps on the grid the
    field lives on. ``spacing`` (mm, i/j/k) defaults to the fixed label file's affine.
    ``moving_fov_path(pair)`` gives the moving scan's field-of-view mask on that grid (column
    ``uncovered``), or None.
    """
    from suits.io import load_field, load_labels

    rows: list[dict[str, Any]] = []
    for pair in pairs:
        fixed, affine = load_labels(fixed_label_path(pair))
        moving, _ = load_labels(moving_label_path(pair))
        field_path = field_path_for(pair)
        u = load_field(field_path)[0] if field_path is not None else None
        sp = tuple(spacing) if spacing is not None else spacing_from_affine(affine)
        fov_path = moving_fov_path(pair) if moving_fov_path is not None else None
        fov = load_labels(fov_path)[0] if fov_path is not None else None
        for row in evaluate_pair(fixed, moving, u, organs, sp, hd95_empty, hd95_reduction, fov):
            rows.append({"method": method, "pair": str(pair), **row})
    return rows


def metrics_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with ``ROW_COLUMNS`` first (extra columns after, sorted)."""
    df = pd.DataFrame(list(rows))
    extra = sorted(c for c in df.columns if c not in ROW_COLUMNS)
    return df.reindex(columns=[*ROW_COLUMNS, *extra])


def write_metrics(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, path: PathLike) -> Path:
    """Write the rows as TSV (full float precision, ``NaN`` for missing), atomically."""
    df = rows if isinstance(rows, pd.DataFrame) else metrics_frame(rows)
    return write_text(path, df.to_csv(sep="\t", index=False, lineterminator="\n", na_rep="NaN"))


def read_metrics(paths: Iterable[PathLike]) -> pd.DataFrame:
    """Concatenate metrics TSVs (in the given order) into one DataFrame."""
    frames = [pd.read_csv(p, sep="\t", dtype={"method": str, "pair": str, "organ": str}) for p in paths]
    if not frames:
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    return pd.concat(frames, ignore_index=True)
