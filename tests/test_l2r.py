"""suitsbench.l2r: the Learn2Reg-style table (DSC30, HD95_30, SDlogJ, folding, runtime) and the
challenge's significance ranking, on hand-computed cases."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from suitsbench import l2r

ORGANS = ["liver", "spleen"]


def frame(values: dict[str, dict[tuple[str, str], float]],
          sdlogj: dict[str, float] | None = None) -> pd.DataFrame:
    """Long metrics rows from ``{method: {(pair, organ): dice}}``; HD95 = 10 * (1 - dice) mm on
    a 2 mm grid, the Jacobian columns per method."""
    rows = []
    for m, cells in values.items():
        for (pair, organ), d in cells.items():
            rows.append({"method": m, "pair": pair, "organ": organ, "dice": d, "hd95": 10 * (1 - d),
                         "hd95_vox": 5 * (1 - d), "jac_frac_nonpos": 0.001 if m == "b" else 0.0,
                         "jac_n_nonpos": 8 if m == "b" else 0, "jac_std_log": 0.2,
                         "jac_sdlogj": (sdlogj or {}).get(m, 0.05)})
    return pd.DataFrame(rows)


def test_beaten_by_and_rank_scores_hand_computed():
    rng = np.random.default_rng(0)
    good, poor = 0.8 + 0.01 * rng.random(6), 0.3 + 0.01 * rng.random(6)
    samples = {"a": good, "b": poor, "c": poor + 0.001}
    # a beats b and c (rank-sum p = 0.0039); b and c overlap: no winner
    assert l2r.beaten_by(samples, higher_is_better=True) == {"a": 0, "b": 1, "c": 1}
    assert l2r.beaten_by(samples, higher_is_better=False) == {"a": 2, "b": 0, "c": 0}
    # linspace(0.1, 1, 3) = 0.1, 0.55, 1; b and c share the two lowest
    assert l2r.rank_scores({"a": 0, "b": 1, "c": 1}) == pytest.approx({"a": 1.0, "b": 0.325, "c": 0.325})
    assert l2r.rank_scores({"a": 2, "b": 0, "c": 1}) == pytest.approx({"a": 0.1, "b": 1.0, "c": 0.55})
    # a method without the metric is beaten by every other method
    assert l2r.beaten_by({"a": good, "b": None, "c": poor}, True) == {"a": 0, "b": 2, "c": 1}
    # too few samples for p < 0.05: no method beats another
    assert l2r.beaten_by({"a": good[:2], "b": poor[:2]}, True) == {"a": 0, "b": 0}


def _cells(scores):
    pairs = [f"m{k}__to__f{k}" for k in range(len(scores) // 2)]
    keys = [(p, o) for p in pairs for o in ORGANS]
    return dict(zip(keys, scores))


def test_table_columns_hand_computed():
    # 10 pair x organ cells per method: DSC30 / HD95_30 average 3 of them
    init = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 0.95]
    a = [0.90, 0.05, 0.85, 0.80, 0.75, 0.70, 0.65, 0.60, 0.55, 0.50]
    b = list(reversed(init))
    df = frame({"initial": _cells(init), "a": _cells(a), "b": _cells(b)}, sdlogj={"a": 0.04, "b": 0.09})
    runtimes = {"initial": [0.5] * 5, "a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [10.0] * 5}
    tab = l2r.make_l2r_table(df, runtimes, methods={"initial": "Initial", "a": "A", "b": "B"}, organs=ORGANS)
    assert list(tab.index) == ["Initial", "A", "B"]
    assert list(tab.columns) == list(l2r.COLUMNS)
    assert tab.loc["A", "dsc"] == pytest.approx(np.mean(a))
    assert tab.loc["A", "dsc30"] == pytest.approx((0.05 + 0.50 + 0.55) / 3)
    assert tab.loc["A", "hd95_mm"] == pytest.approx(10 * (1 - np.mean(a)))
    assert tab.loc["A", "hd95_30_mm"] == pytest.approx(10 * (1 - (0.05 + 0.50 + 0.55) / 3))
    assert tab.loc["A", "hd95_30_vox"] == pytest.approx(tab.loc["A", "hd95_30_mm"] / 2)
    assert tab.loc["A", "sdlogj"] == pytest.approx(0.04)
    assert tab.loc["B", "nonpos_pct"] == pytest.approx(0.1) and tab.loc["B", "nonpos_count"] == 8
    assert tab.loc["A", "runtime_s"] == pytest.approx(3.0)
    # DSC30 ranking samples: the 3 cells where Initial is lowest (its first three)
    cells = l2r.reference_cells(df, "initial")
    assert cells == list(_cells(init))[:3]
    # Initial has no field: it ranks last in SDlogJ and runtime
    assert tab.loc["Initial", "score_sdlogj"] == pytest.approx(0.1)
    assert tab.loc["Initial", "score_runtime"] == pytest.approx(0.1)
    # SDlogJ 0.04 on every pair of A against 0.09 on every pair of B: A beats B
    assert (tab.loc["A", "score_sdlogj"], tab.loc["B", "score_sdlogj"]) == (1.0, 0.55)
    for name in tab.index:
        per_metric = [tab.loc[name, f"score_{k}"] for k in l2r.RANKED]
        assert tab.loc[name, "rank_score"] == pytest.approx(np.prod(per_metric) ** (1 / 5))
    # DSC and HD95: no significant difference (all 0.55). DSC30, on Initial's three hardest cells
    # (0.1, 0.2, 0.3): B (0.95, 0.9, 0.8) beats Initial, A (0.9, 0.05, 0.85) does not: A and B
    # share the top two scores, (0.55 + 1) / 2
    assert tab.loc["A", "score_dsc30"] == tab.loc["B", "score_dsc30"] == pytest.approx(0.775)
    assert list(tab["rank"]) == [3, 1, 2]
    assert "Initial has no field" in l2r.caption(tab)
    assert tab.attrs["dsc30_reference"] == "initial"


def test_ranking_of_a_clear_winner():
    rng = np.random.default_rng(3)
    n = 16  # 8 pairs x 2 organs
    df = frame({"initial": _cells(0.3 + 0.05 * rng.random(n)),
                "good": _cells(0.8 + 0.05 * rng.random(n)),
                "fair": _cells(0.5 + 0.05 * rng.random(n))})
    runtimes = {"good": list(1 + rng.random(8)), "fair": list(5 + rng.random(8)), "initial": [0.1] * 8}
    tab = l2r.make_l2r_table(df, runtimes, organs=ORGANS)
    assert tab.loc["good", "score_dsc"] == 1.0 and tab.loc["fair", "score_dsc"] == 0.55
    assert tab.loc["Initial", "score_dsc"] == pytest.approx(0.1)
    assert tab.loc["good", "score_runtime"] == 1.0  # significantly faster than fair
    assert list(tab.sort_values("rank").index) == ["good", "fair", "Initial"]
    # without the reference method each method's own lowest 30 % is ranked
    tab2 = l2r.make_l2r_table(df[df.method != "initial"], runtimes, organs=ORGANS)
    assert tab2.attrs["dsc30_reference"] is None
    assert "each method's lowest 30 %" in l2r.caption(tab2)


def test_writers_and_runtimes(tmp_path: Path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = []
    for k, s in enumerate([2.0, 4.0]):
        f = tmp_path / "bench" / f"p{k}.tsv"
        f.parent.mkdir(exist_ok=True)
        f.write_text(header + f"{s}\t0:00:0{int(s)}\t100\t1\t1\t1\t0\t0\t50\t{s}\n")
        files.append(f)
    assert l2r.pair_runtimes({"a": files}) == {"a": [2.0, 4.0]}
    df = frame({"initial": _cells([0.2, 0.3, 0.4, 0.5]), "a": _cells([0.6, 0.7, 0.8, 0.9])})
    tab = l2r.make_l2r_table(df, {"a": [2.0, 4.0]}, organs=ORGANS)
    l2r.write_l2r_table(tab, tmp_path / "t.csv", tmp_path / "t.md")
    md = (tmp_path / "t.md").read_text()
    assert md.splitlines()[0] == ("| method | DSC | DSC30 | HD95 mm | HD95_30 mm | HD95 vox | SDlogJ | "
                                  "% det J <= 0 | runtime s/pair | rank score | rank |")
    assert "| Initial | 0.350 |" in md and "Learn2Reg-style summary over 2 registration pairs" in md
    csv = pd.read_csv(tmp_path / "t.csv", index_col=0)
    assert csv.loc["Initial", "dsc"] == pytest.approx(0.35)
    assert math.isnan(csv.loc["Initial", "runtime_s"])
    with pytest.raises(ValueError, match="no metrics"):
        l2r.make_l2r_table(df, {}, methods=["a", "suits"], organs=ORGANS)
