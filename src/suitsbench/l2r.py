"""Learn2Reg-style summary: the challenge's columns per method and its significance ranking.

Input: the long metrics table of ``suitsbench.evaluate`` (one row per method, pair and organ)
and the wall time of every registration job (seconds, from the Snakemake ``benchmark:``
files, :func:`pair_runtimes`).

Columns (per method; the organs of the table, NaN scores left out):

- ``dsc``, ``hd95_mm``, ``hd95_vox``: mean over all pair x organ scores;
- ``dsc30``: mean of the lowest 30 % of the method's pair x organ Dice scores; ``hd95_30_mm``,
  ``hd95_30_vox``: mean of the highest 30 % of its HD95 scores
  (``suitsbench.metrics.tail_mean``);
- ``sdlogj``: mean over pairs of Learn2Reg's SDlogJ (``suitsbench.metrics.sdlogj``);
  ``std_log_j``: mean over pairs of the plain std of log det J over voxels with det J > 0;
- ``nonpos_pct``, ``nonpos_count``: mean over pairs of the percentage / number of voxels
  with det J <= 0;
- ``runtime_s``: mean wall time of a registration job (one pair);
- ``score_<metric>``, ``rank_score``, ``rank``: the ranking below.

Ranking, as the challenge's ranking code does it (``ranking/ranking_utils.py`` and
``ranking/Ranking_AbdomenMRCT.ipynb`` of github.com/MDL-UzL/L2R):

1. Five metrics, each with its samples per method: DSC (all pair x organ Dice scores), DSC30
   (the Dice scores on the ``round(0.3 n)`` pair x organ cells where the reference method,
   ``initial``, scores lowest; without the reference in the table, each method's own lowest
   30 %), HD95 (all pair x organ scores, mm, lower is better), SDlogJ (one per pair, lower is
   better) and runtime (one per pair, lower is better).
2. Per metric, every ordered pair of methods ``(a, b)`` is compared with the two-sided
   Wilcoxon rank-sum test (``scipy.stats.ranksums``) of their samples; ``a`` beats ``b`` when
   ``p < 0.05`` and the statistic favours ``a``. A method without the metric (the identity
   ``initial`` has no deformation to measure and no registration to time) is beaten by every
   method.
3. A method's metric rank score: sort the methods by how many beat them, most first, give the
   sorted positions the scores ``linspace(0.1, 1, N)`` and let tied methods share the mean of
   their positions' scores (1 = beaten by none, best).
4. ``rank_score``: the geometric mean of the five metric rank scores; ``rank``: 1 for the
   highest, tied scores share the better rank.

Departures from the challenge code: NaN scores (a structure absent from both label maps) are
left out (the challenge sets a NaN Dice to 0 and a NaN HD95 to 10 voxels); HD95 is ranked in
mm (the challenge's grids are isotropic, where mm and voxels rank alike); ties in the DSC30
reference order are broken by pair and organ name. The challenge's ranking README names the
Wilcoxon signed-rank test; its code runs the rank-sum test, which is what is done here.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from suits.atomic import write_text
from suitsbench.metrics import tail_mean
from suitsbench.table import METHOD_NAMES, ORGAN_NAMES, display_names

#: fraction of the scores in the DSC30 / HD95_30 tails
TAIL = 0.3
#: significance level of the pairwise comparisons
ALPHA = 0.05
#: the method whose lowest Dice cells define the DSC30 samples of the ranking
REFERENCE = "initial"
#: methods with no field of their own: no SDlogJ, no registration run time to rank
NO_FIELD = ("initial",)
#: ranked metrics: name -> higher is better
RANKED: dict[str, bool] = {"dsc": True, "dsc30": True, "hd95": False, "sdlogj": False, "runtime": False}
COLUMNS = (
    "dsc", "dsc30", "hd95_mm", "hd95_30_mm", "hd95_vox", "hd95_30_vox", "sdlogj", "std_log_j",
    "nonpos_pct", "nonpos_count", "runtime_s", *(f"score_{m}" for m in RANKED), "rank_score", "rank",
)


def pair_runtimes(files_by_method: Mapping[str, Iterable[str | os.PathLike]]) -> dict[str, list[float]]:
    """Wall time in seconds of every registration job, per method (benchmark files, one a job;
    repetitions averaged; unreadable times left out)."""
    from suitsbench.runtime import job_summary

    out: dict[str, list[float]] = {}
    for method, files in files_by_method.items():
        secs = [job_summary(f)["s"] for f in sorted(str(f) for f in files)]
        out[method] = [s for s in secs if math.isfinite(s)]
    return out


def beaten_by(samples: Mapping[str, np.ndarray | None], higher_is_better: bool,
              alpha: float = ALPHA) -> dict[str, int]:
    """For every method, how many others beat it (two-sided rank-sum test, ``p < alpha``, the
    statistic in the other's favour). ``None`` or empty samples: beaten by every other method."""
    methods = list(samples)
    n = len(methods)
    have = {m: np.asarray(v, dtype=np.float64) for m, v in samples.items() if v is not None and len(v)}
    count = {m: 0 if m in have else n - 1 for m in methods}
    sign = 1.0 if higher_is_better else -1.0
    for a in have:
        for b in have:
            if a == b:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.ranksums(sign * have[a], sign * have[b])
            if res.statistic > 0 and res.pvalue < alpha:
                count[b] += 1
    return count


def rank_scores(beaten: Mapping[str, int]) -> dict[str, float]:
    """Metric rank scores in ``[0.1, 1]`` from the beaten-by counts: positions sorted by count
    (most beaten first) score ``linspace(0.1, 1, N)``; ties share the mean of their scores."""
    methods = list(beaten)
    scale = np.linspace(0.1, 1.0, len(methods))
    order = sorted(methods, key=lambda m: -beaten[m])
    pos_score = {m: scale[i] for i, m in enumerate(order)}
    out = {}
    for m in methods:
        tied = [k for k in methods if beaten[k] == beaten[m]]
        out[m] = float(np.mean([pos_score[k] for k in tied]))
    return out


def _values(df: pd.DataFrame, col: str) -> np.ndarray:
    v = df[col].to_numpy(dtype=np.float64) if col in df else np.array([], dtype=np.float64)
    return v[np.isfinite(v)]


def _per_pair(df: pd.DataFrame, col: str) -> np.ndarray:
    """One value per pair of a per-pair column repeated on every organ row."""
    if col not in df or df.empty:
        return np.array([], dtype=np.float64)
    v = df.groupby("pair", sort=True)[col].first().to_numpy(dtype=np.float64)
    return v[np.isfinite(v)]


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if v.size else float("nan")


def reference_cells(df: pd.DataFrame, reference: str, fraction: float = TAIL) -> list[tuple[str, str]]:
    """The ``(pair, organ)`` cells of the lowest ``round(fraction * n)`` Dice scores of
    ``reference`` (finite scores; ties by pair, then organ)."""
    ref = df[(df["method"] == reference) & np.isfinite(df["dice"].to_numpy(dtype=np.float64))]
    ref = ref.sort_values(["dice", "pair", "organ"], kind="mergesort")
    k = max(1, int(round(fraction * len(ref)))) if len(ref) else 0
    return list(zip(ref["pair"].iloc[:k], ref["organ"].iloc[:k]))


def make_l2r_table(
    metrics_df: pd.DataFrame,
    runtimes: Mapping[str, Sequence[float]],
    methods: Mapping[str, str] | Sequence[str] | None = None,
    organs: Mapping[str, str] | Sequence[str] | None = None,
    reference: str | None = REFERENCE,
    no_field: Iterable[str] = NO_FIELD,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """The Learn2Reg-style table: one row per method (display names), columns ``COLUMNS``.

    ``runtimes`` maps method keys to registration job times in seconds. ``df.attrs`` holds
    ``n_pairs``, ``dsc30_reference`` (the reference method's key, or None when each method's
    own tail was ranked) and ``alpha``.
    """
    meth = display_names(methods, METHOD_NAMES, metrics_df["method"].unique())
    org = display_names(organs, ORGAN_NAMES, metrics_df["organ"].unique())
    missing = [m for m in meth if m not in set(metrics_df["method"])]
    if missing:
        raise ValueError(f"no metrics for method(s) {missing}; run them or leave them out of `methods`")
    df = metrics_df[metrics_df["method"].isin(list(meth)) & metrics_df["organ"].isin(list(org))]
    df = df.sort_values(["method", "pair", "organ"], kind="mergesort").reset_index(drop=True)
    no_field = set(no_field)
    by_method = {m: df[df["method"] == m] for m in meth}

    table = pd.DataFrame(np.nan, index=pd.Index(list(meth.values()), name="method"), columns=list(COLUMNS))
    for m, name in meth.items():
        rows = by_method[m]
        dice, hd, hdv = _values(rows, "dice"), _values(rows, "hd95"), _values(rows, "hd95_vox")
        secs = np.asarray(runtimes.get(m, []), dtype=np.float64)
        table.loc[name, "dsc"] = _mean(dice)
        table.loc[name, "dsc30"] = tail_mean(dice, TAIL)
        table.loc[name, "hd95_mm"] = _mean(hd)
        table.loc[name, "hd95_30_mm"] = tail_mean(hd, TAIL, highest=True)
        table.loc[name, "hd95_vox"] = _mean(hdv)
        table.loc[name, "hd95_30_vox"] = tail_mean(hdv, TAIL, highest=True)
        table.loc[name, "sdlogj"] = _mean(_per_pair(rows, "jac_sdlogj"))
        table.loc[name, "std_log_j"] = _mean(_per_pair(rows, "jac_std_log"))
        table.loc[name, "nonpos_pct"] = 100.0 * _mean(_per_pair(rows, "jac_frac_nonpos"))
        table.loc[name, "nonpos_count"] = _mean(_per_pair(rows, "jac_n_nonpos"))
        table.loc[name, "runtime_s"] = _mean(secs[np.isfinite(secs)])

    use_ref = reference is not None and reference in meth
    cells = set(reference_cells(df, reference)) if use_ref else set()
    samples: dict[str, dict[str, np.ndarray | None]] = {k: {} for k in RANKED}
    for m, rows in by_method.items():
        samples["dsc"][m] = _values(rows, "dice")
        if use_ref:
            on_cells = rows[[c in cells for c in zip(rows["pair"], rows["organ"])]]
            samples["dsc30"][m] = _values(on_cells, "dice")
        else:
            d = np.sort(_values(rows, "dice"))
            samples["dsc30"][m] = d[: max(1, int(round(TAIL * d.size)))] if d.size else d
        samples["hd95"][m] = _values(rows, "hd95")
        has_field = m not in no_field
        samples["sdlogj"][m] = _per_pair(rows, "jac_sdlogj") if has_field else None
        secs = np.asarray(runtimes.get(m, []), dtype=np.float64)
        samples["runtime"][m] = secs[np.isfinite(secs)] if has_field else None

    scores = {k: rank_scores(beaten_by(samples[k], higher, alpha)) for k, higher in RANKED.items()}
    for m, name in meth.items():
        per_metric = [scores[k][m] for k in RANKED]
        for k in RANKED:
            table.loc[name, f"score_{k}"] = scores[k][m]
        table.loc[name, "rank_score"] = float(np.exp(np.mean(np.log(per_metric))))
    rs = table["rank_score"].round(12)
    table["rank"] = [1 + int((rs > v).sum()) for v in rs]
    table.attrs.update(
        {
            "n_pairs": {m: int(by_method[m]["pair"].nunique()) for m in meth},
            "dsc30_reference": reference if use_ref else None,
            "dsc30_reference_name": meth[reference] if use_ref else None,
            "alpha": alpha,
            "no_field": [meth[m] for m in meth if m in no_field],
        }
    )
    return table


# ----------------------------------------------------------------------------- formatting

#: markdown columns: header, table column, format
MD_COLUMNS = (
    ("DSC", "dsc", "{:.3f}"),
    ("DSC30", "dsc30", "{:.3f}"),
    ("HD95 mm", "hd95_mm", "{:.2f}"),
    ("HD95_30 mm", "hd95_30_mm", "{:.2f}"),
    ("HD95 vox", "hd95_vox", "{:.2f}"),
    ("SDlogJ", "sdlogj", "{:.4f}"),
    ("% det J <= 0", "nonpos_pct", "{:.3f}"),
    ("runtime s/pair", "runtime_s", "{:.2f}"),
    ("rank score", "rank_score", "{:.3f}"),
    ("rank", "rank", "{:.0f}"),
)


def _fmt(fmt: str, x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else fmt.format(x)


def caption(table: pd.DataFrame) -> str:
    """How the table was computed (deterministic)."""
    n = sorted(set(table.attrs.get("n_pairs", {}).values()))
    n_txt = ", ".join(str(v) for v in n) if n else "?"
    ref = table.attrs.get("dsc30_reference_name")
    ref_txt = (f"the Dice scores on the 30 % of pair x organ cells where {ref} scores lowest"
               if ref else "each method's lowest 30 % of Dice scores")
    no_field = table.attrs.get("no_field", [])
    nf_txt = (f" {', '.join(no_field)} has no field: it ranks last in SDlogJ and runtime."
              if no_field else "")
    return (
        f"Learn2Reg-style summary over {n_txt} registration pairs. DSC, HD95: mean over all pair x "
        "organ scores; DSC30: mean of the lowest 30 % of them; HD95_30: mean of the highest 30 %; "
        "HD95 in mm and in voxels. SDlogJ: the challenge's std of log(det J + 3), clipped to "
        "[1e-9, 1e9], on the grid without 2 voxels at each face, mean over pairs; % det J <= 0: "
        "folded voxels, mean over pairs; runtime: wall time of one registration job. Rank score: "
        "geometric mean of five metric rank scores in [0.1, 1] (DSC, DSC30, HD95, SDlogJ, runtime), "
        f"each from the number of methods significantly better (two-sided Wilcoxon rank-sum test, "
        f"p < {table.attrs.get('alpha', ALPHA)}); DSC30 ranks {ref_txt}.{nf_txt}"
    )


def to_markdown(table: pd.DataFrame) -> str:
    """Pipe table of the challenge's columns and the rank, followed by the caption."""
    header = ["method"] + [h for h, _, _ in MD_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, row in table.iterrows():
        cells = [_fmt(f, row[c]) for _, c, f in MD_COLUMNS]
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines) + "\n\n" + caption(table) + "\n"


def to_csv_text(table: pd.DataFrame) -> str:
    """Every column at full precision."""
    return table.to_csv(lineterminator="\n", na_rep="")


def write_l2r_table(table: pd.DataFrame, out_csv: str | os.PathLike, out_md: str | os.PathLike) -> None:
    """Write the table as CSV (full precision) and Markdown, atomically."""
    write_text(out_csv, to_csv_text(table))
    write_text(out_md, to_markdown(table))
