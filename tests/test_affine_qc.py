"""The affine quality check (suitsbench.affineqc): hand-computed overlap and NMI, the verdicts
on synthetic volumes (aligned, a slab left 40 mm from its anatomy, fields of view that barely
overlap), the per-image majority, the table file, the messages and Table 2's caption line;
and (slow) the workflow: on_failure warn writes the table and warns, stop fails before any
test pair is registered."""
from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from scipy import ndimage

from suitsbench.affineqc import (QCSettings, affine_qc, features, fov_overlap, lattice_spacing,
                                 nmi, residual_shift, verdict)
from suitsbench.qctable import (failure_message, flagged, image_rows, read_qc, select_pairs,
                                table_note, write_qc)
from suitsbench.errors import InputError

N, VOX = 32, 5.0                        # 160 mm cube at 5 mm
AFFINE = np.diag([VOX, VOX, VOX, 1.0])
PAIR = "b_ct__to__a_mr"


@pytest.fixture(scope="module")
def volumes():
    """A textured 'MR' (fixed) and the same anatomy as a 'CT' (other intensities, noise)."""
    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.standard_normal((N, N, N)), 2.0)
    base = (base - base.mean()) / base.std()

    def ct(x):
        return np.tanh(2 * x) ** 2 + 0.05 * rng.standard_normal(x.shape)

    return base.astype(np.float32), ct


def slab_mask(lo: int = 10, hi: int = 22) -> np.ndarray:
    m = np.zeros((N, N, N), bool)
    m[:, :, lo:hi] = True                # 12 slices of 5 mm: a 60 mm slab
    return m


FULL = np.ones((N, N, N), bool)


def pair_row(images) -> dict:
    rows = affine_qc(images, AFFINE, {PAIR: "test"})
    assert [r["kind"] for r in rows] == ["image", "image", "pair"]
    return rows[-1]


# ---------------------------------------------------------------- hand-computed scores


def test_fov_overlap_is_the_intersection_over_the_smaller_mask():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True                         # 32 voxels
    b[1:, :2] = True                     # 24 voxels, 8 of them in a
    assert fov_overlap(a, b) == pytest.approx(8 / 24)
    assert fov_overlap(a, a) == 1.0
    assert fov_overlap(a, np.zeros_like(a)) == 0.0


def test_nmi_of_identical_and_of_independent_images():
    a = np.array([0.0, 0.0, 1.0, 1.0])
    b = np.array([0.0, 1.0, 0.0, 1.0])
    mask = np.ones(4, bool)
    assert nmi(a, a, mask, bins=2) == pytest.approx(2.0)     # (ln 2 + ln 2) / ln 2
    assert nmi(a, b, mask, bins=2) == pytest.approx(1.0)     # (ln 2 + ln 2) / ln 4
    assert math.isnan(nmi(a, np.ones(4), mask, bins=2))      # constant image


def test_verdict_thresholds():
    s = QCSettings(min_overlap=0.5, max_shift_mm=20.0, margin=0.1)
    assert verdict(0.49, -0.3, 24.0, s)[0] == "low_overlap"
    assert verdict(0.9, 0.11, 42.0, s)[0] == "misaligned"
    assert "42 mm" in verdict(0.9, 0.11, 42.0, s)[1]
    assert verdict(0.9, 0.09, 42.0, s)[0] == "ok"
    assert verdict(0.9, float("nan"), float("nan"), s)[0] == "ok"


# ---------------------------------------------------------------- verdicts on volumes


def test_an_aligned_pair_is_ok(volumes):
    mr, ct = volumes
    row = pair_row({"a_mr": (mr, FULL), "b_ct": (ct(mr), slab_mask())})
    assert row["verdict"] == "ok", row
    assert row["overlap"] == 1.0
    assert row["gain"] < 0                # no translation beyond 20 mm beats none


def test_a_slab_40_mm_from_its_anatomy_is_misaligned(volumes):
    mr, ct = volumes
    moved = np.roll(mr, 8, axis=2)        # the slab shows the anatomy 40 mm below
    row = pair_row({"a_mr": (mr, FULL), "b_ct": (ct(moved), slab_mask())})
    assert row["verdict"] == "misaligned", row
    assert row["shift_mm"] == pytest.approx(40.0, abs=5.0)
    assert row["gain"] > 0.5
    assert row["overlap"] == 1.0          # the fields of view overlap: only the check finds it


def test_fields_of_view_that_barely_overlap_are_low_overlap(volumes):
    mr, ct = volumes
    upper, lower = np.zeros((N, N, N), bool), np.zeros((N, N, N), bool)
    upper[:, :, :16] = True
    lower[:, :, 13:] = True               # 3 of 16 slices in common
    row = pair_row({"a_mr": (mr, upper), "b_ct": (ct(mr), lower)})
    assert row["verdict"] == "low_overlap", row
    assert row["overlap"] == pytest.approx(3 / 16)


def test_residual_shift_scores_zero_best_for_identical_features(volumes):
    mr, _ = volumes
    s = lattice_spacing(AFFINE, [FULL])
    assert s == 8.0                       # 160 mm / 12 cells, at most 8 mm
    f = features(mr, FULL, AFFINE, s)
    zero, far, shift = residual_shift(f, f, QCSettings())
    assert zero == pytest.approx(0.0, abs=1e-9)
    assert far > 0.2 and shift > 20.0


def test_images_on_different_grids_are_refused(volumes):
    mr, ct = volumes
    with pytest.raises(InputError, match="b_ct"):
        affine_qc({"a_mr": (mr, FULL), "b_ct": (ct(mr)[:-1], FULL[:-1])}, AFFINE, {PAIR: "test"})


# ---------------------------------------------------------------- per image, file, messages


def row(pair: str, v: str, role: str = "test") -> dict:
    return {"kind": "pair", "id": pair, "role": role, "n_pairs": 1, "overlap": 1.0, "nmi": 1.1,
            "mind_ssd": 1.0, "cost_zero": 0.5, "cost_far": 0.7, "shift_mm": 24.0,
            "gain": 0.3 if v == "misaligned" else -0.4, "verdict": v, "reason": "r"}


def test_an_image_is_flagged_when_most_of_its_pairs_are():
    pairs = [row("c1__to__slab", "misaligned"), row("c2__to__slab", "misaligned"),
             row("c1__to__m2", "ok"), row("c2__to__m2", "ok")]
    images = {r["id"]: r for r in image_rows(pairs, ["c1", "c2", "slab", "m2"])}
    assert images["slab"]["verdict"] == "misaligned"
    assert images["slab"]["reason"] == "misaligned in 2 of 2 pairs"
    assert images["slab"]["gain"] == pytest.approx(0.3)      # median of its pairs
    for other in ("c1", "c2", "m2"):                          # half of c1's pairs: not most
        assert images[other]["verdict"] == "ok", images[other]
    # one pair: both images are named
    single = image_rows([row("ct__to__mr", "low_overlap")], ["ct", "mr"])
    assert [r["verdict"] for r in single] == ["low_overlap", "low_overlap"]


def test_checked_pairs_are_test_val_and_a_few_training_pairs_per_image():
    ct, mr = [f"c{k}_ct" for k in range(5)], [f"m{k}_mr" for k in range(5)]
    train = [f"{c}__to__{m}" for c in ct[2:] for m in mr[2:]]      # 3 x 3
    roles = select_pairs([f"{ct[0]}__to__{mr[0]}"], [f"{ct[1]}__to__{mr[1]}"], train,
                         per_image=2)
    assert roles[f"{ct[0]}__to__{mr[0]}"] == "test" and roles[f"{ct[1]}__to__{mr[1]}"] == "val"
    taken = [p for p, r in roles.items() if r == "train"]
    # taken when an image is in no pair yet or both are in fewer than 2
    assert taken == ["c2_ct__to__m2_mr", "c2_ct__to__m3_mr", "c2_ct__to__m4_mr",
                     "c3_ct__to__m2_mr", "c3_ct__to__m3_mr", "c4_ct__to__m2_mr",
                     "c4_ct__to__m4_mr"]
    images = {i for p in taken for i in p.split("__to__")}
    assert images == set(ct[2:] + mr[2:])                          # every image checked
    assert len(taken) < len(train)
    # with the default, every one of the default's 9 training pairs (3 per image) is taken
    assert len([p for p, r in select_pairs([], [], train).items() if r == "train"]) == 9


def test_qc_table_round_trip_and_bad_header(tmp_path):
    rows = [row("a__to__b", "ok"), row("c__to__b", "misaligned", "train")]
    rows[0]["cost_far"] = math.inf
    write_qc(tmp_path / "qc.tsv", rows)
    back = read_qc(tmp_path / "qc.tsv")
    assert [r["id"] for r in back] == ["a__to__b", "c__to__b"]
    assert back[0]["cost_far"] == math.inf and back[1]["gain"] == pytest.approx(0.3)
    assert flagged(back) == [back[1]]
    (tmp_path / "bad.tsv").write_text("kind\tid\n")
    with pytest.raises(InputError, match="bad.tsv"):
        read_qc(tmp_path / "bad.tsv")


def test_messages_name_the_flagged_pairs_and_the_fix():
    ok = [row("a__to__x", "ok"), row("b__to__x", "ok")]
    assert failure_message(ok, "affine QC") is None
    assert table_note(ok, ["a__to__x", "b__to__x"], "affine/qc.tsv") is None
    bad = [row("a__to__x", "ok"), row("b__to__x", "misaligned"),
           row("c__to__y", "low_overlap", "train")]
    message = failure_message(bad, "affine QC (log)", stop=True)
    assert "\n" not in message
    assert message.index("b__to__x") < message.index("c__to__y")     # test pairs first
    assert "2 of 3 pairs, 1 of 2 test pairs" in message
    assert "affine.init: search" in message and "on_failure: warn" in message
    assert "on_failure" not in failure_message(bad, "affine QC (log)")
    note = table_note(bad, ["a__to__x", "b__to__x"], "affine/qc.tsv")
    assert note == "Affine QC: 1 of 2 test pairs look misaligned (affine/qc.tsv)"


def test_table2_caption_ends_with_the_qc_line():
    import pandas as pd

    from suitsbench.table import caption, make_table2

    metrics = pd.DataFrame({"method": ["initial", "initial"], "pair": ["p1", "p2"],
                            "organ": ["liver", "liver"], "dice": [0.5, 0.6],
                            "hd95": [10.0, 12.0]})
    table = make_table2(metrics, methods=["initial"], organs=["liver"], reference=None)
    assert "Affine QC" not in caption(table)
    table.attrs["qc"] = "Affine QC: 1 of 2 test pairs look misaligned (affine/qc.tsv)"
    assert caption(table).endswith("Affine QC: 1 of 2 test pairs look misaligned "
                                   "(affine/qc.tsv).")


# ---------------------------------------------------------------- workflow


@pytest.mark.slow
@pytest.mark.workflow
def test_workflow_warns_or_stops_before_registration(tmp_path):
    """A tiny manifest phantom with affine.qc.min_overlap 0.99 (pairs whose fields of view
    do not coincide then overlap too little): warn writes affine/qc.tsv and a console warning
    naming them; stop fails with one line naming them and the fix, and the test pair is not
    registered."""
    from snakemake_run import ROOT, SMOKE_CONFIG, SNAKEMAKE, output_of, venv_env
    from suitsbench.phantom import generate

    data = tmp_path / "data"
    generate(data, n_per_modality=2, shape=(24, 24, 24), spacing=6.0, seed=0)
    dataset = "test-affine-qc"
    results = ROOT / "results" / dataset
    shutil.rmtree(results, ignore_errors=True)
    cfg = yaml.safe_load(SMOKE_CONFIG.read_text())
    cfg["dataset"] = dataset
    cfg["data"]["source"] = "manifest"
    cfg["data"]["manifest"] = str(data / "manifest.tsv")
    cfg["split"].update({"n_test": 1, "n_val": 0})
    cfg["affine"]["qc"] = {"on_failure": "warn", "min_overlap": 0.99}

    def run(*targets):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return subprocess.run([SNAKEMAKE, *targets, "--cores", "2", "--nolock",
                               "--configfile", str(path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=1200, env=venv_env())

    try:
        proc = run(f"results/{dataset}/affine/qc.tsv")
        assert proc.returncode == 0, output_of(proc)
        rows = read_qc(results / "affine" / "qc.tsv")
        bad = [r["id"] for r in flagged(rows)]
        assert bad and {r["verdict"] for r in flagged(rows)} == {"low_overlap"}, rows
        warning = [ln for ln in proc.stderr.splitlines() if ln.startswith("WARNING: affine QC")]
        assert warning and all(b in warning[0] for b in bad[:3]), output_of(proc)

        test_pair = next(r["id"] for r in rows if r["kind"] == "pair" and r["role"] == "test")
        cfg["affine"]["qc"]["on_failure"] = "stop"
        proc = run(f"results/{dataset}/fields/initial/{test_pair}.nii.gz")
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0, output_of(proc)
        lines = [ln for ln in text.splitlines()
                 if ln.startswith("affine QC") and bad[0] in ln and "; " in ln]
        assert lines and "affine.init: search" in lines[0], output_of(proc)
        assert "Traceback" not in text, output_of(proc)
        assert not (results / "fields").exists()
    finally:
        shutil.rmtree(results, ignore_errors=True)
