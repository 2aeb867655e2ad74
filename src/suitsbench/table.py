"""Table 2 of the paper: mean Dice and HD95 per organ, mean, std and p-values per method.

Input is the long metrics table written by ``suitsbench.evaluate`` (one row per method, pair
and organ with columns ``method, pair, organ, dice, hd95``).

- per organ: mean over pairs (NaN values, e.g. a structure absent from both label maps, are
  skipped);
- ``mean``: mean over pairs of the per-pair mean over the listed organs;
- ``std``: ``std_over="all"`` (default) the sample standard deviation (ddof=1) over all
  pair x organ values, which matches the magnitude of the paper's std column (HD95 std 27 mm
  with organ means from 16 to 61 mm); ``std_over="pairs"`` the std of the per-pair means;
- ``p-val``: the reference method (SUITS) against each other method over the per-pair
  mean-organ scores of the pairs both have, two-sided; ``test="signed-rank"`` (default,
  paired: ``scipy.stats.wilcoxon``) or ``test="rank-sum"`` (``scipy.stats.ranksums``). The
  reference row holds NaN (rendered ``-``). ``correction="holm"`` adjusts the p-values of each
  metric for the number of methods compared (Holm's step-down method, :func:`holm`);
  ``"none"`` (default) reports them unadjusted.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from suits.atomic import write_text
from suitsbench.names import METHOD_NAMES, ORGAN_NAMES

METRICS: dict[str, str] = {"dice": "Dice", "hd95": "HD95"}
Test = Literal["signed-rank", "rank-sum"]
Correction = Literal["none", "holm"]
#: below this many pairs a two-sided exact signed-rank test cannot reach p < 0.05
MIN_PAIRS_SIGNIFICANT = 6


def display_names(
    keys: Mapping[str, str] | Sequence[str] | None,
    defaults: Mapping[str, str],
    present: Iterable[str] = (),
) -> dict[str, str]:
    """Ordered ``{key: display name}``.

    A mapping is taken as is; a sequence of keys gets display names from ``defaults`` (the key
    itself when unknown); ``None`` takes the keys of ``defaults`` that are in ``present``, in
    ``defaults`` order, then the other ``present`` keys sorted.
    """
    if isinstance(keys, Mapping):
        return {str(k): str(v) for k, v in keys.items()}
    if keys is not None:
        return {str(k): defaults.get(k, str(k)) for k in keys}
    present = list(dict.fromkeys(present))
    ordered = [k for k in defaults if k in present] + sorted(k for k in present if k not in defaults)
    return {k: defaults.get(k, k) for k in ordered}


def per_pair_means(metrics_df: pd.DataFrame, organs: Sequence[str], metric: str) -> pd.DataFrame:
    """``(pair x method)`` table of the per-pair mean over ``organs`` of ``metric`` (NaN skipped)."""
    sub = metrics_df[metrics_df["organ"].isin(list(organs))]
    means = sub.groupby(["method", "pair"], sort=True)[metric].mean()
    return means.unstack("method")


def compare(ref: np.ndarray, other: np.ndarray, test: Test = "signed-rank") -> float:
    """Two-sided p-value of ``ref`` vs ``other`` (paired vectors, NaN pairs dropped).

    NaN when no complete pair remains. With all differences zero the signed-rank test gives 1.
    """
    ref = np.asarray(ref, dtype=np.float64)
    other = np.asarray(other, dtype=np.float64)
    ok = np.isfinite(ref) & np.isfinite(other)
    ref, other = ref[ok], other[ok]
    if ref.size == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "signed-rank":
            if np.all(ref == other):
                return 1.0
            return float(stats.wilcoxon(ref, other, alternative="two-sided").pvalue)
        if test == "rank-sum":
            return float(stats.ranksums(ref, other, alternative="two-sided").pvalue)
    raise ValueError(f"test must be 'signed-rank' or 'rank-sum', got {test!r}")


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    With the ``m`` finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted
    ``p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))``; NaN entries stay NaN and do not count
    in ``m``. Rejecting where ``p~ < alpha`` controls the family-wise error rate at ``alpha``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    order = ok[np.argsort(p[ok], kind="mergesort")]
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def make_table2(
    metrics_df: pd.DataFrame,
    methods: Mapping[str, str] | Sequence[str] | None = None,
    organs: Mapping[str, str] | Sequence[str] | None = None,
    reference: str | None = "suits",
    test: Test = "signed-rank",
    std_over: Literal["all", "pairs"] = "all",
    correction: Correction = "none",
) -> pd.DataFrame:
    """Table 2 as a DataFrame.

    Rows: methods (display names, in the given order). Columns: a ``(group, metric)``
    MultiIndex with groups the organ display names, ``mean``, ``std`` and (unless
    ``reference`` is None) ``p-val``; metrics ``Dice`` and ``HD95``. ``df.attrs`` holds
    ``n_pairs`` (per method), ``test``, ``reference``, ``std_over``, ``correction``,
    ``n_compared`` (p-values per metric that entered the correction) and ``notes``.
    """
    if test not in ("signed-rank", "rank-sum"):
        raise ValueError(f"test must be 'signed-rank' or 'rank-sum', got {test!r}")
    if std_over not in ("all", "pairs"):
        raise ValueError(f"std_over must be 'all' or 'pairs', got {std_over!r}")
    if correction not in ("none", "holm"):
        raise ValueError(f"correction must be 'none' or 'holm', got {correction!r}")
    meth = display_names(methods, METHOD_NAMES, metrics_df["method"].unique())
    org = display_names(organs, ORGAN_NAMES, metrics_df["organ"].unique())
    missing = [m for m in meth if m not in set(metrics_df["method"])]
    if missing:
        raise ValueError(f"no metrics for method(s) {missing}; run them or leave them out of `methods`")
    if reference is not None and reference not in meth:
        raise ValueError(f"reference method {reference!r} is not among methods {list(meth)}")

    groups = list(org.values()) + ["mean", "std"] + (["p-val"] if reference is not None else [])
    columns = pd.MultiIndex.from_product([groups, list(METRICS.values())], names=["group", "metric"])
    table = pd.DataFrame(np.nan, index=pd.Index(list(meth.values()), name="method"), columns=columns)
    df = metrics_df[metrics_df["method"].isin(list(meth)) & metrics_df["organ"].isin(list(org))]
    # a canonical row order makes every float sum, and so the output bytes, independent of input order
    df = df.sort_values(["method", "pair", "organ"], kind="mergesort").reset_index(drop=True)
    notes: list[str] = []
    n_pairs: dict[str, int] = {}

    for key, col in METRICS.items():
        pair_means = per_pair_means(df, list(org), key).reindex(columns=list(meth))
        for m, mname in meth.items():
            rows = df[df["method"] == m]
            for o, oname in org.items():
                table.loc[mname, (oname, col)] = rows.loc[rows["organ"] == o, key].mean()
            pm = pair_means[m]
            table.loc[mname, ("mean", col)] = pm.mean()
            values = rows[key] if std_over == "all" else pm
            table.loc[mname, ("std", col)] = values.std(ddof=1)
            n_pairs[m] = int(rows["pair"].nunique())
            if reference is not None and m != reference:
                both = pair_means[[reference, m]].dropna()
                table.loc[mname, ("p-val", col)] = compare(both[reference].to_numpy(), both[m].to_numpy(), test)
                if len(both) == 0:
                    notes.append(f"{col}: no pair shared by {reference} and {m}; p-value NaN")
                elif len(both) < MIN_PAIRS_SIGNIFICANT and test == "signed-rank":
                    note = (
                        f"only {len(both)} pairs: a two-sided signed-rank test cannot reach p < 0.05 "
                        f"with fewer than {MIN_PAIRS_SIGNIFICANT}"
                    )
                    if note not in notes:
                        notes.append(note)

    n_compared = 0
    if reference is not None:
        for col in METRICS.values():
            raw = table[("p-val", col)].to_numpy(dtype=np.float64)
            n_compared = max(n_compared, int(np.isfinite(raw).sum()))
            if correction == "holm":
                table[("p-val", col)] = holm(raw)

    table.attrs.update(
        {
            "n_pairs": n_pairs,
            "test": test,
            "reference": reference,
            "reference_name": meth[reference] if reference is not None else None,
            "std_over": std_over,
            "correction": correction,
            "n_compared": n_compared,
            "notes": notes,
        }
    )
    return table


# ----------------------------------------------------------------------------- formatting


def fmt_dice(x: float) -> str:
    """Dice in the paper's style: two decimals without the leading zero (``.47``)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    s = f"{x:.2f}"
    if s.startswith("0."):
        return s[1:]
    if s.startswith("-0."):
        return "-" + s[2:]
    return s


def fmt_hd(x: float) -> str:
    """HD95 (mm) with one decimal."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f}"


def fmt_p(x: float, is_reference: bool = False) -> str:
    """p-value in scientific notation (``1.3e-05``); ``-`` for the reference method."""
    if is_reference:
        return "-"
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1e}"


def fmt_p_tex(x: float, is_reference: bool = False) -> str:
    """p-value as in the paper: ``$1.3 \\cdot 10^{-5}$``."""
    s = fmt_p(x, is_reference)
    if s in ("-", "n/a"):
        return s
    mant, exp = s.split("e")
    return f"${mant} \\cdot 10^{{{int(exp)}}}$"


def formatted_cells(table: pd.DataFrame, p_formatter=fmt_p) -> list[list[str]]:
    """Cell strings row by row (without the method name), paper formatting per column."""
    ref_name = table.attrs.get("reference_name")
    rows = []
    for name, row in table.iterrows():
        is_ref = ref_name is not None and name == ref_name
        cells = []
        for (group, metric), value in row.items():
            if group == "p-val":
                cells.append(p_formatter(value, is_ref))
            elif metric == "Dice":
                cells.append(fmt_dice(value))
            else:
                cells.append(fmt_hd(value))
        rows.append(cells)
    return rows


def caption(table: pd.DataFrame) -> str:
    """One-paragraph description of how the table was computed (deterministic), ending with
    ``attrs["qc"]`` when set (the affine QC's line, :func:`suitsbench.qctable.table_note`)."""
    n = sorted(set(table.attrs.get("n_pairs", {}).values()))
    n_txt = ", ".join(str(v) for v in n) if n else "?"
    std_txt = "all pair x organ values" if table.attrs.get("std_over", "all") == "all" else "per-pair means"
    parts = [
        f"Mean Dice and HD95 (mm) over {n_txt} registration pairs; mean: mean over pairs of the "
        f"per-pair mean over organs; std: sample std over {std_txt}."
    ]
    ref = table.attrs.get("reference")
    if ref is not None:
        test = table.attrs.get("test", "signed-rank")
        name = "Wilcoxon signed-rank" if test == "signed-rank" else "Wilcoxon rank-sum"
        parts.append(
            f"p-val: two-sided {name} test of {table.attrs.get('reference_name', ref)} against each method "
            "over the per-pair mean-organ scores."
        )
        if table.attrs.get("correction", "none") == "holm":
            parts.append(
                f"p-values Holm-corrected for the {table.attrs.get('n_compared', '?')} methods compared, "
                "per metric."
            )
    parts.extend(f"Note: {n}." for n in table.attrs.get("notes", []))
    if table.attrs.get("qc"):
        parts.append(f"{table.attrs['qc']}.")
    return " ".join(parts)


def to_csv_text(table: pd.DataFrame) -> str:
    """Machine-readable CSV: one header row ``method,<group> <metric>,...``, full precision."""
    flat = table.copy()
    flat.columns = [f"{g} {m}" for g, m in table.columns]
    return flat.to_csv(lineterminator="\n", float_format=None, na_rep="")


def to_markdown(table: pd.DataFrame) -> str:
    """Pipe table with the paper's number formats, followed by the caption."""
    header = ["method"] + [f"{g} {m}" for g, m in table.columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for name, cells in zip(table.index, formatted_cells(table)):
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines) + "\n\n" + caption(table) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters."""
    return "".join(_TEX_ESCAPES.get(c, c) for c in str(text))


def to_latex(table: pd.DataFrame) -> str:
    """booktabs ``tabular`` with two header rows (group, metric), as in the paper."""
    groups = list(dict.fromkeys(g for g, _ in table.columns))
    per_group = len(METRICS)
    spec = "l" + "".join(" " + "r" * per_group for _ in groups)
    top = " & ".join([""] + [f"\\multicolumn{{{per_group}}}{{c}}{{{tex_escape(g)}}}" for g in groups])
    rules = " ".join(
        f"\\cmidrule(lr){{{2 + i * per_group}-{1 + (i + 1) * per_group}}}" for i in range(len(groups))
    )
    sub = " & ".join([""] + [tex_escape(m) for _, m in table.columns])
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", top + " \\\\", rules, sub + " \\\\", "\\midrule"]
    for name, cells in zip(table.index, formatted_cells(table, fmt_p_tex)):
        lines.append(" & ".join([tex_escape(name)] + cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "% " + caption(table)]
    return "\n".join(lines) + "\n"


def write_table2(
    table: pd.DataFrame,
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    out_tex: str | os.PathLike,
) -> None:
    """Write Table 2 as CSV (full precision), Markdown and LaTeX (booktabs), atomically."""
    write_text(out_csv, to_csv_text(table))
    write_text(out_md, to_markdown(table))
    write_text(out_tex, to_latex(table))
