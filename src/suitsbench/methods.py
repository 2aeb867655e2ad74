"""Registration methods that the workflow runs through its one generic rule (``register_module``).

A *module method* is a Python module with one function

    register(fixed, moving, fixed_affine, moving_affine, *, threads, device, **settings) -> u

``fixed``/``moving``: ``(1, 1, D, H, W)`` float32 tensors (the aligned images of one test pair),
the affines their 4x4 NIfTI affines, ``threads`` the job's thread count, ``device`` the
configured torch device, ``settings`` the method's config section. ``u``: the displacement
field ``(1, 3, D, H, W)`` on the fixed grid in fixed-grid voxels, channels ``i, j, k``, with
``warped(x) = moving(x + u(x))`` (the field contract, ``docs/architecture.md``; a numpy array
or a tensor). :func:`run` loads the images, calls it, checks the field and writes it with
``suits.io.save_field``. ``docs/adding-a-method.md`` walks through adding one.

The methods that ship with the benchmark are :data:`BUILTIN` (settings: the config section
named after the method); a config adds its own under ``custom_methods`` (module: a dotted name
or a ``.py`` file; settings inside the entry). This module imports neither of them until a
method is run.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["ModuleMethod", "BUILTIN", "module_methods", "load_register", "check_field", "run"]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class ModuleMethod:
    """One module method: its ``module`` (dotted name or ``.py`` path), conda ``env`` file (a
    name under ``workflow/envs/`` or a path), display ``name`` and ``settings``."""

    module: str
    env: str
    name: str
    settings: Mapping[str, Any]


#: method key -> (module, env under workflow/envs/, display name); settings: config[key]
BUILTIN: dict[str, tuple[str, str, str]] = {
    "convexadam": ("baselines.convex_adam", "convexadam", "ConvexAdam"),
    "ants": ("baselines.ants_syn", "ants", "ANTs SyN"),
}


def module_methods(config: Mapping[str, Any]) -> dict[str, ModuleMethod]:
    """Every module method a config can run: :data:`BUILTIN` (settings from the section named
    after the method, ``{}`` if absent) and the entries of ``custom_methods``."""
    out = {key: ModuleMethod(module, env, name, dict(config.get(key) or {}))
           for key, (module, env, name) in BUILTIN.items()}
    for key, entry in (config.get("custom_methods") or {}).items():
        if key in out:
            raise ValueError(f"custom_methods.{key}: {key!r} is a method the benchmark ships; "
                             f"choose another name")
        out[key] = ModuleMethod(str(entry["module"]), str(entry["env"]),
                                str(entry.get("name") or key), dict(entry.get("settings") or {}))
    return out


def load_register(module: str) -> Callable[..., Any]:
    """The ``register`` function of a module given as a dotted name or a ``.py`` file path."""
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise ImportError(f"{module}: method module not found; give an existing .py file or "
                              f"an importable dotted module name")
        name = f"suitsbench_method_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(module)
    fn = getattr(mod, "register", None)
    if not callable(fn):
        raise ImportError(f"{module}: a method module needs a function register(fixed, moving, "
                          f"fixed_affine, moving_affine, *, threads, device, **settings)")
    return fn


def check_field(u: Any, shape: tuple[int, ...], module: str):
    """``u`` as a float32 CPU tensor ``(1, 3, *shape)``; ``ValueError`` naming the module if it
    is not a finite field on the fixed grid."""
    import torch

    t = torch.as_tensor(u).detach().to("cpu", torch.float32)
    if t.dim() == 4:
        t = t[None]
    if tuple(t.shape) != (1, 3, *shape):
        raise ValueError(f"{module}: register() returned a field of shape {tuple(t.shape)}; the "
                         f"contract is (1, 3, {', '.join(map(str, shape))}) on the fixed grid")
    if not torch.isfinite(t).all():
        raise ValueError(f"{module}: register() returned a field with NaN or infinite values")
    return t


def run(module: str, fixed_path: PathLike, moving_path: PathLike, out_field: PathLike,
        settings: Mapping[str, Any] | None = None, threads: int | None = None,
        device: str = "cpu") -> float:
    """Register one pair with a module method and write its contract field (fixed image's
    affine, atomic). Returns the wall time of ``register`` in seconds."""
    from suits.io import load_volume, save_field

    register = load_register(module)
    fixed, fixed_affine = load_volume(fixed_path)
    moving, moving_affine = load_volume(moving_path)
    t0 = time.perf_counter()
    u = register(fixed, moving, fixed_affine, moving_affine, threads=threads, device=device,
                 **dict(settings or {}))
    seconds = time.perf_counter() - t0
    save_field(out_field, check_field(u, tuple(fixed.shape[-3:]), module), fixed_affine)
    return seconds
