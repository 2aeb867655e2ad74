"""Runtime and memory per method from Snakemake ``benchmark:`` files.

A Snakemake benchmark file is a TSV with the header
``s  h:m:s  max_rss  max_vms  max_uss  max_pss  io_in  io_out  mean_load  cpu_time`` (memory in
MB, I/O in MB, times in seconds; ``-`` where not measurable) and one row per repetition.
Each file is one job (one registration pair, or one training run); repetitions within a file
are averaged first, so the summary statistics are over jobs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from suits.atomic import write_text

BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out",
                     "mean_load", "cpu_time")
SUMMARY_COLUMNS = ("jobs", "mean_s", "median_s", "total_s", "mean_cpu_time_s", "max_rss_mb")


def read_benchmark(path: str | os.PathLike) -> pd.DataFrame:
    """Read one benchmark TSV; numeric columns as float (``-`` -> NaN), ``h:m:s`` kept as text."""
    df = pd.read_csv(path, sep="\t", na_values=["-", "NA", ""], keep_default_na=False,
                     dtype={"h:m:s": str})
    if "s" not in df.columns:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column); columns {list(df.columns)}")
    for col in df.columns:
        if col != "h:m:s" and col in BENCHMARK_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def job_summary(path: str | os.PathLike) -> dict[str, float]:
    """One job: mean wall time and CPU time over repetitions, max RSS (MB) over repetitions."""
    df = read_benchmark(path)

    def col(name: str, how: str) -> float:
        if name not in df.columns or df[name].isna().all():
            return float("nan")
        return float(getattr(df[name], how)())

    return {"s": col("s", "mean"), "cpu_time": col("cpu_time", "mean"), "max_rss": col("max_rss", "max")}


def runtime_table(
    files_by_method: Mapping[str, Iterable[str | os.PathLike]],
    names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per-method summary: ``jobs, mean_s, median_s, total_s, mean_cpu_time_s, max_rss_mb``.

    ``files_by_method`` maps a row key (e.g. ``"suits"`` or ``"suits train"``) to its benchmark
    files, in the order the rows should appear; ``names`` optionally maps keys to display names.
    Files are read in sorted order so that the result does not depend on glob order.
    """
    rows = []
    for key, files in files_by_method.items():
        jobs = [job_summary(f) for f in sorted(Path(f) for f in files)]
        s = np.array([j["s"] for j in jobs], dtype=np.float64)
        cpu = np.array([j["cpu_time"] for j in jobs], dtype=np.float64)
        rss = np.array([j["max_rss"] for j in jobs], dtype=np.float64)

        def agg(fn, x):
            return float(fn(x)) if np.isfinite(x).any() else float("nan")

        rows.append(
            {
                "method": (names or {}).get(key, key),
                "jobs": len(jobs),
                "mean_s": agg(np.nanmean, s),
                "median_s": agg(np.nanmedian, s),
                "total_s": agg(np.nansum, s),
                "mean_cpu_time_s": agg(np.nanmean, cpu),
                "max_rss_mb": agg(np.nanmax, rss),
            }
        )
    return pd.DataFrame(rows, columns=["method", *SUMMARY_COLUMNS]).set_index("method")


def _fmt(x: float, digits: int) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def to_markdown(df: pd.DataFrame) -> str:
    """Pipe table: seconds with 2 decimals, memory in MB with 0 decimals."""
    header = ["method", "jobs", "mean s/job", "median s/job", "total s", "mean CPU s/job", "max RSS MB"]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    for name, r in df.iterrows():
        cells = [str(name), str(int(r["jobs"])), _fmt(r["mean_s"], 2), _fmt(r["median_s"], 2),
                 _fmt(r["total_s"], 1), _fmt(r["mean_cpu_time_s"], 2), _fmt(r["max_rss_mb"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_runtime(df: pd.DataFrame, out_csv: str | os.PathLike, out_md: str | os.PathLike) -> None:
    """Write the runtime table as CSV (full precision) and Markdown, atomically."""
    write_text(out_csv, df.to_csv(lineterminator="\n", na_rep=""))
    write_text(out_md, to_markdown(df))
