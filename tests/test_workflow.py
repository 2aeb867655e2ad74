"""The Snakemake workflow: lint, formatting, a dry run of every shipped config, bad configs,
and the complete CI-size workflow (.test/config/ci.yaml -> results/ci/) with checks on Table 2.

The complete run takes about 9 minutes on 2 cores; select it with ``-m workflow`` or leave it
out with ``-m "not slow"``.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from snakemake_run import ROOT, BIN, SNAKEMAKE, CI_CONFIG, venv_env, output_of

SNAKEFMT = str(BIN / "snakefmt") if (BIN / "snakefmt").exists() else "snakefmt"
PROSTATE = ROOT.parent / "shared" / "data" / "prostate-mr-us"
CI_RESULTS = ROOT / "results" / "ci"
METHODS = ["initial", "elastix", "voxelmorph", "mind_pretrained", "suits", "mind_ssc"]
METHOD_NAMES_OF = {"initial": "Initial", "elastix": "SimpleElastix", "voxelmorph": "VoxelMorph",
                   "mind_pretrained": "pre-trained MIND", "suits": "SUITS (ours)", "mind_ssc": "MIND-SSC"}

pytestmark = pytest.mark.workflow


def snakemake(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = venv_env()
    return subprocess.run([SNAKEMAKE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def dry_run(*args: str) -> subprocess.CompletedProcess:
    # --nolock: dry runs may overlap a real run in the same folder
    return snakemake("-n", "--nolock", "--quiet", "rules", "--cores", "2", *args)


# ---------------------------------------------------------------------------- static checks


def test_lint_is_clean():
    proc = snakemake("--lint", "--nolock")
    assert proc.returncode == 0, output_of(proc)
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr, \
        output_of(proc)


def test_snakefmt_check_passes():
    proc = subprocess.run([SNAKEFMT, "--check", "."], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- dry runs


def test_dry_run_default():
    proc = dry_run("--forceall")  # the whole DAG, whatever results/ already holds
    assert proc.returncode == 0, output_of(proc)
    out = proc.stdout + proc.stderr
    for rule in ("phantom", "validate", "preprocess", "affine_pairwise", "affine_mean",
                 "affine_resample", "pretrain_featcnn", "train_suits", "register_suits",
                 "register_elastix", "train_voxelmorph", "register_voxelmorph",
                 "register_initial", "evaluate", "table2", "boxplot", "example_figure",
                 "runtime", "provenance", "learning_curves", "l2r_table", "itk_fields"):
        assert rule in out, f"rule {rule} not planned\n{output_of(proc)}"


def test_dry_run_ci():
    proc = dry_run("--configfile", str(CI_CONFIG))
    assert proc.returncode == 0, output_of(proc)


def test_dry_run_smoke():
    proc = dry_run("--configfile", str(ROOT / ".test" / "config" / "smoke.yaml"))
    assert proc.returncode == 0, output_of(proc)


def test_dry_run_paper(tmp_path):
    """config/paper.yaml with a VISCERAL-like manifest of 20 CT and 20 MR placeholders:
    25 test pairs, every method on each."""
    rows = ["subject\tmodality\timage\tlabel"]
    for n in range(40):
        modality = "ct" if n < 20 else "mr"
        for kind in ("image", "label"):
            (tmp_path / f"s{n:02d}_{kind}.nii.gz").touch()
        rows.append(f"s{n:02d}\t{modality}\ts{n:02d}_image.nii.gz\ts{n:02d}_label.nii.gz")
    (tmp_path / "visceral.tsv").write_text("\n".join(rows) + "\n")
    text = (ROOT / "config" / "paper.yaml").read_text()
    assert "manifest: config/visceral.tsv" in text
    cfg = tmp_path / "paper.yaml"
    cfg.write_text(text.replace("manifest: config/visceral.tsv",
                                f"manifest: {tmp_path / 'visceral.tsv'}")
                   .replace("dataset: visceral", "dataset: paper-dry-run"))
    proc = dry_run("--configfile", str(cfg))
    assert proc.returncode == 0, output_of(proc)
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts.get("register_elastix") == 25, counts
    assert counts.get("register_suits") == 3 * 25, counts
    assert counts.get("register_module") == 2 * 25, counts   # ConvexAdam, ANTs SyN
    assert counts.get("preprocess") == 40, counts


def test_dry_run_all_methods():
    """config/all-methods.yaml on top of the default: the eight methods, ConvexAdam and ANTs SyN
    through register_module (9 test pairs each)."""
    proc = dry_run("--forceall", "--configfile", "config/config.yaml", "config/all-methods.yaml")
    assert proc.returncode == 0, output_of(proc)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", proc.stdout, re.M))
    assert counts.get("register_module") == "18", counts
    assert counts.get("evaluate") == "8", counts


def dry_run_default_with(tmp_path, override_yaml: str) -> subprocess.CompletedProcess:
    """A dry run of the whole default DAG with its jobs listed, the config overridden by
    ``override_yaml``; asserts that it succeeds."""
    override = tmp_path / "override.yaml"
    override.write_text(override_yaml)
    proc = snakemake("-n", "--nolock", "--forceall", "--cores", "2",
                     "--configfile", "config/config.yaml", str(override))
    assert proc.returncode == 0, output_of(proc)
    return proc


@pytest.mark.parametrize("affine, stage", [("true", "aligned"), ("false", "prep")])
def test_registration_jobs_take_both_fov_masks(tmp_path, affine, stage):
    """Every registration job of the default gets the fixed and the moving image's fov mask
    (aligned/ with the affine stage, prep/ without it) beside the images."""
    proc = dry_run_default_with(tmp_path, f"affine:\n  enabled: {affine}\n")
    jobs = re.findall(r"^rule (register_\w+):\n\s+input: (.*)$", proc.stdout, re.M)
    assert len(jobs) >= 5, output_of(proc)
    for rule, inputs in jobs:
        moving, fixed = re.search(r"/(\w+?)__to__(\w+?)\.nii\.gz", proc.stdout[
            proc.stdout.index(inputs):]).groups()
        files = inputs.split(", ")
        for i in (moving, fixed):
            assert f"results/phantom/{stage}/{i}_fov.nii.gz" in files, (rule, inputs)
            assert f"results/phantom/{stage}/{i}_image.nii.gz" in files, (rule, inputs)


@pytest.mark.parametrize("directions, per_row", [("both", {15}), ("one", {7, 8})])
def test_affine_rows_take_only_their_partners(tmp_path, directions, per_row):
    """Each affine_pairwise job lists its own image and mask and those of the images its row
    registers, no others: 15 partners with both directions, 7 or 8 with one (16 images)."""
    proc = dry_run_default_with(tmp_path, f"affine:\n  directions: {directions}\n")
    rows = re.findall(r"^rule affine_pairwise:\n\s+input: (.*)$", proc.stdout, re.M)
    assert len(rows) == 16, output_of(proc)
    pairs, registrations = set(), 0
    for inputs in rows:
        files = inputs.split(", ")
        ids = [re.search(r"prep/(\w+)_image", f).group(1) for f in files if "_image" in f]
        assert sorted(f.replace("_image", "_fov") for f in files if "_image" in f) == sorted(
            f for f in files if "_fov" in f), inputs
        assert len(ids) - 1 in per_row, inputs
        assert ids[1:] == sorted(ids[1:]), inputs
        pairs |= {frozenset((ids[0], j)) for j in ids[1:]}
        registrations += len(ids) - 1
    assert len(pairs) == 16 * 15 // 2
    assert registrations == 16 * 15 // (1 if directions == "both" else 2)


@pytest.mark.parametrize("images, stage", [("preprocessed", "prep"), ("aligned", "aligned")])
def test_pretraining_images_and_its_validation(tmp_path, images, stage):
    """pretrain.images: pre-training takes the training and validation subjects' images from
    prep/ (beside the affine stage) or aligned/; its validation Dice (validate_pretrained)
    scores the kept weights on the aligned validation pairs either way, and SUITS training
    starts from the model without waiting for that score."""
    proc = dry_run_default_with(tmp_path, f"pretrain:\n  iterations: 250\n  images: {images}\n")
    inputs = dict(re.findall(r"^rule (pretrain_featcnn|validate_pretrained|train_suits):\n"
                             r"\s+input: (.*)$", proc.stdout, re.M))
    assert set(inputs) == {"pretrain_featcnn", "validate_pretrained", "train_suits"}, output_of(proc)
    pre = inputs["pretrain_featcnn"].split(", ")
    assert len(pre) == 10  # 3 + 3 training and 2 + 2 validation subjects
    assert all(re.fullmatch(rf"results/phantom/{stage}/p\d+_(ct|mr)_image\.nii\.gz", f)
               for f in pre), pre
    val = inputs["validate_pretrained"].split(", ")
    assert "results/phantom/models/featcnn_pretrained_snapshots.pt" in val
    assert sum(f.startswith("results/phantom/aligned/") for f in val) == 12, val  # image,label,fov
    assert not any("featcnn_pretrained_curve" in f for f in inputs["train_suits"].split(", "))


def test_dry_run_prostate():
    if not PROSTATE.is_dir():
        pytest.skip(f"real data not found at {PROSTATE} (place ../shared/data beside the project)")
    proc = dry_run("--configfile", "config/prostate-mr-us.yaml")
    assert proc.returncode == 0, output_of(proc)


# ---------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    "override, key",
    [
        ("seed=abc", "seed"),
        ("nonsense_key=1", "nonsense_key"),
        ("device=gpu", "device"),
    ],
)
def test_bad_config_fails_with_one_line(override, key):
    proc = dry_run("--config", override)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("config key")]
    assert lines and key in lines[0], output_of(proc)


# ---------------------------------------------------------------------------- complete run


@pytest.mark.slow
def test_ci_workflow_end_to_end():
    """The complete workflow on the CI config from scratch; Table 2 has every method, Dice in
    [0, 1], SUITS not below initial; the figures, runtime table, Learn2Reg-style table, ITK fields
    and provenance exist."""
    import pandas as pd

    from suitsbench.table import METHOD_NAMES

    if CI_RESULTS.exists():
        shutil.rmtree(CI_RESULTS)
    proc = snakemake("--cores", "2", "--configfile", str(CI_CONFIG), timeout=3000)
    assert proc.returncode == 0, output_of(proc)

    table = pd.read_csv(CI_RESULTS / "table2.csv", index_col=0)
    names = [METHOD_NAMES[m] for m in METHODS]
    assert list(table.index) == names
    dice = table[[c for c in table.columns if c.endswith(" Dice") and not c.startswith(("std", "p-val"))]]
    assert dice.shape[1] == 6 + 1  # six organs + mean
    assert ((dice >= 0) & (dice <= 1)).all().all(), dice
    hd = table[[c for c in table.columns if c.endswith(" HD95") and not c.startswith("p-val")]]
    assert (hd >= 0).all().all(), hd
    assert table.loc[METHOD_NAMES["suits"], "mean Dice"] >= table.loc[METHOD_NAMES["initial"], "mean Dice"], \
        table["mean Dice"]
    assert pd.isna(table.loc[METHOD_NAMES["suits"], "p-val Dice"])
    for name in ("table2.md", "table2.tex", "fig3_dice.png", "fig3_dice.pdf", "fig4_hd95.png",
                 "fig4_hd95.pdf", "fig2_example.png", "runtime.csv", "runtime.md",
                 "provenance.json", "l2r_table.md"):
        assert (CI_RESULTS / name).stat().st_size > 0, name
    runtime = pd.read_csv(CI_RESULTS / "runtime.csv", index_col=0)
    assert all(n in runtime.index for n in names), runtime.index
    l2r = pd.read_csv(CI_RESULTS / "l2r_table.csv", index_col=0)
    assert list(l2r.index) == names
    assert (l2r["dsc30"] <= l2r["dsc"]).all() and (l2r["hd95_30_mm"] >= l2r["hd95_mm"]).all(), l2r
    assert sorted(l2r["rank"])[0] == 1 and (l2r["runtime_s"] > 0).all(), l2r
    for m in METHODS:
        assert len(list((CI_RESULTS / "fields_itk" / m).glob("*.nii.gz"))) == 4, m
    # training checkpoints are removed after success; nothing temporary is left behind
    assert not list((CI_RESULTS / "models" / "checkpoints").glob("*.pt"))
    assert not list(CI_RESULTS.rglob("*.tmp*"))

    # a second run has nothing to do
    again = snakemake("--cores", "2", "--configfile", str(CI_CONFIG), "-n", "--quiet", "rules")
    assert again.returncode == 0, output_of(again)
    assert "Nothing to be done" in again.stdout + again.stderr, output_of(again)

    # a changed method setting re-plans that method's jobs and the report, not the workflow
    changed = snakemake("--cores", "2", "--configfile", str(CI_CONFIG), "-n", "--quiet", "rules",
                        "--config", "elastix={'parameters': {'Metric1Weight': 31}}")
    assert changed.returncode == 0, output_of(changed)
    planned = set(re.findall(r"^(\w+)\s+\d+\s*$", changed.stdout + changed.stderr, re.M)) - {"total"}
    assert "register_elastix" in planned, output_of(changed)
    assert planned <= {"all", "register_elastix", "evaluate", "table2", "boxplot", "runtime",
                       "example_figure", "provenance", "l2r_table", "itk_fields"}, planned

    # the self-contained HTML report holds Table 2 and the figures
    html = CI_RESULTS / "report.html"
    proc = snakemake("--configfile", str(CI_CONFIG), "--report", str(html), timeout=600)
    assert proc.returncode == 0, output_of(proc)
    text = html.read_text(errors="replace")
    assert len(text) > 100_000, len(text)                 # the figures are embedded
    for name in ("table2.csv", "fig3_dice.png", "fig4_hd95.png", "fig2_example.png"):
        assert name in text, name


ZERO_METHOD = """
import torch


def register(fixed, moving, fixed_affine, moving_affine, *, threads, device):
    return torch.zeros(1, 3, *fixed.shape[-3:])
"""


@pytest.mark.slow
def test_a_custom_method_reaches_table2_and_the_runtime_table(tmp_path):
    """docs/adding-a-method.md's path, on a copy of the finished CI run: a module returning the
    zero field, declared under custom_methods in a temporary config, runs through
    register_module and the one evaluator and nothing else is recomputed; its Table 2 row
    equals Initial's (both are the identity) and runtime.csv counts its 4 jobs."""
    import pandas as pd
    import yaml

    if not (CI_RESULTS / "table2.csv").exists():
        pytest.skip("needs the finished CI run in results/ci (test_ci_workflow_end_to_end)")
    work = tmp_path / "run"
    shutil.copytree(CI_RESULTS, work / "results" / "ci")   # copy2: modification times kept
    module = tmp_path / "zero_method.py"
    module.write_text(ZERO_METHOD)
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["methods"].append("zero")
    cfg["custom_methods"] = {"zero": {"module": str(module), "name": "Zero field",
                                      "env": str(ROOT / "workflow" / "envs" / "suits.yaml")}}
    cfg_path = tmp_path / "zero.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # a copied run has no snakemake metadata: modification times decide; table2 and runtime
    # are asked for anew (their inputs grow by the new method's files)
    proc = subprocess.run(
        [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "results/ci/table2.csv", "results/ci/runtime.csv",
         "--forcerun", "table2", "runtime", "--rerun-triggers", "mtime", "--cores", "2",
         "--configfile", str(cfg_path)],
        cwd=work, capture_output=True, text=True, timeout=900, env=venv_env())
    assert proc.returncode == 0, output_of(proc)
    stats = (proc.stdout + proc.stderr).split("Job stats:", 1)[1].split("\n\n", 1)[0]
    ran = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", stats, re.M))
    assert ran == {"register_module": "4", "evaluate": "1", "table2": "1", "runtime": "1",
                   "total": "7"}, output_of(proc)

    table = pd.read_csv(work / "results" / "ci" / "table2.csv", index_col=0)
    assert list(table.index) == [METHOD_NAMES_OF[m] for m in METHODS] + ["Zero field"]
    pd.testing.assert_series_equal(table.loc["Zero field"], table.loc["Initial"], check_names=False)
    runtime = pd.read_csv(work / "results" / "ci" / "runtime.csv", index_col=0)
    assert runtime.loc["Zero field", "jobs"] == 4

