"""Manifest reading: columns, path rule, layouts (phantom, VISCERAL-like, Learn2Reg, prostate)."""
from __future__ import annotations

from pathlib import Path

import pytest

from suitsbench.errors import InputError
from suitsbench.manifest import Record, read_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("|", "\t"))
    return path


def test_reads_rows_and_resolves_against_manifest_folder(tmp_path):
    m = _write(tmp_path / "data" / "manifest.tsv",
               "subject|modality|image|label\n"
               "p1|CT|img/p1_ct.nii.gz|lab/p1_ct.nii.gz\n"
               "p2|mr|/abs/p2.nii.gz|\n")
    recs = read_manifest(m)
    assert recs[0] == Record("p1", "ct", tmp_path / "data/img/p1_ct.nii.gz",
                             tmp_path / "data/lab/p1_ct.nii.gz", source=f"{m}:2")
    assert recs[0].id == "p1_ct"
    assert recs[1].image == Path("/abs/p2.nii.gz") and recs[1].label is None


def test_base_directive_and_override(tmp_path):
    m = _write(tmp_path / "config" / "set.tsv",
               "# base: ..\n# a comment\nsubject|modality|image|label\n"
               "s|mr|../shared/x.nii.gz|data/y.nii.gz\n")
    rec = read_manifest(m)[0]
    assert rec.image == (tmp_path / "../shared/x.nii.gz").resolve()
    assert rec.label == tmp_path / "data/y.nii.gz"
    assert rec.source == f"{m}:4"
    other = read_manifest(m, base_dir=tmp_path / "elsewhere")[0]
    assert other.label == tmp_path / "elsewhere/data/y.nii.gz"


def test_base_directive_after_header_is_a_plain_comment(tmp_path):
    m = _write(tmp_path / "m.tsv", "subject|modality|image|label\n# base: ..\ns|mr|x.nii|y.nii\n")
    assert read_manifest(m)[0].image == tmp_path / "x.nii"


def test_optional_columns(tmp_path):
    m = _write(tmp_path / "m.tsv", "subject|modality|image|label|role|pair|split\n"
               "c1|mr|a|b|moving|k1|Train\nc1|us|c|d|fixed|k1|test\n")
    a, b = read_manifest(m)
    assert (a.role, a.pair, a.split) == ("moving", "k1", "train")
    assert (b.role, b.split) == ("fixed", "test")


@pytest.mark.parametrize("text, where, needle", [
    ("subject,modality,image,label\np,ct,a,b\n", ":1", "missing column"),
    ("subject|modality|image|label\np|ct|a|b\np|ct|c|d\n", ":3", "already defined"),
    ("subject|modality|image|label|role\np|ct|a|b|moved\n", ":2", "role"),
    ("subject|modality|image|label\np||a|b\n", ":2", "empty 'modality'"),
    ("subject|modality|image|label\np q|ct|a|b\n", ":2", "subject"),
    ("subject|modality|image|label\np|ct|a|b|c\n", ":2", "fields"),
    ("subject|modality|image|label\n", "m.tsv", "no rows"),
    ("", "m.tsv", "empty"),
])
def test_bad_manifests_name_file_and_line(tmp_path, text, where, needle):
    m = _write(tmp_path / "m.tsv", text)
    with pytest.raises(InputError) as exc:
        read_manifest(m)
    msg = str(exc.value)
    assert f"{m}{where}" in msg if where.startswith(":") else where in msg
    assert needle in msg and "\n" not in msg and "; " in msg


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "nope.tsv")


def test_write_read_round_trip(tmp_path):
    p = write_manifest(tmp_path / "sub" / "m.tsv", [("a", "ct", "a.nii.gz", "")])
    rec = read_manifest(p)[0]
    assert rec.image == tmp_path / "sub" / "a.nii.gz" and rec.label is None


def test_visceral_like_layout(tmp_path):
    """VISCERAL gold corpus: volumes/<pid>_1_<modality>... one index label file per image."""
    ct, mr = "10000100_1_CTce_ThAb.nii.gz", "10000130_1_MRT1cefs_Ab.nii.gz"
    m = _write(tmp_path / "visceral.tsv", "subject|modality|image|label\n"
               f"10000100|ct|volumes/{ct}|labels/{ct}\n10000130|mr|volumes/{mr}|labels/{mr}\n")
    recs = read_manifest(m)
    assert [r.id for r in recs] == ["10000100_ct", "10000130_mr"]


def test_learn2reg_abdomen_mrct_layout(tmp_path):
    """Learn2Reg AbdomenMRCT: imagesTr/AbdomenMRCT_XXXX_0000 = MR, _0001 = CT; same patient."""
    mr, ct = "AbdomenMRCT_0001_0000.nii.gz", "AbdomenMRCT_0001_0001.nii.gz"
    m = _write(tmp_path / "AbdomenMRCT" / "manifest.tsv", "subject|modality|image|label|pair\n"
               f"0001|mr|imagesTr/{mr}|labelsTr/{mr}|0001\n"
               f"0001|ct|imagesTr/{ct}|labelsTr/{ct}|0001\n")
    recs = read_manifest(m)
    assert recs[1].image == tmp_path / "AbdomenMRCT/imagesTr/AbdomenMRCT_0001_0001.nii.gz"
    assert {r.pair for r in recs} == {"0001"}


def test_prostate_manifest_in_config(prostate_dir):
    recs = read_manifest(ROOT / "config" / "prostate-mr-us.tsv")
    assert len(recs) == 54
    assert all(r.image.is_file() and r.label.is_file() for r in recs)
    assert {r.modality for r in recs} == {"mr", "us"}
    assert all((r.role == "moving") == (r.modality == "mr") for r in recs)
    assert sum(r.split == "test" for r in recs) == 4
    assert sorted({r.subject for r in recs if r.split == "val"}) == [
        f"case0000{i:02d}" for i in (4, 9, 14, 19, 24)]
    case = next(r for r in recs if r.id == "case000002_us")
    expected = prostate_dir / "train" / "fixed_labels" / "case000002.nii.gz"
    assert case.label.resolve() == expected.resolve()   # ../shared may be a symlink
