"""The SLURM profile (profiles/slurm) on a real one-node SLURM cluster on localhost.

* fast checks (no cluster): every key of the profile is accepted by snakemake and the installed
  snakemake-executor-plugin-slurm (a dry run with the profile), and the GPU rules carry the
  ``gpu`` resource that the plugin turns into ``sbatch --gpus``;
* the integration test (``-m slurm``, slow): tests/slurm/cluster.sh starts munged, slurmctld
  and slurmd (Debian's slurm-wlm and munge, run as root; the test skips with the reason when
  they are missing), the smoke-size workflow (.test/config/smoke.yaml) runs with
  ``--workflow-profile profiles/slurm`` and account/partition/memory fitted to the local
  node; while ``train_voxelmorph`` runs (after its first checkpoint) the test ``scancel``s it
  once; Snakemake (``retries`` of the profile)
  submits it again, the job resumes from the checkpoint and the workflow completes. Its
  table2.csv must be byte-identical to a local run of the same config. The daemons (and any
  job left) are stopped in the fixture's teardown; on failure the messages carry the daemons'
  logs, Snakemake's log and the SLURM log of failed jobs.

About 10-15 min on 2 cores. Results: results/ci_slurm/ (SLURM) and results/ci_slurm_local/
(the local reference run).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from snakemake_run import ROOT, BIN, SNAKEMAKE, SMOKE_CONFIG, venv_env

CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
PROFILE = ROOT / "profiles" / "slurm"
SLURM_DATASET = "ci_slurm"
LOCAL_DATASET = "ci_slurm_local"
CANCEL_RULE = "train_voxelmorph"        # a long rule with a rolling checkpoint
CANCEL_CHECKPOINT = "voxelmorph-*.pt"   # its checkpoint in <results>/models/checkpoints/
GPU_RULES = ["pretrain_featcnn", "validate_pretrained", "train_suits", "register_suits",
             "train_voxelmorph", "register_voxelmorph"]
CLIENTS = ["sbatch", "squeue", "scancel", "sinfo", "scontrol", "srun"]
DAEMONS = ["munged", "slurmctld", "slurmd"]
START_TIMEOUT = 180      # s, cluster.sh start (its own waits are 30 s + 60 s)
RUN_TIMEOUT = 2400       # s, each workflow run
DRAIN_TIMEOUT = 60       # s, jobs left at teardown

pytestmark = pytest.mark.slurm


# ---------------------------------------------------------------------------- helpers


def config_text(dataset: str) -> str:
    """The smoke config with its own dataset name (results/<dataset>/), nothing else changed."""
    text = SMOKE_CONFIG.read_text()
    new, n = re.subn(r"^dataset:\s*\S+", f"dataset: {dataset}", text, count=1, flags=re.M)
    assert n == 1, f"{SMOKE_CONFIG}: no top-level 'dataset:' line"
    return new


def write_config(folder: Path, dataset: str) -> Path:
    path = folder / f"{dataset}.yaml"
    path.write_text(config_text(dataset))
    return path


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def tail(path: Path, n: int = 80) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return "\n".join(lines[-n:])


def run(cmd: list[str], env: dict | None = None, timeout: float = 60,
        cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def job_blocks(dry_run_output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of each job in `snakemake -n` output."""
    blocks, rule = [], None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            blocks.append((rule, line.strip()))
            rule = None
    return blocks


def resources_of(line: str) -> dict[str, str]:
    out = {}
    for item in line.split(":", 1)[1].split(","):
        if "=" in item:
            k, v = item.strip().split("=", 1)
            out[k] = v
    return out


# ---------------------------------------------------------------------------- profile checks


def test_profile_dry_run_accepts_every_key(tmp_path):
    """snakemake rejects unknown profile keys ('unrecognized arguments'); a dry run with the
    profile plans the whole smoke workflow with the profile's per-rule resources."""
    cfg = write_config(tmp_path, "ci_slurm_dry")
    proc = run([SNAKEMAKE, "-n", "--nolock", "--forceall", "--workflow-profile", str(PROFILE),
                "--configfile", str(cfg)], timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    blocks = job_blocks(out)
    rules = {r for r, _ in blocks}
    assert {"phantom", "table2", *GPU_RULES} <= rules, sorted(rules)
    set_resources = profile()["set-resources"]
    for rule, line in blocks:
        res = resources_of(line)
        for key, value in set_resources.get(rule, {}).items():
            assert res.get(key) == str(value), f"{rule}: {key}={res.get(key)}, profile {value}"


def test_gpu_rules_request_gpus_through_the_plugin(tmp_path):
    """config gpu: N reaches the training/registration rules as the `gpu` resource, which the
    installed plugin maps to `sbatch --gpus=N` (with gpu_model: --gpus=<model>:N; gres is
    passed through as --gres); the other rules request no GPU."""
    utils = pytest.importorskip("snakemake_executor_plugin_slurm.utils")
    cfg = write_config(tmp_path, "ci_slurm_dry")
    proc = run([SNAKEMAKE, "-n", "--nolock", "--forceall", "--workflow-profile", str(PROFILE),
                "--configfile", str(cfg), "--config", "gpu=1",
                "--set-resources", "train_suits:gpu_model=a100"], timeout=180)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    seen = set()
    for rule, line in job_blocks(out):
        res = resources_of(line)
        if rule in GPU_RULES:
            assert res.get("gpu") == "1", f"{rule}: {line}"
            seen.add(rule)
        else:
            assert res.get("gpu", "0") == "0", f"{rule} requests a GPU: {line}"
        gres = utils.set_gres_string(SimpleNamespace(resources=_Resources(
            {k: int(v) if v.isdigit() else v for k, v in res.items()})))
        if rule == "train_suits":
            assert gres == " --gpus=a100:1", (rule, gres)
        elif rule in GPU_RULES:
            assert gres == " --gpus=1", (rule, gres)
        else:
            assert gres == "", (rule, gres)
    assert seen == set(GPU_RULES)
    gres = utils.set_gres_string(SimpleNamespace(resources=_Resources({"gres": "gpu:a100:1"})))
    assert gres == " --gres=gpu:a100:1"


class _Resources(dict):
    """The attribute and .get access the plugin uses on job.resources."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


# ---------------------------------------------------------------------------- the cluster


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    dir: Path
    env: dict
    partition: str
    cpus: int
    mem_mb: int
    log: list = field(default_factory=list)

    def cmd(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return run(list(args), env=self.env, timeout=timeout)

    def daemon_logs(self) -> str:
        try:
            return run(["bash", str(CLUSTER_SH), "logs", str(self.dir)], env=self.env).stdout
        except Exception as e:  # noqa: BLE001 - diagnostics only
            return f"(cluster.sh logs failed: {e})"

    def jobs(self) -> list[tuple[str, str, str]]:
        """(job id, state, comment) of every job slurmctld still knows (MinJobAge=300)."""
        proc = self.cmd("squeue", "--states=all", "--noheader", "--format=%i|%T|%k")
        if proc.returncode != 0:
            return []
        return [tuple(line.split("|", 2)) for line in proc.stdout.splitlines()
                if line.count("|") >= 2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (slurmd; tests/slurm/cluster.sh)")
    path = _sbin_path()
    missing = [t for t in CLIENTS + DAEMONS if shutil.which(t, path=path) is None]
    if missing:
        pytest.skip(f"SLURM/munge not installed (missing {', '.join(missing)}): "
                    "apt-get install -y slurm-wlm munge")
    folder = tmp_path_factory.mktemp("slurm")
    # srun inside a job: snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable
    # but a few job ids before it calls srun, SLURM_CONF included; real clusters keep their
    # config in /etc/slurm (or run configless), this private one lives in `folder`, so srun is
    # wrapped to find it (docs/cluster.md).
    shim = folder / "bin"
    shim.mkdir()
    (shim / "srun").write_text(f"#!/bin/sh\nSLURM_CONF={folder / 'slurm.conf'}\n"
                               f"export SLURM_CONF\nexec {shutil.which('srun', path=path)} \"$@\"\n")
    (shim / "srun").chmod(0o755)
    env = {**os.environ, "PATH": os.pathsep.join([str(shim), str(BIN), path]),
           "SLURM_CONF": str(folder / "slurm.conf"),
           "SLURMCTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port())}
    for var in [v for v in env if v.startswith(("SLURM_JOB", "SBATCH_", "SRUN_"))]:
        del env[var]
    cl = Cluster(folder, env, "", 0, 0)
    try:
        try:
            proc = run(["bash", str(CLUSTER_SH), "start", str(folder)], env=env,
                       timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"cluster.sh start took more than {START_TIMEOUT} s\n"
                        f"{cl.daemon_logs()}")
        if proc.returncode != 0:
            pytest.fail(f"cluster.sh start failed (exit {proc.returncode}):\n{proc.stdout}\n"
                        f"{proc.stderr}\n{cl.daemon_logs()}")
        info = cl.cmd("sinfo", "--noheader", "--format=%P|%c|%m").stdout.split()
        assert info, f"sinfo shows no partition\n{cl.daemon_logs()}"
        partition, cpus, mem = info[0].split("|")
        cl.partition, cl.cpus, cl.mem_mb = partition.rstrip("*"), int(cpus), int(mem)
        yield cl
    finally:
        _drain(cl)
        run(["bash", str(CLUSTER_SH), "stop", str(folder)], env=env)


def _drain(cl: Cluster) -> None:
    """Cancel jobs still queued or running (a failed or timed-out run) and wait, bounded."""
    if not (cl.dir / "slurm.conf").exists():
        return
    try:
        cl.cmd("scancel", "--full", "--user", os.environ.get("USER", "root"))
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.monotonic() < deadline:
            if not [j for j in cl.jobs() if j[1] in ("PENDING", "RUNNING", "COMPLETING")]:
                return
            time.sleep(1)
    except Exception:  # noqa: BLE001 - teardown goes on to stop the daemons
        pass


# ---------------------------------------------------------------------------- the runs


def snakemake_popen(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([SNAKEMAKE, *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Interrupt snakemake (it cancels its SLURM jobs), then kill it, bounded."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def slurm_overrides(cl: Cluster) -> list[str]:
    """The profile's default and per-rule resources with the local account and partition and
    memory requests capped at the node's RealMemory (CI machines have less than the 16 GB the
    profile asks for training); on the command line these replace the profile's own lists."""
    prof = profile()
    default = {**prof["default-resources"], "slurm_account": "", "slurm_partition": cl.partition}
    args = ["--default-resources"]
    for key, value in default.items():
        if key == "mem_mb":
            value = min(int(value), cl.mem_mb)
        args.append(f"{key}={value}")
    args.append("--set-resources")
    for rule, res in prof["set-resources"].items():
        for key, value in res.items():
            if key == "mem_mb":
                value = min(int(value), cl.mem_mb)
            args.append(f"{rule}:{key}={value}")
    return args


@dataclass
class SlurmRun:
    returncode: int | None
    log: Path
    seconds: float
    results: Path
    cancelled: str | None = None      # the SLURM job id that was scancel'ed
    cancel_note: str = ""
    submissions: list = field(default_factory=list)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    threads = max(int(v.get("threads", 1)) for v in
                  yaml.safe_load(SMOKE_CONFIG.read_text())["resources"].values())
    if cluster.cpus < threads:
        pytest.skip(f"the local node has {cluster.cpus} CPUs, the smoke config asks for {threads}")
    folder = tmp_path_factory.mktemp("slurm_run")
    cfg = write_config(folder, SLURM_DATASET)
    results = ROOT / "results" / SLURM_DATASET
    shutil.rmtree(results, ignore_errors=True)
    log = folder / "snakemake.log"
    args = ["--workflow-profile", str(PROFILE), "--configfile", str(cfg),
            *slurm_overrides(cluster)]
    start = time.monotonic()
    proc = snakemake_popen(args, cluster.env, log)
    ckpt_dir = results / "models" / "checkpoints"
    model = results / "models" / "voxelmorph.pt"
    cancelled, note = None, ""
    try:
        deadline = start + RUN_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if cancelled is None and not note:
                for jobid, state, comment in cluster.jobs():
                    if not comment.startswith(f"rule_{CANCEL_RULE}_") or state != "RUNNING":
                        continue
                    if not any(ckpt_dir.glob(CANCEL_CHECKPOINT)):
                        continue  # running, first checkpoint not written yet
                    res = cluster.cmd("scancel", jobid)
                    if res.returncode != 0 or model.exists():
                        note = (f"scancel {jobid} came too late (exit {res.returncode}: "
                                f"{res.stderr.strip()}; model exists: {model.exists()})")
                    else:
                        cancelled = jobid
                if cancelled is None and not note and model.exists():
                    note = f"{CANCEL_RULE} finished before the test saw it running"
            time.sleep(0.5)
        if proc.poll() is None:
            stop(proc)
            note += f" snakemake did not finish within {RUN_TIMEOUT} s"
    finally:
        stop(proc)
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    submissions = re.findall(
        r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+?)/", text)
    print(f"\nSLURM run: {seconds:.0f} s, exit {proc.returncode}, {len(submissions)} sbatch "
          f"submissions, cancelled {cancelled} {note}")
    return SlurmRun(proc.returncode, log, seconds, results, cancelled, note.strip(),
                    submissions)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same config run locally (snakemake --cores 2, the default workflow profile)."""
    folder = tmp_path_factory.mktemp("local_run")
    cfg = write_config(folder, LOCAL_DATASET)
    results = ROOT / "results" / LOCAL_DATASET
    shutil.rmtree(results, ignore_errors=True)
    log = folder / "snakemake.log"
    start = time.monotonic()
    proc = snakemake_popen(["--cores", "2", "--configfile", str(cfg)], venv_env(), log)
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop(proc)
    seconds = time.monotonic() - start
    print(f"\nlocal run: {seconds:.0f} s, exit {proc.returncode}")
    return SimpleNamespace(returncode=proc.returncode, log=log, seconds=seconds,
                           results=results)


def diagnostics(cl: Cluster, r: SlurmRun) -> str:
    text = r.log.read_text(errors="replace") if r.log.exists() else ""
    failed_logs = sorted(set(re.findall(r"(\S+/slurm_logs/\S+\.log)", text)))[-3:]
    parts = [f"--- snakemake (exit {r.returncode}, {r.seconds:.0f} s) {r.cancel_note}",
             tail(r.log, 120)]
    for f in failed_logs:
        parts += [f"--- {f}", tail(Path(f), 40)]
    parts += ["--- daemons", cl.daemon_logs()]
    return "\n".join(parts)


# ---------------------------------------------------------------------------- integration


@pytest.mark.slow
def test_smoke_workflow_completes_on_slurm(cluster, slurm_run):
    assert slurm_run.returncode == 0, diagnostics(cluster, slurm_run)
    assert (slurm_run.results / "table2.csv").exists(), diagnostics(cluster, slurm_run)
    rules = {rule for _, rule in slurm_run.submissions}
    # every job ran as a SLURM job (none locally but the target rule `all`)
    assert {"phantom", "validate", "preprocess", "table2", "provenance", *GPU_RULES} <= rules, \
        diagnostics(cluster, slurm_run)


@pytest.mark.slow
def test_cancelled_job_is_resubmitted_and_resumes(cluster, slurm_run):
    """scancel of the running train_voxelmorph job: the plugin sees CANCELLED through squeue,
    Snakemake submits the job again (profile `retries`), the new job resumes from the job's
    rolling checkpoint and the workflow completes."""
    diag = diagnostics(cluster, slurm_run)
    assert slurm_run.cancelled, f"no job was cancelled: {slurm_run.cancel_note}\n{diag}"
    text = slurm_run.log.read_text(errors="replace")
    assert f"SLURM-job '{slurm_run.cancelled}' failed, SLURM status is: 'CANCELLED'" in text, diag
    ids = [jobid for jobid, rule in slurm_run.submissions if rule == CANCEL_RULE]
    assert slurm_run.cancelled in ids and len(ids) >= 2 and ids[-1] != slurm_run.cancelled, \
        f"{CANCEL_RULE} submissions {ids}\n{diag}"
    assert slurm_run.returncode == 0, diag
    every = yaml.safe_load(SMOKE_CONFIG.read_text())["voxelmorph"]["checkpoint_every"]
    train_log = slurm_run.results / "logs" / f"{CANCEL_RULE}.log"
    resumed = re.findall(r"resuming VoxelMorph-MIND from step (\d+)",
                         train_log.read_text(errors="replace"))
    assert resumed == [str(every)], f"{train_log}:\n{tail(train_log, 20)}\n{diag}"


@pytest.mark.slow
def test_table_equals_local_run(cluster, slurm_run, request):
    """The SLURM run (with the cancelled and resumed training) and a local run of the same
    config give byte-identical Table 2 on the CPU."""
    assert slurm_run.returncode == 0, diagnostics(cluster, slurm_run)
    local = request.getfixturevalue("local_run")
    assert local.returncode == 0, f"local run failed:\n{tail(local.log, 120)}"
    got = (slurm_run.results / "table2.csv").read_bytes()
    want = (local.results / "table2.csv").read_bytes()
    assert got == want, (f"table2.csv differs\n--- SLURM ({slurm_run.results})\n"
                         f"{got.decode()}\n--- local ({local.results})\n{want.decode()}")
