"""The SimpleElastix-MI parameter map (paper Sec. 4.1), as a plain ``dict`` a workflow can list
and override.

Starting point: elastix's own ``GetDefaultParameterMap("bspline", n)`` for the effective number
of resolutions ``n`` (4 unless overridden: ``AdvancedMattesMutualInformation`` +
``TransformBendingEnergyPenalty``, adaptive stochastic gradient descent, 256 iterations, 2048
random samples, smoothing pyramids, a control-grid schedule of one entry per resolution), so an
override of ``NumberOfResolutions`` alone keeps every per-resolution schedule consistent.
Changes, each one a key in :data:`OVERRIDES`:

- ``FinalGridSpacingInVoxels`` 4 (the paper's "control point spacing of every 4th voxel"),
  replacing the default ``FinalGridSpacingInPhysicalUnits`` 8 mm (elastix refuses both);
- ``BSplineTransformSplineOrder`` 2 (the paper: "quadratic B-spline transformations"; elastix's
  default is 3, cubic);
- ``RandomSeed`` fixed, so the random coordinate sampler is deterministic;
- ``WriteResultImage`` false (only the transform is used; the field comes from transformix).

Values follow elastix: every value is a tuple of strings. :func:`parameter_map` accepts
overrides as scalars, sequences or ``None`` (``None`` removes the key).
"""
from __future__ import annotations

import numbers
import re
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["DEFAULT_SEED", "OVERRIDES", "check_overrides", "parameter_map", "to_elastix", "format_map"]

DEFAULT_SEED = 121212
OVERRIDES: dict[str, Any] = {
    "NumberOfResolutions": 4,
    "FinalGridSpacingInPhysicalUnits": None,
    "FinalGridSpacingInVoxels": 4,
    "BSplineTransformSplineOrder": 2,
    "RandomSeed": DEFAULT_SEED,
    "WriteResultImage": False,
}


def _as_strings(value: Any) -> tuple[str, ...]:
    """An override value as elastix strings: bools ``"true"/"false"``, numbers via ``str``,
    sequences element-wise."""
    if isinstance(value, (str, bytes)):
        return (value.decode() if isinstance(value, bytes) else value,)
    if isinstance(value, (bool, np.bool_)):
        return ("true" if value else "false",)
    if isinstance(value, Sequence):
        return tuple(s for v in value for s in _as_strings(v))
    return (str(value),)


# per-resolution schedules and the value counts elastix accepts for n resolutions of a 3-D
# image: the control-grid schedule one value per resolution or one per resolution and axis
# (other counts stop elastix with "Invalid GridSpacingSchedule"); the pyramid schedules one per
# resolution and axis (with fewer elastix warns and silently uses its default pyramid)
_SCHEDULES = {"GridSpacingSchedule": (1, 3), "FixedImagePyramidSchedule": (3,),
              "MovingImagePyramidSchedule": (3,), "ImagePyramidSchedule": (3,)}
_MAX_RESOLUTIONS = 10


def _elastix_default(resolutions: int = 4) -> dict[str, tuple[str, ...]]:
    import SimpleITK as sitk

    if not hasattr(sitk, "GetDefaultParameterMap"):
        raise ImportError("the SimpleITK module has no elastix; install SimpleITK-SimpleElastix "
                          "(not plain SimpleITK): pip install 'suits-bench[baselines]'")
    return {k: tuple(v) for k, v in sitk.GetDefaultParameterMap("bspline", resolutions).items()}


def _resolutions(layers: Sequence[Mapping[str, Any]]) -> int:
    """The number of resolutions the layers end with (the last one that sets it wins)."""
    n: Any = OVERRIDES["NumberOfResolutions"]
    for layer in layers:
        if "NumberOfResolutions" in layer:
            n = layer["NumberOfResolutions"]
            if n is None:
                raise ValueError("elastix NumberOfResolutions cannot be removed (elastix would "
                                 "fall back to 3 levels with schedules made for another number): "
                                 "give an integer")
    values = _as_strings(n)
    text = values[0].strip() if len(values) == 1 and not isinstance(n, bool) else ""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MAX_RESOLUTIONS:
        raise ValueError(f"elastix NumberOfResolutions must be one integer from 1 to "
                         f"{_MAX_RESOLUTIONS}, got {n!r}")
    return int(text)


def _check_map(pm: Mapping[str, Any], n: int) -> None:
    """The consistency rules for a (partial) map with ``n`` resolutions: not both final grid
    spacings, per-resolution schedules of a length elastix accepts. Keys set to ``None`` are
    absent."""
    if (pm.get("FinalGridSpacingInVoxels") is not None
            and pm.get("FinalGridSpacingInPhysicalUnits") is not None):
        raise ValueError("set only one of FinalGridSpacingInVoxels / FinalGridSpacingInPhysicalUnits "
                         "(override the other with None)")
    for key, per_level in _SCHEDULES.items():
        if pm.get(key) is None:
            continue
        got = len(_as_strings(pm[key]))
        allowed = [n * k for k in per_level]
        if got not in allowed:
            counts = " or ".join(str(c) for c in allowed)
            what = "one per resolution" + (" and axis" if per_level == (3,) else
                                           ", or one per resolution and axis")
            raise ValueError(f"elastix {key} has {got} values but NumberOfResolutions is {n}: "
                             f"give {counts} values ({what}) or leave {key} unset")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, numbers.Number, np.generic))


def _is_value(value: Any) -> bool:
    """A scalar, or a non-empty list of scalars or of lists of scalars (flattened by elastix)."""
    if _is_scalar(value):
        return True
    if not isinstance(value, (list, tuple)) or not value:
        return False
    return all(_is_scalar(v) or (isinstance(v, (list, tuple)) and v and all(map(_is_scalar, v)))
               for v in value)


def check_overrides(overrides: Mapping[str, Any] | None) -> None:
    """Check parameter-map overrides without elastix (so the workflow can refuse a bad config
    before any job runs): keys are elastix parameter names, values scalars, lists of scalars or
    ``None``; ``NumberOfResolutions`` one integer (it cannot be removed); per-resolution
    schedules as long as elastix needs them; not both final grid spacings. Raises
    ``ValueError`` naming the key."""
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key):
            raise ValueError(f"elastix parameter name {key!r} is not an elastix parameter "
                             "(letters and digits, e.g. Metric1Weight)")
        if value is not None and not _is_value(value):
            raise ValueError(f"elastix parameter {key}: value {value!r} is not a number, a "
                             "string, a boolean, a non-empty list of them, or null")
    _check_map({**OVERRIDES, **overrides}, _resolutions([OVERRIDES, overrides]))


def parameter_map(overrides: Mapping[str, Any] | None = None,
                  final_grid_spacing_voxels: float | Sequence[float] | None = None,
                  seed: int | None = None) -> dict[str, tuple[str, ...]]:
    """The effective parameter map: elastix's B-spline default for the effective number of
    resolutions, then :data:`OVERRIDES`, then ``final_grid_spacing_voxels`` / ``seed`` if given,
    then ``overrides`` (a value ``None`` deletes the key). Returned sorted by key; values are
    tuples of strings. Raises ``ValueError`` for a per-resolution schedule whose length does not
    match ``NumberOfResolutions``."""
    layers: list[Mapping[str, Any]] = [OVERRIDES]
    extra: dict[str, Any] = {}
    if final_grid_spacing_voxels is not None:
        extra["FinalGridSpacingInVoxels"] = final_grid_spacing_voxels
    if seed is not None:
        extra["RandomSeed"] = int(seed)
    layers += [extra, dict(overrides or {})]
    check_overrides(overrides)
    n = _resolutions(layers)
    pm = _elastix_default(n)
    for layer in layers:
        for key, value in layer.items():
            if value is None:
                pm.pop(key, None)
            else:
                pm[str(key)] = _as_strings(value)
    _check_map(pm, n)
    return dict(sorted(pm.items()))


def to_elastix(pm: Mapping[str, Any]):
    """A ``SimpleITK.ParameterMap`` from a dict (values converted as by :func:`parameter_map`)."""
    import SimpleITK as sitk

    out = sitk.ParameterMap()
    for key, value in pm.items():
        out[str(key)] = _as_strings(value)
    return out


def format_map(pm: Mapping[str, Any]) -> str:
    """The map as an elastix parameter file text (``(Key "v1" "v2")`` per line, sorted)."""
    lines = []
    for key in sorted(pm):
        vals = " ".join(f'"{v}"' for v in _as_strings(pm[key]))
        lines.append(f"({key} {vals})")
    return "\n".join(lines) + "\n"
