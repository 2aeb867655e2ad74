"""Tests for suitsbench.plots (Figs. 2-4)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from suitsbench import plots  # noqa: E402

ORGANS = {"liver": "liver", "spleen": "spleen", "l_psoas": "l pmm"}
PAPER = ["initial", "elastix", "voxelmorph", "mind_pretrained", "suits", "mind_ssc"]


def metrics_table(methods=PAPER, n_pairs=5, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {"method": m, "pair": f"p{p}", "organ": o, "dice": float(rng.uniform(0.2, 0.8)),
         "hd95": float(rng.uniform(10, 60))}
        for m in methods for p in range(n_pairs) for o in ORGANS
    ]
    return pd.DataFrame(rows)


def test_boxplot_data_mean_group():
    df = metrics_table(["suits"], n_pairs=2)
    data = plots.boxplot_data(df, "dice", {"suits": "SUITS"}, ORGANS)
    assert len(data) == 2 * 3 + 2
    means = data[data.group == "mean"]["value"].to_numpy()
    expected = df.groupby("pair")["dice"].mean().sort_index().to_numpy()
    np.testing.assert_allclose(means, expected)


@pytest.mark.parametrize("metric", ["dice", "hd95"])
def test_boxplot_files_order_and_determinism(tmp_path: Path, metric: str):
    df = metrics_table()
    shuffled = list(reversed(PAPER))  # the methods in the data in another order
    df = pd.concat([df[df.method == m] for m in shuffled], ignore_index=True)
    fig = plots.boxplot(df, metric, organs=ORGANS, out_png=tmp_path / "a.png", out_pdf=tmp_path / "a.pdf")
    plots.boxplot(df, metric, organs=ORGANS, out_png=tmp_path / "b.png", out_pdf=tmp_path / "b.pdf")
    for ext in ("png", "pdf"):
        a = (tmp_path / f"a.{ext}").read_bytes()
        b = (tmp_path / f"b.{ext}").read_bytes()
        assert len(a) > 1000
        assert a == b, ext
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF")
    img = mpimg.imread(tmp_path / "a.png")
    assert img.ndim == 3 and img.shape[0] > 100
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["liver", "spleen", "l pmm", "mean"]
    assert ax.get_ylabel() == plots.METRIC_LABELS[metric]
    legend_texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_texts == ["Initial", "SimpleElastix", "VoxelMorph", "pre-trained MIND", "SUITS (ours)", "MIND-SSC"]
    colours = [tuple(np.round(h.get_facecolor()[:3], 6)) for h in fig.legends[0].legend_handles]
    assert len(set(colours)) == len(PAPER)


@pytest.mark.parametrize("extra", [[], ["convexadam", "ants"], ["convexadam", "ants", "mine"]])
def test_boxplot_legend_lies_inside_the_figure(extra):
    """Six methods in one legend row; eight or nine in two rows, every entry inside the figure
    and above the axes, with its own colour."""
    methods = PAPER + extra
    fig = plots.boxplot(metrics_table(methods), "dice", organs=ORGANS)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    legend = fig.legends[0]
    box = legend.get_window_extent(renderer)
    frame = fig.bbox
    assert box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y1 <= frame.y1, (box, frame)
    assert box.y0 >= fig.axes[0].get_window_extent(renderer).y1 - 1
    assert len(legend.get_texts()) == len(methods)
    assert legend._ncols == (6 if len(methods) <= 6 else -(-len(methods) // 2))
    colours = {tuple(np.round(h.get_facecolor()[:3], 6)) for h in legend.legend_handles}
    assert len(colours) == len(methods)


def test_boxplot_colour_stable_across_subsets():
    full = plots.method_colours(PAPER)
    sub = plots.method_colours(["suits", "initial", "extra"])
    assert sub["suits"] == full["suits"] and sub["initial"] == full["initial"]
    assert sub["extra"] not in full.values()
    with pytest.raises(ValueError):
        plots.boxplot(metrics_table(), "asd")


def _phantom(shape=(24, 20, 22)):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    img = np.sin(i / 3.0) + np.cos(k / 4.0) + 0.1 * j
    lab = np.zeros(shape, np.uint8)
    lab[4:12, 6:14, 5:15] = 1
    lab[14:20, 8:12, 6:12] = 2
    return img.astype(np.float32), lab


def test_example_figure(tmp_path: Path):
    img, lab = _phantom()
    mov_lab = np.roll(lab, 2, axis=0)
    mov = np.roll(img, 2, axis=0)
    kwargs = dict(organs={1: "liver", 2: "spleen"}, spacing=(2.0, 2.0, 3.0))
    fig = plots.example_figure(
        torch.from_numpy(img)[None, None], mov, img, torch.from_numpy(lab)[None, None], mov_lab, lab,
        out_png=tmp_path / "a.png", **kwargs,
    )
    plots.example_figure(img, mov, img, lab, mov_lab, lab, out_png=tmp_path / "b.png", **kwargs)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert mpimg.imread(tmp_path / "a.png").shape[0] > 100
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["fixed", "warped (after)", "moving (before)"]
    # the coronal slice with most label voxels is chosen; images are shown as (k, i)
    assert plots.busiest_slice(lab, 1) in range(8, 12)
    assert fig.axes[0].images[0].get_array().shape == (22, 24)
    # aspect follows the spacing of the displayed axes (k: 3 mm vs i: 2 mm)
    assert fig.axes[0].get_aspect() == pytest.approx(1.5)
    # fixed contours (2 organs) on every panel, dashed own contours on moving and warped
    n_contours = [len([c for c in ax.collections if not isinstance(c, PathCollection)]) for ax in fig.axes]
    assert n_contours == [2, 4, 4]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["liver", "spleen"]
    plain = plots.example_figure(img, mov, img, lab, None, None, own_contours=True,
                                 panels=("fixed", "moving", "warped"))
    assert [len(ax.collections) for ax in plain.axes] == [2, 2, 2]
    with pytest.raises(ValueError):
        plots.example_figure(img, mov, img, lab, None, None, panels=("fixed", "other"))


# ----------------------------------------------------------------------------- learning curves


def _curves(tmp_path: Path, validated: bool = True) -> dict[str, Path]:
    """Curve TSVs as the trainers write them: pre-training (val_loss column), SUITS, VoxelMorph."""
    from suits.validation import write_curve

    initial = 0.4 if validated else None
    files = {k: tmp_path / f"{k}.tsv" for k in ("pretrain", "suits", "voxelmorph")}
    val = lambda pts: pts if validated else []  # noqa: E731
    write_curve(files["pretrain"], [1.0 / (s + 1) for s in range(10)],
                val([(0, 0.3), (5, 0.5), (10, 0.55)]), initial,
                columns={"val_loss": val([(0, 1.2), (5, 0.4), (10, 0.2)])})
    write_curve(files["suits"], [0.5 - 0.01 * s for s in range(6)],
                val([(0, 0.56), (3, 0.6), (6, 0.58)]), initial)
    write_curve(files["voxelmorph"], [0.02 - 0.001 * s for s in range(8)],
                val([(0, 0.4), (4, 0.45), (8, 0.47)]), initial,
                columns={"val_loss": val([(0, 0.03), (4, 0.02), (8, 0.015)])})
    return files


def test_reference_dice_from_the_curves(tmp_path: Path):
    from suitsbench.curves import read_curve, reference_dice

    tables = {k: read_curve(v) for k, v in _curves(tmp_path).items()}
    assert reference_dice(tables) == {"initial": pytest.approx(0.4),
                                      "pretrained": pytest.approx(0.56)}  # SUITS at step 0
    del tables["suits"]
    assert reference_dice(tables)["pretrained"] == pytest.approx(0.55)  # pre-training's last


def test_learning_curves_figure_files(tmp_path: Path):
    from suitsbench.curves import learning_curves_figure

    files = _curves(tmp_path)
    png, pdf = tmp_path / "lc.png", tmp_path / "lc.pdf"
    fig = learning_curves_figure(files, png, pdf)
    assert png.stat().st_size > 0 and pdf.read_bytes()[:4] == b"%PDF"
    # three panels, each with a loss axis and a Dice axis
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["FeatCNN pre-training (MIND replication)", "SUITS training",
                      "VoxelMorph-MIND"]
    dice_ax = fig.axes[3]  # SUITS's Dice axis: its curve and the two reference lines
    ys = sorted(float(line.get_ydata()[0]) for line in dice_ax.get_lines())
    assert ys == pytest.approx([0.4, 0.56, 0.56])
    img = mpimg.imread(png)
    assert img.shape[1] > 2 * img.shape[0]  # panels side by side
    first = png.read_bytes()
    learning_curves_figure(files, png)
    assert png.read_bytes() == first  # reproducible


def test_learning_curves_without_validation_and_bad_input(tmp_path: Path):
    from suitsbench.curves import learning_curves_figure

    files = _curves(tmp_path, validated=False)
    fig = learning_curves_figure({"voxelmorph": files["voxelmorph"]}, tmp_path / "v.png")
    assert len(fig.axes) == 1 and (tmp_path / "v.png").exists()  # losses only: no Dice axis
    bad = tmp_path / "bad.tsv"
    bad.write_text("step\tvalue\n0\t1\n")
    with pytest.raises(ValueError, match="bad.tsv: not a learning-curve"):
        learning_curves_figure({"suits": bad})
    with pytest.raises(ValueError, match="one or more"):
        learning_curves_figure({"elastix": files["suits"]})
