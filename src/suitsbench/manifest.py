"""Data-set manifests: one TSV row per image, the only way data enter the benchmark.

Format (tab separated, UTF-8, one header row; lines starting with ``#`` are comments)::

    subject  modality  image  label  [role]  [pair]  [split]

- ``subject``: patient id (letters, digits, ``-``, ``_``, ``.``); ``modality``: e.g. ``ct``,
  ``mr``, ``us`` (lower-cased on reading). The image id is ``{subject}_{modality}``.
- ``image``, ``label``: NIfTI paths. ``label`` may be empty for an unlabelled image. A label file
  is either a 3-D index map (value -> organ via the ``data.labels`` config) or a 4-D
  multi-channel file (``X, Y, Z, C``; also ``X, Y, Z, 1, C``) where channel ``c`` (0-based)
  stands for label value ``c + 1``.
- ``role`` (optional): ``moving`` or ``fixed`` (informational; the split uses the configured
  moving/fixed modalities). ``pair`` (optional): pair key of paired data sets; the two rows
  sharing a key form one pair. ``split`` (optional): ``train``, ``val`` or ``test``, a fixed split.

Path rule: a relative path resolves against the **base folder**: the manifest's own folder,
or, if the file has a comment line ``# base: <dir>`` before the header, that ``<dir>``
(itself relative to the manifest's folder). ``read_manifest(path, base_dir=...)`` overrides both.
So a manifest in ``config/`` with ``# base: ..`` names files relative to the project root.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from suits.atomic import atomic_path
from suitsbench.errors import InputError, raise_all
from suitsbench.pairid import ID_PATTERN

__all__ = ["Record", "read_manifest", "write_manifest", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS"]

REQUIRED_COLUMNS = ("subject", "modality", "image", "label")
OPTIONAL_COLUMNS = ("role", "pair", "split")
_ID_RE = re.compile(f"^{ID_PATTERN}$")
_BASE_RE = re.compile(r"^#\s*base\s*:\s*(.+?)\s*$")


@dataclass(frozen=True)
class Record:
    """One manifest row. ``image``/``label`` are resolved absolute paths (``label`` may be None);
    ``source`` is ``"<manifest>:<line>"`` for error messages."""

    subject: str
    modality: str
    image: Path
    label: Path | None
    role: str | None = None
    pair: str | None = None
    split: str | None = None
    source: str = ""

    @property
    def id(self) -> str:
        """Image id ``{subject}_{modality}`` used for file names and pair ids."""
        return f"{self.subject}_{self.modality}"


def _resolve(value: str, base: Path) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p).resolve()


def read_manifest(path: str | os.PathLike, base_dir: str | os.PathLike | None = None
                  ) -> list[Record]:
    """Read a manifest TSV (format in the module docstring) into records, in file order.

    Raises :class:`InputError` naming the file and line for a missing file or column, an empty
    required field, a bad id, a bad ``role``/``split`` value or a duplicate image id; every bad
    row is reported at once (:class:`suitsbench.errors.InputErrors`, one line each). Files are
    not opened here (see :mod:`suitsbench.validate`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "manifest not found",
                         "check data.manifest in the config (relative to the working directory)")
    base = path.resolve().parent
    with open(path, newline="", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    body: list[tuple[int, str]] = []
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            m = _BASE_RE.match(line.strip())
            if m and not body:
                base = _resolve(m.group(1), path.resolve().parent)
            continue
        if line.strip():
            body.append((n, line))
    if base_dir is not None:
        base = Path(base_dir).resolve()
    if not body:
        raise InputError(str(path), "manifest is empty",
                         f"write a header row {' '.join(REQUIRED_COLUMNS)} and one row per image")
    header_line, header = body[0]
    columns = [c.strip().lower() for c in next(csv.reader([header], delimiter="\t"))]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"{path}:{header_line}", f"missing column(s) {', '.join(missing)} "
                         f"(found {columns}; is the file tab separated?)",
                         f"the header must name {', '.join(REQUIRED_COLUMNS)} separated by tabs")
    records: list[Record] = []
    seen: dict[str, str] = {}
    errors: list[InputError] = []
    for n, line in body[1:]:
        try:
            rec = _record(line, columns, base, f"{path}:{n}")
        except InputError as e:
            errors.append(e)
            continue
        if rec.id in seen:
            errors.append(InputError(rec.source, f"image id {rec.id} already defined at "
                                     f"{seen[rec.id]}", "give each (subject, modality) one row"))
            continue
        seen[rec.id] = rec.source
        records.append(rec)
    raise_all(errors)
    if not records:
        raise InputError(str(path), "manifest has a header but no rows", "add one row per image")
    return records


def _record(line: str, columns: list[str], base: Path, where: str) -> Record:
    """One data row as a :class:`Record`; :class:`InputError` naming ``where`` if it is bad."""
    values = next(csv.reader([line], delimiter="\t"))
    if len(values) > len(columns):
        raise InputError(where, f"{len(values)} fields for {len(columns)} columns",
                         "use one tab between fields and no tabs inside paths")
    row = {c: (values[i].strip() if i < len(values) else "") for i, c in enumerate(columns)}
    for c in ("subject", "modality", "image"):
        if not row[c]:
            raise InputError(where, f"empty '{c}'", f"fill in the '{c}' column")
    for c in ("subject", "modality"):
        if not _ID_RE.match(row[c]):
            raise InputError(where, f"{c} {row[c]!r} has characters other than letters, "
                             "digits, '.', '-', '_'", f"rename the {c}")
    role = row.get("role", "").lower() or None
    if role not in (None, "moving", "fixed"):
        raise InputError(where, f"role {role!r} is not 'moving' or 'fixed'",
                         "use moving, fixed or leave it empty")
    split = row.get("split", "").lower() or None
    if split not in (None, "train", "val", "test"):
        raise InputError(where, f"split {split!r} is not 'train', 'val' or 'test'",
                         "use train, val, test or leave it empty")
    return Record(subject=row["subject"], modality=row["modality"].lower(),
                  image=_resolve(row["image"], base),
                  label=_resolve(row["label"], base) if row["label"] else None,
                  role=role, pair=row.get("pair", "") or None, split=split, source=where)


def write_manifest(path: str | os.PathLike, rows: Iterable[Sequence[str] | dict],
                   columns: Sequence[str] = REQUIRED_COLUMNS, base: str | None = None) -> Path:
    """Write a manifest TSV atomically. ``rows`` are sequences in ``columns`` order or dicts;
    ``base`` writes a ``# base: <dir>`` line (see the path rule)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        if base is not None:
            fh.write(f"# base: {base}\n")
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") or "" for c in columns] if isinstance(r, dict) else
                       ["" if v is None else str(v) for v in r])
    return path
