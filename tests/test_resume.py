"""Fault tolerance of the long rules: a job killed with SIGKILL resumes from its last rolling
checkpoint when the workflow is started again, and ends with exactly the weights of an
uninterrupted run (CPU, same seed). A killed job leaves no output a later run would take as
complete: the next run plans the job again.

For each of pretrain_featcnn, train_suits and train_voxelmorph, on a tiny phantom (own data set
name, results/test-resume/, removed afterwards):

1. an uninterrupted ``snakemake <model file>`` gives the reference weights; the model file is
   removed again;
2. the same command is started in its own process group, and once the rule's checkpoint exists
   in ``models/checkpoints/`` the whole group (snakemake and the job) is killed with SIGKILL;
3. the model file does not exist and a dry run plans the rule again (pre-training: the run's
   target is its learning curve, whose validation Dice a second job scores from the weights
   that pre-training keeps of every validation step);
4. the same command again: it completes, the rule's log says ``resuming ... from step N`` with
   0 < N < total steps, every tensor of the model equals the reference (``torch.equal``) and
   the learning curve (losses, validation loss and Dice) is the reference's, byte for byte.

Runs with ``--nolock`` (a killed snakemake leaves its lock behind otherwise); the workflow
profile (profiles/default) adds ``rerun-incomplete``. About 1-3 minutes on 2 cores.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from snakemake_run import ROOT, SNAKEMAKE, SMOKE_CONFIG, venv_env, output_of

DATASET = "test-resume"
RES = ROOT / "results" / DATASET
CHECKPOINTS = RES / "models" / "checkpoints"

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# rule -> (model file, checkpoint prefix, config section, steps key, total steps)
CASES = {
    "pretrain_featcnn":
        ("featcnn_pretrained.pt", "featcnn_pretrained", "pretrain", "iterations", 18),
    "train_suits": ("featcnn_suits.pt", "featcnn_suits", "suits", "steps", 12),
    "train_voxelmorph": ("voxelmorph.pt", "voxelmorph", "voxelmorph", "iterations", 24),
}
EVERY = {"pretrain_featcnn": 3, "train_suits": 2, "train_voxelmorph": 4}
CURVES = {"pretrain_featcnn": "featcnn_pretrained_curve.tsv",
          "train_suits": "featcnn_suits_curve.tsv", "train_voxelmorph": "voxelmorph_curve.tsv"}
# the run's target: the model file, or (pre-training, whose validation Dice a second job
# scores from the weights it keeps) the learning curve
TARGETS = {"pretrain_featcnn": "featcnn_pretrained_curve.tsv"}
WAIT = 600  # s, bound on every wait


def tiny_config(path: Path) -> Path:
    """The smoke config on a smaller phantom with few steps and frequent checkpoints."""
    cfg = yaml.safe_load(SMOKE_CONFIG.read_text())
    cfg["dataset"] = DATASET
    cfg["affine"]["enabled"] = False
    cfg["data"]["phantom"].update(n_per_modality=3, shape=[32, 32, 32], spacing=4.5)
    cfg["preprocess"].update(spacing=4.5, shape=[32, 32, 32])
    cfg["split"]["n_test"] = 1
    for rule, (_, _, section, key, total) in CASES.items():
        cfg[section][key] = total
        cfg[section]["checkpoint_every"] = EVERY[rule]
        cfg[section]["validate_every"] = 2 * EVERY[rule]  # validations before and after the kill
    cfg["suits"].update(batch=2, k_max=5)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def command(config: Path, *targets: str) -> list[str]:
    return [SNAKEMAKE, *targets, "--cores", "2", "--nolock", "--configfile", str(config)]


def run(args: list[str], timeout: int = WAIT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=venv_env())


def planned_rules(config: Path, target: str) -> dict[str, int]:
    """``{rule: job count}`` of a dry run for ``target``."""
    proc = run([*command(config, target), "-n", "--quiet", "rules"])
    assert proc.returncode == 0, output_of(proc)
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return payload["state_dict"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    if RES.exists():
        shutil.rmtree(RES)
    cfg = tiny_config(tmp_path_factory.mktemp("resume") / "config.yaml")
    yield cfg
    shutil.rmtree(RES, ignore_errors=True)


def kill_when_exists(args: list[str], folder: Path, pattern: str, out: Path) -> str:
    """Start ``args`` in a new process group; SIGKILL the group as soon as a file matching
    ``folder/pattern`` exists. Returns the run's output so far."""
    with open(out, "w") as fh:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=venv_env(),
                                start_new_session=True)
        deadline = time.monotonic() + WAIT
        try:
            while not list(folder.glob(pattern)):
                if proc.poll() is not None:
                    pytest.fail(f"the run ended (exit {proc.returncode}) before {pattern} "
                                f"appeared\n{out.read_text()[-5000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {pattern} after {WAIT} s\n{out.read_text()[-5000:]}")
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    # nothing of the group survives (a surviving job would still write its output);
    # killed children may linger as zombies until init reaps them
    deadline = time.monotonic() + 30
    while alive := survivors(proc.pid):
        assert time.monotonic() < deadline, f"processes of the killed group still run: {alive}"
        time.sleep(0.2)
    return out.read_text()


def survivors(pgid: int) -> list[str]:
    """Live (non-zombie) processes of process group ``pgid``."""
    ps = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True)
    return [ln for ln in ps.stdout.splitlines()
            if len(f := ln.split()) > 2 and f[1] == str(pgid) and not f[2].startswith("Z")]


@pytest.mark.parametrize("rule", list(CASES))
def test_killed_rule_resumes_with_identical_weights(rule, config, tmp_path):
    name, prefix, _, _, total = CASES[rule]
    model = RES / "models" / name
    target = str((RES / "models" / TARGETS.get(rule, name)).relative_to(ROOT))
    log = RES / "logs" / f"{rule}.log"

    # 1. uninterrupted reference (builds what the rule needs on first use)
    t0 = time.monotonic()
    proc = run(command(config, target))
    assert proc.returncode == 0, output_of(proc)
    assert "resuming" not in log.read_text()
    assert not list(CHECKPOINTS.glob(f"{prefix}-*.pt")), "checkpoint left after success"
    reference = state_dict(model)
    curve = RES / "models" / CURVES[rule]
    reference_curve = curve.read_text()
    rows = [ln.split("\t") for ln in reference_curve.splitlines()]
    assert len(rows) == total + 2  # header, steps 0..total
    dice = rows[0].index("val_dice")
    validated = [int(r[0]) for r in rows[1:] if r[dice]]
    assert validated == list(range(0, total + 1, 2 * EVERY[rule])), validated
    model.unlink()
    curve.unlink()  # (the target of pre-training's run: planned again only without it)
    t_ref = time.monotonic() - t0

    # 2. the same run, killed (snakemake and the job) once the rule has checkpointed
    t0 = time.monotonic()
    kill_when_exists(command(config, target), CHECKPOINTS, f"{prefix}-*.pt",
                     tmp_path / "killed.out")

    # 3. no output that a later run would take as complete: none at all, and the job is planned
    assert not model.exists(), f"{model} exists after the job was killed"
    assert list(CHECKPOINTS.glob(f"{prefix}-*.pt")), "the checkpoint did not survive the kill"
    assert planned_rules(config, target).get(rule) == 1, f"{rule} not planned after the kill"

    # 4. started again: resumes from the checkpoint, ends with the reference weights
    proc = run(command(config, target))
    assert proc.returncode == 0, output_of(proc)
    text = log.read_text()
    steps = [int(s) for s in re.findall(r"resuming (?:[\w-]+ )?from step (\d+)", text)]
    assert len(steps) == 1, f"no 'resuming from step N' line in {log}:\n{text[-3000:]}"
    assert 0 < steps[0] < total, f"resumed from step {steps[0]} of {total}"
    assert steps[0] % EVERY[rule] == 0
    resumed = state_dict(model)
    assert resumed.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.equal(resumed[key], tensor), f"{rule}: tensor {key} differs after resume"
    assert curve.read_text() == reference_curve, f"{rule}: learning curve differs after resume"
    assert not list(CHECKPOINTS.glob(f"{prefix}-*.pt")), "checkpoint left after success"
    print(f"{rule}: reference run {t_ref:.0f} s; killed, then resumed from step {steps[0]} of "
          f"{total}: {time.monotonic() - t0:.0f} s")


def test_killed_job_leaves_nothing_taken_as_complete(tmp_path):
    """A job killed after writing some of its outputs (the phantom rule writes one image after
    the other): the next run plans it again, even for a target that exists, and completes.
    Snakemake's incomplete marking does it (without ``rerun-incomplete``, from the workflow
    profile, it stops and names the incomplete files rather than use them)."""
    dataset = "test-resume-partial"
    res = ROOT / "results" / dataset
    shutil.rmtree(res, ignore_errors=True)
    cfg = yaml.safe_load(SMOKE_CONFIG.read_text())
    cfg["dataset"] = dataset
    cfg["data"]["phantom"].update(n_per_modality=4, shape=[64, 64, 64], spacing=3.0)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    first = res / "raw" / "p000_ct_image.nii.gz"
    try:
        kill_when_exists(command(config, f"results/{dataset}/raw/manifest.tsv"), res / "raw",
                         first.name, tmp_path / "killed.out")
        assert first.exists() and not (res / "raw" / "manifest.tsv").exists()

        # an output that exists is not taken as complete
        target = str(first.relative_to(ROOT))
        assert planned_rules(config, target).get("phantom") == 1
        strict = run([*command(config, target), "-n", "--workflow-profile", "none"])
        assert strict.returncode != 0, output_of(strict)
        assert "incomplete" in (strict.stdout + strict.stderr).lower(), output_of(strict)
        assert first.name in strict.stdout + strict.stderr, output_of(strict)

        # the next run reruns the job and the data pass validation
        proc = run(command(config, f"results/{dataset}/split.json"))
        assert proc.returncode == 0, output_of(proc)
        files = sorted(p.name for p in (res / "raw").iterdir())
        # the killed writer's temporary (if the kill hit a write) is gone: rewritten files
        # remove their stale temporaries (suits.atomic)
        assert not [f for f in files if f.startswith(".")], files
        assert len([f for f in files if f.endswith(".nii.gz")]) == 16, files
    finally:
        shutil.rmtree(res, ignore_errors=True)
