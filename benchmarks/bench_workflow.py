"""Wall time and peak memory of a complete workflow run, started fresh.

Runs ``snakemake --cores N`` (default: the embedded phantom default, config/config.yaml) into
a fresh results folder and samples the resident memory of the whole process tree (snakemake
and every job it starts, summed) every 0.2 s. Prints the wall time, the peak of the summed
RSS, the largest single process, and the ten slowest jobs from the ``benchmark:`` files.

    .venv/bin/python benchmarks/bench_workflow.py                       # default, 2 cores
    .venv/bin/python benchmarks/bench_workflow.py --configfile .test/config/ci.yaml

Goal: the default run on 2 cores takes <= 10 minutes and <= 4 GB peak memory.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(d.name))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(root: int) -> tuple[int, int]:
    """(sum, max) of the RSS in kB over ``root`` and all its descendants."""
    tree, stack, total, largest = _children(), [root], 0, 0
    while stack:
        pid = stack.pop()
        rss = _rss_kb(pid)
        total, largest = total + rss, max(largest, rss)
        stack.extend(tree.get(pid, []))
    return total, largest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the results folder")
    args = ap.parse_args(argv)

    config = yaml.safe_load((ROOT / args.configfile).read_text())
    config["dataset"] = f"bench-{config['dataset']}"
    results = ROOT / "results" / config["dataset"]
    shutil.rmtree(results, ignore_errors=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(config, f, sort_keys=False)
        cfg = f.name

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(BIN / "snakemake"), "--cores", str(args.cores), "--configfile", cfg, "--quiet",
           "all"]
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            total, largest = tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], largest)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    os.unlink(cfg)
    if proc.returncode:
        print(out[-4000:])
        print(f"workflow failed (exit {proc.returncode})")
        return proc.returncode

    jobs = []
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        jobs.append((float(row["s"]), float(row["max_rss"] or 0), tsv.relative_to(results)))
    jobs.sort(reverse=True)
    print(f"config: {args.configfile} ({config['dataset']}), cores: {args.cores}, "
          f"load before start: {load[0]:.2f}")
    print(f"wall time: {wall / 60:.2f} min ({wall:.0f} s)")
    print(f"peak memory, whole process tree (sum of RSS): {peak[0] / 1024**2:.2f} GB")
    print(f"peak memory, largest single process: {peak[1] / 1024**2:.2f} GB")
    print(f"jobs: {len(jobs)}, summed job time: {sum(j[0] for j in jobs) / 60:.1f} min")
    print("slowest jobs (s, max RSS MB, benchmark file):")
    for s, rss, name in jobs[:10]:
        print(f"  {s:8.1f}  {rss:8.0f}  {name}")
    if not args.keep:
        shutil.rmtree(results, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
