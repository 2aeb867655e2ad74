"""Learning curves of the trainers: FeatCNN pre-training, SUITS training, VoxelMorph-MIND.

Each trainer writes a curve TSV (``suits.validation.write_curve``): ``step``, ``loss`` (training
loss of the step), optional further columns such as ``val_loss``, ``val_dice`` (where validated)
and ``val_initial`` (the identity field's validation Dice). :func:`learning_curves_figure`
draws one panel per trainer: the losses against the step on the left axis, the validation Dice
on a second axis, with reference lines for the identity's validation Dice and the pre-trained
FeatCNN's (the SUITS curve at step 0, else the pre-training curve's last validation).
"""
from __future__ import annotations

import math
import os
from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure

from suitsbench.plots import save_figure

#: trainer key -> panel title, in panel order
TRAINERS = {
    "pretrain": "FeatCNN pre-training (MIND replication)",
    "suits": "SUITS training",
    "voxelmorph": "VoxelMorph-MIND",
}
REQUIRED = ("step", "loss", "val_dice", "val_initial")


def read_curve(path: str | os.PathLike) -> pd.DataFrame:
    """A curve TSV as a table (empty cells: NaN); a file without the curve columns is an error
    naming it."""
    df = pd.read_csv(path, sep="\t")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a learning-curve TSV (missing columns {missing}); "
                         "it is written by the training rules (suits.validation.write_curve)")
    return df


def _first(series: pd.Series) -> float:
    values = series.dropna()
    return float(values.iloc[0]) if len(values) else math.nan


def reference_dice(curves: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """``{"initial": ..., "pretrained": ...}``: the identity field's validation Dice (first
    non-empty ``val_initial`` of any curve) and the pre-trained FeatCNN's (the SUITS curve's
    step-0 ``val_dice``, else the pre-training curve's last one); NaN where unknown."""
    initial = next((v for df in curves.values() if not math.isnan(v := _first(df["val_initial"]))),
                   math.nan)
    pretrained = math.nan
    if "suits" in curves:
        at0 = curves["suits"].loc[curves["suits"]["step"] == 0, "val_dice"]
        pretrained = _first(at0)
    if math.isnan(pretrained) and "pretrain" in curves:
        vals = curves["pretrain"]["val_dice"].dropna()
        pretrained = float(vals.iloc[-1]) if len(vals) else math.nan
    return {"initial": initial, "pretrained": pretrained}


def learning_curves_figure(
    curves: Mapping[str, pd.DataFrame | str | os.PathLike],
    out_png: str | os.PathLike | None = None,
    out_pdf: str | os.PathLike | None = None,
    title: str | None = None,
    panel_size: tuple[float, float] = (4.6, 3.4),
) -> Figure:
    """One panel per trainer in ``curves`` (keys of :data:`TRAINERS`, tables or TSV paths):
    training loss (and validation loss where present) against the step, validation Dice on a
    second axis (one range for every panel) with the reference lines of
    :func:`reference_dice`. Writes ``out_png`` /
    ``out_pdf`` when given; returns the Figure."""
    unknown = [k for k in curves if k not in TRAINERS]
    if unknown or not curves:
        raise ValueError(f"curves: need one or more of {list(TRAINERS)}, got {list(curves)}")
    tables = {k: (v if isinstance(v, pd.DataFrame) else read_curve(v))
              for k, v in curves.items()}
    order = [k for k in TRAINERS if k in tables]
    ref = reference_dice(tables)
    dice = [v for df in tables.values() for v in df["val_dice"].dropna()]
    dice += [v for v in ref.values() if not math.isnan(v)]
    pad = 0.05 * max(max(dice) - min(dice), 0.1) if dice else 0.0

    fig = Figure(figsize=(panel_size[0] * len(order), panel_size[1]))
    handles: dict[str, object] = {}
    for n, key in enumerate(order):
        df = tables[key]
        ax = fig.add_subplot(1, len(order), n + 1)
        train = df.dropna(subset=["loss"])
        (h,) = ax.plot(train["step"], train["loss"], color="0.45", linewidth=0.8)
        handles.setdefault("training loss", h)
        if "val_loss" in df.columns and df["val_loss"].notna().any():
            val = df.dropna(subset=["val_loss"])
            (h,) = ax.plot(val["step"], val["val_loss"], color="tab:orange", marker="s",
                           markersize=3, linewidth=1.0)
            handles.setdefault("validation loss", h)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(TRAINERS[key], fontsize="medium")
        ax.grid(linewidth=0.4, alpha=0.5)
        if not df["val_dice"].notna().any():
            continue
        ax2 = ax.twinx()
        val = df.dropna(subset=["val_dice"])
        (h,) = ax2.plot(val["step"], val["val_dice"], color="tab:blue", marker="o",
                        markersize=3, linewidth=1.2)
        handles.setdefault("validation Dice", h)
        for name, label, style in (("initial", "validation Dice, identity", "--"),
                                   ("pretrained", "validation Dice, pre-trained FeatCNN", ":")):
            if not math.isnan(ref[name]):
                h = ax2.axhline(ref[name], color="tab:blue", linestyle=style, linewidth=1.0,
                                alpha=0.7)
                handles.setdefault(label, h)
        ax2.set_ylim(min(dice) - pad, max(dice) + pad)
        ax2.set_ylabel("validation Dice", color="tab:blue")
        ax2.tick_params(axis="y", colors="tab:blue")
    fig.legend(list(handles.values()), list(handles), loc="upper center",
               ncol=min(len(handles), 5), frameon=False, fontsize="small")
    if title:
        fig.suptitle(title, y=0.02, va="bottom", fontsize="small")
    fig.tight_layout(rect=(0, 0.04 if title else 0, 1, 0.9))
    for out in (out_png, out_pdf):
        if out is not None:
            save_figure(fig, out)
    return fig
