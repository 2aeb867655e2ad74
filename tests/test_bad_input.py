"""Bad input at workflow level: one test per case, each running the whole workflow
(``snakemake --cores 1 --configfile <config>``) on a manifest data set (a small phantom written
by ``suitsbench.phantom.generate`` into a temporary folder, then broken in one way) with its own
data set name, and asserting

(a) a non-zero exit,
(b) one message line that names the file or config key, says what is wrong and how to fix it
    (the ``InputError`` form ``<where>: <problem>; <fix>``, or the config schema's one line),
(c) no result files: ``results/<dataset>/`` holds nothing but the validation's own log and
    benchmark (no prep/, aligned/, affine/, models/, fields/, metrics/, table2.*, figures).

The library-level checks behind these messages are unit-tested in tests/test_validate.py.
A control case (the same data unbroken) passes validation, so each failure is the broken
input's. About 5-10 s per case.
"""
from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from snakemake_run import ROOT, SNAKEMAKE, SMOKE_CONFIG, venv_env, output_of

PREFIX = "test-bad-input"

pytestmark = pytest.mark.workflow

# anything but these in results/<dataset>/ is a result written despite the bad input
ALLOWED = {"logs", "benchmarks"}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """A clean phantom data set (3 CT-like + 3 MR-like patients) with its manifest."""
    from suitsbench.phantom import generate

    out = tmp_path_factory.mktemp("phantom")
    generate(out, n_per_modality=3, shape=(24, 24, 24), spacing=6.0, seed=0)
    return out


class Case:
    """A copy of the phantom data set and a config for it, to be broken by a test."""

    def __init__(self, phantom: Path, tmp: Path, name: str):
        self.dir = tmp / "data"
        shutil.copytree(phantom, self.dir)
        self.dataset = f"{PREFIX}-{name}"
        self.results = ROOT / "results" / self.dataset
        shutil.rmtree(self.results, ignore_errors=True)
        self.manifest = self.dir / "manifest.tsv"
        self.config_path = tmp / "config.yaml"
        cfg = yaml.safe_load(SMOKE_CONFIG.read_text())
        cfg["dataset"] = self.dataset
        cfg["data"]["source"] = "manifest"
        cfg["data"]["manifest"] = str(self.manifest)
        cfg["split"]["n_test"] = 1
        self.config = cfg

    # ---- manifest
    def rows(self) -> list[list[str]]:
        return [ln.split("\t") for ln in self.manifest.read_text().splitlines()]

    def write_rows(self, rows: list[list[str]]) -> None:
        self.manifest.write_text("".join("\t".join(r) + "\n" for r in rows))

    def file(self, subject: str, kind: str = "image") -> Path:
        """Path of ``kind`` (image | label) of the manifest row of ``subject``."""
        header, *rows = self.rows()
        row = next(r for r in rows if r[0] == subject)
        return self.dir / row[header.index(kind)]

    # ---- run
    def run(self, *targets: str) -> subprocess.CompletedProcess:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = venv_env()
        return subprocess.run(
            [SNAKEMAKE, *targets, "--cores", "1", "--nolock", "--configfile",
             str(self.config_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)

    def written(self) -> list[str]:
        if not self.results.exists():
            return []
        return sorted(str(p.relative_to(self.results)) for p in self.results.iterdir()
                      if p.name not in ALLOWED)


@pytest.fixture
def case(phantom, tmp_path, request):
    c = Case(phantom, tmp_path, request.node.name.removeprefix("test_").replace("_", "-"))
    yield c
    shutil.rmtree(c.results, ignore_errors=True)


def assert_fails_cleanly(case: Case, *parts: str) -> str:
    """(a) non-zero exit, (b) one line holding every one of ``parts`` (file or key, problem)
    and a fix after '; ', (c) no results. Returns the line."""
    proc = case.run()
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, output_of(proc)
    lines = [ln.strip() for ln in text.splitlines()
             if all(p in ln for p in parts) and "; " in ln]
    assert lines, f"no line with {parts} and a fix\n{output_of(proc)}"
    fix = lines[0].rsplit("; ", 1)[1]
    assert len(fix.split()) >= 2, f"no fix in {lines[0]!r}"
    assert "Traceback" not in text, output_of(proc)
    assert case.written() == [], f"results written despite bad input: {case.written()}"
    print(f"\n{case.dataset}: {lines[0]}")
    return lines[0]


def save_like(path: Path, data: np.ndarray, ref: Path, affine: np.ndarray | None = None) -> None:
    img = nib.load(str(ref))
    out = nib.Nifti1Image(data, img.affine if affine is None else affine)
    out.set_data_dtype(data.dtype)
    nib.save(out, str(path))


# ------------------------------------------------------------------------------ control


def test_control_clean_data_passes_validation(case):
    proc = case.run(f"results/{case.dataset}/split.json")
    assert proc.returncode == 0, output_of(proc)
    assert (case.results / "split.json").is_file()


def test_every_job_waits_for_validation(case):
    """In the planned DAG of the whole workflow every job except the data source (phantom)
    and the validation itself comes after `validate`: a failing validation stops everything
    expensive, whatever the number of cores."""
    import re

    for cfg in (case.config, yaml.safe_load(SMOKE_CONFIG.read_text())):   # manifest, phantom
        case.config = cfg
        proc = case.run("--dag", "--forceall", "-n")
        assert proc.returncode == 0, output_of(proc)
        labels = {m[1]: m[2] for m in re.finditer(r'^\s*(\d+)\[label = "(\w+)', proc.stdout,
                                                  re.M)}
        edges = re.findall(r"^\s*(\d+) -> (\d+)", proc.stdout, re.M)
        after = {n for n, rule in labels.items() if rule == "validate"}
        assert len(after) == 1, labels
        while True:
            more = {b for a, b in edges if a in after} - after
            if not more:
                break
            after |= more
        before = sorted({rule for n, rule in labels.items() if n not in after})
        assert before in (["phantom"], []), f"jobs not behind validate: {before}"
        assert len(labels) > 20


# ------------------------------------------------------------------------------ files


def test_missing_image(case):
    path = case.file("p001")
    path.unlink()
    assert_fails_cleanly(case, path.name, "not found")


def test_corrupt_gzip(case):
    path = case.file("p002")
    raw = bytearray(path.read_bytes())
    assert raw[:2] == b"\x1f\x8b"
    mid = len(raw) // 2
    raw[mid:mid + 64] = bytes(range(64))          # garbage inside the deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception):
        gzip.decompress(bytes(raw))
    # nibabel alone decodes this to garbage voxels (e.g. NaN) without an error; the message
    # must name the real problem
    assert_fails_cleanly(case, path.name, "corrupt", "gzip")


def test_image_label_shape_mismatch(case):
    label = case.file("p003", "label")
    data = np.asanyarray(nib.load(str(label)).dataobj)
    save_like(label, np.ascontiguousarray(data[:-2]), label)
    assert_fails_cleanly(case, label.name, "shape")


def test_image_label_affine_mismatch(case):
    label = case.file("p004", "label")
    img = nib.load(str(label))
    affine = img.affine.copy()
    affine[:3, 3] += 5.0                          # 5 mm shift of the label grid
    save_like(label, np.asanyarray(img.dataobj), label, affine)
    assert_fails_cleanly(case, label.name, "affine")


def test_label_values_outside_label_map(case):
    label = case.file("p000", "label")
    data = np.asanyarray(nib.load(str(label)).dataobj).copy()
    data[:3, :3, :3] = 9                          # data.labels has 1..6
    save_like(label, data, label)
    assert_fails_cleanly(case, label.name, "not in data.labels")


def test_nan_voxels(case):
    image = case.file("p005")
    data = np.asanyarray(nib.load(str(image)).dataobj).astype(np.float32)
    data[5, 5, 5:8] = np.nan
    save_like(image, data, image)
    assert_fails_cleanly(case, image.name, "NaN")


def test_constant_image(case):
    image = case.file("p001")
    save_like(image, np.full(nib.load(str(image)).shape, 100.0, np.float32), image)
    assert_fails_cleanly(case, image.name, "constant")


# ------------------------------------------------------------------------------ config


def test_config_key_of_wrong_type(case):
    case.config["split"]["n_test"] = "two"
    assert_fails_cleanly(case, "split.n_test", "integer")


def test_unknown_config_key(case):
    case.config["split"]["n_tset"] = 1
    assert_fails_cleanly(case, "n_tset")


def test_elastix_schedule_of_wrong_length(case):
    """The free-form elastix map is checked when the workflow is parsed, not at the first
    test pair (where elastix stops with an internal error)."""
    case.config["elastix"]["parameters"].update(NumberOfResolutions=2,
                                                GridSpacingSchedule=[4, 2, 1])
    assert_fails_cleanly(case, "elastix.parameters", "GridSpacingSchedule has 3 values")


def test_unknown_method(case):
    case.config["methods"] = ["initial", "convex_adam"]
    assert_fails_cleanly(case, "config key methods", "unknown method(s) ['convex_adam']")


def test_custom_method_named_like_a_shipped_one(case):
    case.config["custom_methods"] = {"ants": {"module": "baselines.ants_syn",
                                              "env": "workflow/envs/ants.yaml"}}
    assert_fails_cleanly(case, "custom_methods.ants", "a method the benchmark ships")


def test_custom_method_module_file_missing(case):
    case.config["methods"] = ["initial", "mine"]
    case.config["custom_methods"] = {"mine": {"module": str(case.dir / "missing_method.py"),
                                              "env": "workflow/envs/suits.yaml"}}
    assert_fails_cleanly(case, "custom_methods.mine.module", "missing_method.py is not a file")


# ------------------------------------------------------------------------------ manifest / split


def test_manifest_with_unknown_modality(case):
    rows = case.rows()
    rows[-1][1] = "pet"
    case.write_rows(rows)
    assert_fails_cleanly(case, "manifest.tsv", "'pet'")


def test_too_few_subjects_for_the_split(case):
    case.config["split"]["n_test"] = 3            # 3 CT-like subjects: none left to train on
    assert_fails_cleanly(case, "split", "n_test")


def test_same_subject_in_train_and_test(case):
    """The manifest's split column puts one patient's CT in train and its MR in test."""
    header, *rows = case.rows()
    ct = next(r for r in rows if r[1] == "ct")
    mr = next(r for r in rows if r[1] == "mr")
    mr_shared = [ct[0], "mr", mr[2], mr[3]]       # the same patient imaged in MR
    rows = [r + ["train"] for r in rows if r is not mr] + [mr_shared + ["test"]]
    case.write_rows([header + ["split"], *rows])
    assert_fails_cleanly(case, f"subject {ct[0]}", "train", "test")


def test_empty_pair_list(case):
    """A fixed test set naming nobody in the manifest leaves no test pairs."""
    case.config["split"]["test_subjects"] = ["nobody"]
    assert_fails_cleanly(case, "no test pairs")
