"""Input validation before any expensive work.

:func:`validate_records` checks a manifest's records against the label config and the split
settings and reads every image and label fully once. Each problem is an
:class:`suitsbench.errors.InputError`, one line naming the manifest row and/or file and the
fix. Order: configuration and manifest bookkeeping first (cheap), then the files; the files'
problems are all collected before one :class:`suitsbench.errors.InputErrors` is raised.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np

from suitsbench.errors import InputError, raise_all
from suitsbench.manifest import Record
from suitsbench.split import Split, make_split

__all__ = ["validate_records", "validate_config", "check_plan", "check_labels_config",
           "read_nifti", "spatial_label_array", "check_image", "check_label"]


def check_labels_config(labels_map: Mapping, evaluate: Sequence[str] | None = None
                        ) -> dict[int, str]:
    """Normalise ``data.labels`` to ``{int value: name}`` and check ``data.evaluate`` names.

    Values must be integers 1..255 and names unique; every evaluated name must be in the map.
    """
    out: dict[int, str] = {}
    for k, name in dict(labels_map).items():
        try:
            v = int(k)
        except (TypeError, ValueError):
            raise InputError(f"data.labels.{k}", "label value is not an integer",
                             "map integer label values to organ names") from None
        if not 1 <= v <= 255 or float(k) != v:
            raise InputError(f"data.labels.{k}", "label value outside 1..255",
                             "use the values stored in the label files (0 is background)")
        if str(name) in out.values():
            raise InputError(f"data.labels.{k}", f"organ name {name!r} used twice",
                             "give every label value its own name")
        out[v] = str(name)
    if not out:
        raise InputError("data.labels", "no labels configured", "map label values to organ names")
    for name in evaluate or ():
        if name not in out.values():
            raise InputError("data.evaluate", f"organ {name!r} is not in data.labels "
                             f"({', '.join(out.values())})",
                             "fix the name or add it to data.labels")
    return out


def _gzip_broken(path: Path) -> bool:
    """True if ``path`` is gzip compressed and its stream cannot be read to the end."""
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return False
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (EOFError, zlib.error, OSError):
        return True
    return False


def read_nifti(path: Path | str, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file fully (array as stored, float64 for scaled data) and its affine.

    Missing, unreadable, truncated or corrupt files raise :class:`InputError`.
    """
    path = Path(path)
    prefix = f"{where}: {path}" if where else str(path)
    if not path.is_file():
        raise InputError(prefix, "file not found", "fix the path in the manifest (see the "
                         "path rule in config/README.md) or restore the file")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, float)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise InputError(prefix, f"corrupt or truncated file ({type(exc).__name__}: {exc})",
                         "re-download or re-export the file") from None
    except Exception as exc:  # nibabel raises various types for non-NIfTI input
        if _gzip_broken(path):
            raise InputError(prefix, "corrupt or truncated gzip file",
                             "re-download or re-export the file") from None
        raise InputError(prefix, f"not a readable NIfTI/image file ({type(exc).__name__}: "
                         f"{exc})", "convert it to NIfTI (.nii or .nii.gz)") from None
    # nibabel reads only the bytes it needs, so a damaged deflate stream can decode to garbage
    # voxels without an error: check the gzip CRC and length to the end of the stream
    if _gzip_broken(path):
        raise InputError(prefix, "corrupt or truncated gzip file (CRC or length check failed)",
                         "re-download or re-export the file")
    if not np.all(np.isfinite(affine)):
        raise InputError(prefix, "affine has NaN/inf", "fix the header (qform/sform)")
    return data, affine


def _squeeze_trailing(data: np.ndarray) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def spatial_label_array(data: np.ndarray) -> np.ndarray:
    """Label data as ``(X, Y, Z)`` index map or ``(X, Y, Z, C)`` channels (``X,Y,Z,1,C`` -> 4-D,
    trailing singleton axes dropped)."""
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    return _squeeze_trailing(data)


def check_image(data: np.ndarray, where: str) -> np.ndarray:
    """A 3-D, finite, non-constant image (trailing singleton axes dropped)."""
    data = _squeeze_trailing(data)
    if data.ndim != 3:
        raise InputError(where, f"image has shape {data.shape}, expected 3-D",
                         "give one 3-D volume per row (split 4-D series first)")
    if np.issubdtype(data.dtype, np.floating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputError(where, f"{int(bad.sum())} NaN/inf voxels",
                             "replace them (e.g. with the background value) before ingestion")
    if data.size == 0 or np.ptp(data) == 0:
        raise InputError(where, "image is constant (no contrast)",
                         "check the file: it is empty or was exported without data")
    return data


def check_label(data: np.ndarray, labels_map: Mapping[int, str], where: str,
                spatial_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A label file's data: 3-D index map with values in ``{0} | labels_map`` or 4-D channels
    in ``[0, 1]`` whose channel ``c`` (label value ``c + 1``) is in ``labels_map``."""
    data = spatial_label_array(data)
    if data.ndim not in (3, 4):
        raise InputError(where, f"label has shape {data.shape}, expected 3-D index map or "
                         "4-D (X, Y, Z, channels)", "export the labels as one of the two")
    if spatial_shape is not None and tuple(data.shape[:3]) != tuple(spatial_shape):
        raise InputError(where, f"label shape {tuple(data.shape[:3])} differs from image shape "
                         f"{tuple(spatial_shape)}", "use the label file that belongs to this "
                         "image (same grid)")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise InputError(where, "label has NaN/inf voxels", "fix the label file")
    known = sorted(labels_map)
    if data.ndim == 4:
        lo, hi = float(data.min()), float(data.max())
        if lo < 0 or hi > 1:
            raise InputError(where, f"4-D label channels hold values in [{lo:g}, {hi:g}], "
                             "expected [0, 1]", "store one binary/probability map per channel")
        extra = [c + 1 for c in range(data.shape[3]) if c + 1 not in labels_map
                 and data[..., c].any()]
        if extra:
            raise InputError(where, f"channel(s) {[v - 1 for v in extra]} = label value(s) "
                             f"{extra} not in data.labels {known}",
                             "add them to data.labels (channel c is label value c+1)")
        return data
    if np.issubdtype(data.dtype, np.integer) and data.size and data.min() >= 0:
        values = np.flatnonzero(np.bincount(data.ravel()))      # fast for big volumes
    else:
        values = np.unique(data)
    if np.issubdtype(values.dtype, np.floating) and np.any(
            np.abs(values - np.rint(values)) > 1e-3):
        raise InputError(where, "index label map has non-integer values",
                         "store labels as integers (nearest-neighbour, not interpolated)")
    values = np.rint(values)
    unknown = sorted(int(v) for v in values if v != 0 and int(v) not in labels_map)
    if unknown:
        raise InputError(where, f"label value(s) {unknown[:10]} not in data.labels {known}",
                         "add them to data.labels or remap the label file")
    return data


def _check_affines(a: np.ndarray, b: np.ndarray, tol: float, where: str) -> None:
    voxel = float(np.min(np.linalg.norm(a[:3, :3], axis=0)))
    diff = float(np.max(np.abs(a - b)))
    if diff > tol * max(voxel, 1e-6):
        raise InputError(where, f"label affine differs from the image affine by {diff:.4g} mm "
                         f"(tolerance {tol:g} voxel)", "use the label exported on the image's "
                         "grid, or fix the header")


def _check_split_records(records: Sequence[Record], moving: str, fixed: str, pairing: str,
                         n_test: int, folds: int, test_subjects: Sequence[str] | None,
                         n_val: int = 0) -> None:
    errors = [InputError(r.source, f"modality {r.modality!r} is neither the moving "
                         f"({moving!r}) nor the fixed ({fixed!r}) modality",
                         "set data.moving_modality/data.fixed_modality or drop the row")
              for r in records if r.modality not in (moving, fixed)]
    splits: dict[str, tuple[str, str]] = {}
    for r in records:
        if r.split:
            if r.subject in splits and splits[r.subject][0] != r.split:
                errors.append(InputError(
                    r.source, f"subject {r.subject} is in '{r.split}' here and in "
                    f"'{splits[r.subject][0]}' at {splits[r.subject][1]}",
                    "put all rows of a subject in the same split"))
            splits.setdefault(r.subject, (r.split, r.source))
    raise_all(errors)
    if test_subjects is not None and splits:
        clash = sorted(s for s in test_subjects if splits.get(s, ("test",))[0] == "train")
        if clash:
            raise InputError("split.test_subjects", f"subject(s) {clash} are in the train split "
                             "of the manifest", "remove them from one of the two lists")
    fixed_split = bool(splits) or test_subjects is not None
    need = (max(2, folds) if folds > 1 else n_test + 1) + n_val
    if pairing == "paired":
        units: dict[str, set] = {}
        for r in records:
            units.setdefault(r.pair or r.subject, set()).add(r.modality)
        for r in records:
            if units[r.pair or r.subject] != {moving, fixed}:
                other = fixed if r.modality == moving else moving
                raise InputError(r.source, f"pair {r.pair or r.subject!r} has no {other!r} "
                                 "partner", "every pair needs one moving and one fixed row")
        groups = {"pairs": list(units)}
    else:
        groups = {m: [r.subject for r in records if r.modality == m] for m in (moving, fixed)}
    if not fixed_split:
        for name, members in groups.items():
            if len(set(members)) < need:
                raise InputError(f"manifest ({name})", f"{len(set(members))} subject(s), the "
                                 f"split needs at least {need} (split.n_test={n_test}, "
                                 f"split.n_val={n_val}, split.folds={folds}, at least one for "
                                 "training)", "add data or lower split.n_test / split.n_val / "
                                 "split.folds")


def _check_files(r: Record, labels: Mapping[int, str], require_labels: bool,
                 affine_tol: float) -> None:
    """Read and check one record's image and label (each raises :class:`InputError`)."""
    errors: list[InputError] = []
    shape = None
    affine = None
    try:
        data, affine = read_nifti(r.image, r.source)
        shape = check_image(data, f"{r.source}: {r.image}").shape
    except InputError as e:
        errors.append(e)
    if r.label is None:
        if require_labels:
            errors.append(InputError(r.source, f"no label for {r.id}",
                                     "add the label path (labels are needed for training and "
                                     "evaluation)"))
        raise_all(errors)
        return
    where = f"{r.source}: {r.label}"
    try:
        ldata, laff = read_nifti(r.label, r.source)
        check_label(ldata, labels, where, spatial_shape=shape)
        if affine is not None:
            _check_affines(affine, laff, affine_tol, where)
    except InputError as e:
        errors.append(e)
    raise_all(errors)


def validate_records(records: Sequence[Record], labels_map: Mapping, *,
                     moving_modality: str = "ct", fixed_modality: str = "mr",
                     pairing: str = "unpaired", n_test: int = 2, folds: int = 1, fold: int = 0,
                     seed: int = 0, test_subjects: Sequence[str] | None = None, n_val: int = 0,
                     evaluate: Sequence[str] | None = None, require_labels: bool = True,
                     affine_tol: float = 0.01, read_files: bool = True) -> Split:
    """Check records, config and split; read every file. Returns the resulting :class:`Split`.

    ``affine_tol`` is in voxels (of the image). ``read_files=False`` skips the file checks.
    Raises :class:`InputError`; problems of the same stage (the rows' modalities and splits,
    then every image and label file) are collected and raised together
    (:class:`suitsbench.errors.InputErrors`, one line each), so that one run lists every bad
    file.
    """
    labels = check_labels_config(labels_map, evaluate)
    moving, fixed = moving_modality.lower(), fixed_modality.lower()
    if moving == fixed:
        raise InputError("data.moving_modality", f"moving and fixed modality are both {moving!r}",
                         "choose two different modalities")
    if not records:
        raise InputError("manifest", "no records", "add one row per image")
    _check_split_records(records, moving, fixed, pairing, n_test, folds, test_subjects, n_val)
    split = make_split(records, n_test, folds=folds, fold=fold, seed=seed, pairing=pairing,
                       moving_modality=moving, fixed_modality=fixed, test_subjects=test_subjects,
                       n_val=n_val)
    subject_of = {r.id: r.subject for r in records}
    train_subj = {subject_of[i] for i in split.train_ids}
    test_subj = {subject_of[i] for i in split.test_ids}
    both = sorted(train_subj & test_subj)
    if both:
        raise InputError("split", f"subject(s) {both[:5]} would be in train and test (shared "
                         "by both modalities)", "add a 'split' column to the manifest")
    if not split.test_pairs:
        raise InputError("split", "no test pairs", "check split.n_test, the modalities and "
                         "the manifest's split/pair columns")
    if not split.train_pairs:
        raise InputError("split", "no training pairs", "lower split.n_test / split.n_val or "
                         "add subjects")
    if n_val > 0 and not split.val_pairs:
        raise InputError("split", "no validation pairs", "raise split.n_val, mark subjects "
                         "'val' in the manifest's split column, or set split.n_val: 0")
    if not read_files:
        return split
    errors: list[InputError] = []
    for r in records:
        try:
            _check_files(r, labels, require_labels, affine_tol)
        except InputError as e:
            errors.append(e)
    raise_all(errors)
    return split


def _config_kwargs(config: Mapping) -> dict:
    """``validate_records`` keyword arguments from a config's ``data`` and ``split`` sections."""
    data = config.get("data", {}) or {}
    split_cfg = config.get("split", {}) or {}
    return dict(
        moving_modality=str(data.get("moving_modality", "ct")),
        fixed_modality=str(data.get("fixed_modality", "mr")),
        pairing=str(data.get("pairing", "unpaired")), n_test=int(split_cfg.get("n_test", 2)),
        folds=int(split_cfg.get("folds", 1)), seed=int(config.get("seed", 0)),
        test_subjects=split_cfg.get("test_subjects"), n_val=int(split_cfg.get("n_val", 0)),
        evaluate=data.get("evaluate"))


def check_plan(config: Mapping, records: Sequence[Record], *, files: bool = True) -> None:
    """The cheap part of validation, for planning a run (the workflow calls it when it is
    parsed, before any job): the label config, the records against the modalities and the
    split settings, the split of every fold (train and test pairs not empty, no subject on
    both sides) and, with ``files``, that every image and label named exists. No file is
    read; :func:`validate_config` does the rest. Raises :class:`InputError`."""
    kwargs = _config_kwargs(config)
    labels = (config.get("data", {}) or {}).get("labels") or {}
    for fold in range(max(1, kwargs["folds"])):
        validate_records(records, labels, fold=fold, read_files=False, **kwargs)
    if files:
        raise_all([InputError(f"{r.source}: {path}", "file not found",
                              "fix the path in the manifest (see the path rule in "
                              "config/README.md) or restore the file")
                   for r in records for path in (r.image, r.label)
                   if path is not None and not Path(path).is_file()])


def validate_config(config: Mapping, manifest: str | Path | None = None, *,
                    base_dir: str | Path | None = None, fold: int = 0,
                    read_files: bool = True) -> tuple[list[Record], Split]:
    """Read the manifest named by ``config['data']['manifest']`` (or ``manifest``, e.g. the
    phantom's ``raw/manifest.tsv``) and run :func:`validate_records` with the config's
    ``data`` and ``split`` settings (``split.test_subjects`` optional) and ``seed``.
    Returns ``(records, split)``."""
    from suitsbench.manifest import read_manifest

    data = config.get("data", {}) or {}
    path = manifest if manifest is not None else data.get("manifest")
    if not path:
        raise InputError("data.manifest", "no manifest given",
                         "set data.manifest to a TSV (see config/README.md) or use the phantom")
    records = read_manifest(path, base_dir=base_dir)
    split = validate_records(records, data.get("labels") or {}, fold=fold,
                             read_files=read_files, **_config_kwargs(config))
    return records, split
