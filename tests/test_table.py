"""Tests for suitsbench.table (Table 2)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from suitsbench import table as t2

METHODS = {"initial": "Initial", "elastix": "SimpleElastix", "suits": "SUITS (ours)"}
ORGANS = {"liver": "liver", "spleen": "spleen", "l_psoas": "l pmm"}


def synthetic(n_pairs: int = 7, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    offsets = {"initial": 0.0, "elastix": 0.05, "suits": 0.1}
    for m, off in offsets.items():
        for p in range(n_pairs):
            for o in ORGANS:
                rows.append(
                    {
                        "method": m,
                        "pair": f"ct{p}__to__mr{p}",
                        "organ": o,
                        "dice": float(np.clip(0.4 + off + 0.1 * rng.normal(), 0, 1)),
                        "hd95": float(30 - 20 * off + 5 * rng.normal()),
                    }
                )
    # a distractor organ and method that must not influence the table
    rows.append({"method": "suits", "pair": "ct0__to__mr0", "organ": "r_kidney", "dice": 0.0, "hd95": 999.0})
    rows.append({"method": "other", "pair": "ct0__to__mr0", "organ": "liver", "dice": 0.0, "hd95": 999.0})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def pair_vector(df: pd.DataFrame, method: str, metric: str) -> np.ndarray:
    sub = df[(df.method == method) & df.organ.isin(list(ORGANS))]
    return sub.groupby("pair")[metric].mean().sort_index().to_numpy()


def test_layout_and_order():
    tab = t2.make_table2(synthetic(), METHODS, ORGANS)
    assert tab.shape == (3, 12)
    assert list(tab.index) == list(METHODS.values())
    groups = list(dict.fromkeys(g for g, _ in tab.columns))
    assert groups == ["liver", "spleen", "l pmm", "mean", "std", "p-val"]
    assert [m for _, m in tab.columns][:2] == ["Dice", "HD95"]
    # sequence of keys -> default display names in the given order
    tab2 = t2.make_table2(synthetic(), ["suits", "initial", "elastix"], ["l_psoas", "liver", "spleen"])
    assert list(tab2.index) == ["SUITS (ours)", "Initial", "SimpleElastix"]
    assert list(dict.fromkeys(g for g, _ in tab2.columns))[:3] == ["l pmm", "liver", "spleen"]


def test_values_and_pvalues_match_scipy():
    df = synthetic()
    df.loc[(df.method == "elastix") & (df.pair == "ct2__to__mr2") & (df.organ == "spleen"), "dice"] = np.nan
    tab = t2.make_table2(df, METHODS, ORGANS)
    sub = df[(df.method == "elastix") & (df.organ == "liver")]
    assert tab.loc["SimpleElastix", ("liver", "Dice")] == pytest.approx(sub.dice.mean())
    for metric, col in (("dice", "Dice"), ("hd95", "HD95")):
        ref = pair_vector(df, "suits", metric)
        for m, name in (("initial", "Initial"), ("elastix", "SimpleElastix")):
            other = pair_vector(df, m, metric)
            assert tab.loc[name, ("p-val", col)] == pytest.approx(stats.wilcoxon(ref, other).pvalue, rel=1e-12)
        assert tab.loc["SimpleElastix", ("mean", col)] == pytest.approx(pair_vector(df, "elastix", metric).mean())
        assert math.isnan(tab.loc["SUITS (ours)", ("p-val", col)])
    all_vals = df[(df.method == "suits") & df.organ.isin(list(ORGANS))].hd95
    assert tab.loc["SUITS (ours)", ("std", "HD95")] == pytest.approx(all_vals.std(ddof=1))
    tab_p = t2.make_table2(df, METHODS, ORGANS, std_over="pairs")
    assert tab_p.loc["SUITS (ours)", ("std", "HD95")] == pytest.approx(pair_vector(df, "suits", "hd95").std(ddof=1))


def test_rank_sum_option():
    df = synthetic()
    tab = t2.make_table2(df, METHODS, ORGANS, test="rank-sum")
    ref, other = pair_vector(df, "suits", "dice"), pair_vector(df, "initial", "dice")
    assert tab.loc["Initial", ("p-val", "Dice")] == pytest.approx(stats.ranksums(ref, other).pvalue, rel=1e-12)
    with pytest.raises(ValueError):
        t2.make_table2(df, METHODS, ORGANS, test="t-test")


def test_few_pairs_and_errors():
    tab = t2.make_table2(synthetic(n_pairs=3), METHODS, ORGANS)
    p = tab.loc["Initial", ("p-val", "Dice")]
    assert 0 < p <= 1  # still computed
    assert any("only 3 pairs" in n for n in tab.attrs["notes"])
    assert math.isnan(t2.compare(np.array([np.nan, 1.0]), np.array([1.0, np.nan])))
    assert t2.compare(np.ones(4), np.ones(4)) == 1.0
    with pytest.raises(ValueError, match="no metrics"):
        t2.make_table2(synthetic(), {**METHODS, "voxelmorph": "VoxelMorph"}, ORGANS)
    with pytest.raises(ValueError, match="reference"):
        t2.make_table2(synthetic(), {"initial": "Initial"}, ORGANS)
    no_p = t2.make_table2(synthetic(), METHODS, ORGANS, reference=None)
    assert "p-val" not in {g for g, _ in no_p.columns}


def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(t2.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    got = t2.holm([0.01, np.nan, 0.04])  # NaN stays NaN and does not count: m = 2
    np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04])
    assert math.isnan(got[1])
    np.testing.assert_allclose(t2.holm([0.6, 0.7]), [1.0, 1.0])  # capped at 1
    assert t2.holm([]).size == 0


def test_holm_correction_of_table2():
    df = synthetic()
    raw = t2.make_table2(df, METHODS, ORGANS)
    default = t2.make_table2(df, METHODS, ORGANS, correction="none")
    assert t2.to_markdown(raw) == t2.to_markdown(default) and "Holm" not in t2.to_markdown(raw)
    tab = t2.make_table2(df, METHODS, ORGANS, correction="holm")
    for col in ("Dice", "HD95"):
        p_init, p_el = raw.loc["Initial", ("p-val", col)], raw.loc["SimpleElastix", ("p-val", col)]
        lo, hi = sorted([p_init, p_el])
        want = {lo: min(1.0, 2 * lo), hi: min(1.0, max(2 * lo, hi))}
        assert tab.loc["Initial", ("p-val", col)] == pytest.approx(want[p_init], rel=1e-12)
        assert tab.loc["SimpleElastix", ("p-val", col)] == pytest.approx(want[p_el], rel=1e-12)
        assert math.isnan(tab.loc["SUITS (ours)", ("p-val", col)])
    # everything but the p-values is unchanged
    other = [c for c in tab.columns if c[0] != "p-val"]
    pd.testing.assert_frame_equal(tab[other], raw[other])
    assert "Holm-corrected for the 2 methods compared" in t2.caption(tab)
    with pytest.raises(ValueError, match="correction"):
        t2.make_table2(df, METHODS, ORGANS, correction="bonferroni")


def test_formats():
    assert t2.fmt_dice(0.4712) == ".47"
    assert t2.fmt_dice(1.0) == "1.00"
    assert t2.fmt_hd(36.44) == "36.4"
    assert t2.fmt_p(1.26e-5) == "1.3e-05"
    assert t2.fmt_p(0.5, is_reference=True) == "-"
    assert t2.fmt_p_tex(1.26e-5) == r"$1.3 \cdot 10^{-5}$"
    assert t2.tex_escape("l_psoas & 5%") == r"l\_psoas \& 5\%"


def test_writers_deterministic(tmp_path: Path):
    df = synthetic()
    tab = t2.make_table2(df, METHODS, ORGANS)
    a = [tmp_path / "a" / f"table2.{e}" for e in ("csv", "md", "tex")]
    b = [tmp_path / "b" / f"table2.{e}" for e in ("csv", "md", "tex")]
    t2.write_table2(tab, *a)
    t2.write_table2(t2.make_table2(df.sample(frac=1.0, random_state=5), METHODS, ORGANS), *b)
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), x.name
    csv = pd.read_csv(a[0], index_col=0)
    assert list(csv.index) == list(METHODS.values())
    assert csv.loc["Initial", "liver Dice"] == tab.loc["Initial", ("liver", "Dice")]  # full precision
    assert math.isnan(csv.loc["SUITS (ours)", "p-val Dice"])
    md = a[1].read_text()
    assert md.splitlines()[0].startswith("| method | liver Dice | liver HD95 |")
    suits_line = next(line for line in md.splitlines() if line.startswith("| SUITS (ours) |"))
    assert suits_line.rstrip(" |").endswith("| - | -")
    assert t2.fmt_dice(tab.loc["Initial", ("liver", "Dice")]) in md
    assert "signed-rank" in md
    tex = a[2].read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\multicolumn{2}{c}{l pmm}" in tex
    assert tex.count("\\\\") == 2 + 3


# ----------------------------------------------------------------------------- runtime table
# (suitsbench.runtime renders runtime.{csv,md}, the companion table of Table 2)

BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path: Path, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(BENCH_HEADER + "".join(r + "\n" for r in rows))
    return path


def test_runtime_table(tmp_path: Path):
    from suitsbench import runtime

    suits = [
        _bench(tmp_path / "suits" / "p1.tsv", ["2.0\t0:00:02\t100.5\t200\t90\t95\t0.1\t0.2\t50.0\t1.5",
                                               "4.0\t0:00:04\t120.0\t200\t90\t95\t0.1\t0.2\t50.0\t3.5"]),
        _bench(tmp_path / "suits" / "p2.tsv", ["6.0\t0:00:06\t80.0\t-\t-\t-\t-\t-\t-\t-"]),
        _bench(tmp_path / "suits" / "p3.tsv", ["10.0\t0:00:10\t90.0\t1\t1\t1\t0\t0\t10\t9.0"]),
    ]
    elastix = [_bench(tmp_path / "el" / "p1.tsv", ["120.0\t0:02:00\t300.0\t1\t1\t1\t0\t0\t99\t118.0"])]
    tab = runtime.runtime_table({"suits": reversed(suits), "elastix": elastix},
                                names={"suits": "SUITS (ours)"})
    assert list(tab.index) == ["SUITS (ours)", "elastix"]
    r = tab.loc["SUITS (ours)"]
    assert r["jobs"] == 3
    assert r["mean_s"] == pytest.approx((3.0 + 6.0 + 10.0) / 3)  # repetitions averaged per job
    assert r["median_s"] == pytest.approx(6.0)
    assert r["total_s"] == pytest.approx(19.0)
    assert r["max_rss_mb"] == pytest.approx(120.0)
    assert r["mean_cpu_time_s"] == pytest.approx((2.5 + 9.0) / 2)  # '-' is missing, not zero
    runtime.write_runtime(tab, tmp_path / "a.csv", tmp_path / "a.md")
    tab2 = runtime.runtime_table({"suits": suits, "elastix": elastix}, names={"suits": "SUITS (ours)"})
    runtime.write_runtime(tab2, tmp_path / "b.csv", tmp_path / "b.md")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    md = (tmp_path / "a.md").read_text()
    assert "| SUITS (ours) | 3 | 6.33 | 6.00 | 19.0 | 5.75 | 120 |" in md


def test_runtime_rejects_non_benchmark(tmp_path: Path):
    from suitsbench import runtime

    bad = tmp_path / "x.tsv"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark"):
        runtime.read_benchmark(bad)
