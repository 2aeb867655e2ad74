"""Figures of the paper: box plots of Dice / HD95 (Figs. 3, 4) and an example slice (Fig. 2).

Figures are built on ``matplotlib.figure.Figure`` (no pyplot state, Agg canvas) and saved with
metadata that would change between runs removed (``Software`` for PNG, ``CreationDate`` for
PDF), so the same input gives byte-identical files. Every function returns the Figure.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from suits.atomic import atomic_path  # noqa: E402
from suitsbench.metrics import as_label_map, to_numpy  # noqa: E402
from suitsbench.table import METHOD_NAMES, ORGAN_NAMES, display_names  # noqa: E402

METRIC_LABELS = {"dice": "Dice", "hd95": "HD95 (mm)"}
#: one fixed colour per method (paper order first), so a method keeps its colour in every figure
METHOD_PALETTE = "colorblind"
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None}


def method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """Colour per method key: paper methods by their position in ``METHOD_NAMES``, extras after."""
    keys = list(METHOD_NAMES) + [m for m in methods if m not in METHOD_NAMES]
    colours = sns.color_palette(METHOD_PALETTE, n_colors=max(len(keys), 10))
    return {m: colours[keys.index(m)] for m in methods}


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Save ``fig`` reproducibly (format from the suffix: png or pdf) via a temp file + rename."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    metadata = {"png": PNG_METADATA, "pdf": PDF_METADATA}.get(fmt)
    if metadata is None:
        raise ValueError(f"unsupported figure format {path.suffix!r} (png or pdf)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
    return path


def boxplot_data(
    metrics_df: pd.DataFrame, metric: str, methods: Mapping[str, str], organs: Mapping[str, str]
) -> pd.DataFrame:
    """Long table ``method, group, value`` with one group per organ plus ``mean`` (per-pair mean)."""
    df = metrics_df[metrics_df["method"].isin(list(methods)) & metrics_df["organ"].isin(list(organs))]
    df = df.sort_values(["method", "pair", "organ"], kind="mergesort")
    per_organ = pd.DataFrame(
        {"method": df["method"], "group": df["organ"].map(organs), "value": df[metric]}
    )
    means = df.groupby(["method", "pair"], sort=True)[metric].mean().reset_index()
    per_pair = pd.DataFrame({"method": means["method"], "group": "mean", "value": means[metric]})
    out = pd.concat([per_organ, per_pair], ignore_index=True)
    out["method"] = out["method"].map(methods)
    return out.dropna(subset=["value"]).reset_index(drop=True)


def boxplot(
    metrics_df: pd.DataFrame,
    metric: str = "dice",
    methods: Mapping[str, str] | Sequence[str] | None = None,
    organs: Mapping[str, str] | Sequence[str] | None = None,
    out_png: str | os.PathLike | None = None,
    out_pdf: str | os.PathLike | None = None,
    figsize: tuple[float, float] = (10.0, 4.0),
) -> Figure:
    """Box plots of ``metric`` (``dice`` or ``hd95``) per organ and for the per-pair organ mean.

    One colour per method, methods in the given order (default: the paper's order, then
    extras), legend above the axes. Writes ``out_png`` / ``out_pdf`` when given.
    """
    if metric not in METRIC_LABELS:
        raise ValueError(f"metric must be one of {list(METRIC_LABELS)}, got {metric!r}")
    meth = display_names(methods, METHOD_NAMES, metrics_df["method"].unique())
    org = display_names(organs, ORGAN_NAMES, metrics_df["organ"].unique())
    data = boxplot_data(metrics_df, metric, meth, org)
    colours = method_colours(list(meth))
    palette = {meth[k]: c for k, c in colours.items()}

    fig = Figure(figsize=figsize)
    ax = fig.add_subplot(1, 1, 1)
    with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert`
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
        sns.boxplot(
            data=data, x="group", y="value", hue="method",
            order=list(org.values()) + ["mean"], hue_order=list(meth.values()), palette=palette,
            ax=ax, linewidth=0.8, fliersize=2, width=0.8,
        )
    ax.set_xlabel("structure")
    ax.set_ylabel(METRIC_LABELS[metric])
    if metric == "dice":
        ax.set_ylim(0.0, 1.0)
    ax.axvline(len(org) - 0.5, color="0.6", linewidth=0.8, linestyle=":")
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    # one legend row for up to six methods (the paper's), two rows for more
    ncol = len(labels) if len(labels) <= 6 else -(-len(labels) // 2)
    rows = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="upper center", ncol=ncol, frameon=False, fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.92 - 0.06 * (rows - 1)))
    for out in (out_png, out_pdf):
        if out is not None:
            save_figure(fig, out)
    return fig


# ----------------------------------------------------------------------------- Fig. 2


def as_volume(x: Any) -> np.ndarray:
    """Squeeze an image ``(D,H,W)``, ``(1,D,H,W)`` or ``(1,1,D,H,W)`` to a float 3-D array."""
    arr = to_numpy(x).astype(np.float64)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {to_numpy(x).shape}")
    return arr


def busiest_slice(labels: np.ndarray, axis: int = 1) -> int:
    """Index along ``axis`` with the most foreground voxels (lowest index on ties)."""
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax((labels > 0).sum(axis=other)))


def _window(img2d: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(img2d, [1.0, 99.0])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def example_figure(
    fixed_img: Any,
    moving_img: Any,
    warped_img: Any,
    fixed_labels: Any,
    moving_labels: Any | None,
    warped_labels: Any | None,
    out_png: str | os.PathLike | None = None,
    organs: Mapping[int, str] | None = None,
    slice_index: int | None = None,
    axis: int = 1,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    panels: Sequence[str] = ("fixed", "warped", "moving"),
    own_contours: bool = True,
    radiological: bool = True,
) -> Figure:
    """Fig. 2: one slice of the fixed, warped and moving images with organ contours.

    The contours of the fixed labels (solid) are drawn on every panel, as in the paper; with
    ``own_contours`` the moving / warped panels also show their own labels (dashed). The slice
    is along ``axis`` (1 = coronal for RAS+ volumes) at ``slice_index`` (default: the slice
    with the most fixed-label voxels). ``panels`` orders the panels (the paper: fixed left,
    warped in between, moving right). ``radiological`` puts the patient's right on the left.
    """
    imgs = {"fixed": as_volume(fixed_img), "moving": as_volume(moving_img), "warped": as_volume(warped_img)}
    fixed_lab = as_label_map(fixed_labels)
    own = {
        "fixed": None,
        "moving": as_label_map(moving_labels) if moving_labels is not None else None,
        "warped": as_label_map(warped_labels) if warped_labels is not None else None,
    }
    if set(panels) - set(imgs):
        raise ValueError(f"panels must be among {sorted(imgs)}, got {list(panels)}")
    idx = busiest_slice(fixed_lab, axis) if slice_index is None else int(slice_index)
    label_ids = sorted(int(v) for v in np.unique(fixed_lab) if v > 0)
    if organs is not None:
        label_ids = sorted(set(label_ids) | {int(k) for k in organs})
    organ_colours = dict(zip(label_ids, sns.color_palette("tab10", n_colors=max(len(label_ids), 1))))
    in_plane = [a for a in range(3) if a != axis]
    aspect = float(spacing[in_plane[1]]) / float(spacing[in_plane[0]])

    def cut(vol: np.ndarray) -> np.ndarray:
        return np.take(vol, idx, axis=axis).T  # rows: second in-plane axis, columns: first

    titles = {"fixed": "fixed", "moving": "moving (before)", "warped": "warped (after)"}
    fig = Figure(figsize=(3.2 * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, name in zip(axes, panels):
        img = cut(imgs[name])
        lo, hi = _window(img)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect,
                  interpolation="nearest")
        for lab, style in ((fixed_lab, "solid"), (own[name] if own_contours else None, "dashed")):
            if lab is None:
                continue
            sl = cut(lab)
            for k in label_ids:
                mask = (sl == k).astype(np.float64)
                if mask.any() and not mask.all():
                    ax.contour(mask, levels=[0.5], colors=[organ_colours[k]], linewidths=1.0,
                               linestyles=style)
        if radiological:
            ax.invert_xaxis()
        ax.set_title(titles[name], fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
    if organs:
        handles = [Line2D([], [], color=organ_colours[k], label=str(organs.get(k, k))) for k in label_ids]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False,
                   fontsize="small")
    if out_png is not None:
        save_figure(fig, out_png)
    return fig
