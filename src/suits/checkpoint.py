"""Training checkpoints: weights, optimiser state, step, extras and every RNG state, atomically.

A checkpoint is one ``torch.save`` file (written to a temporary file beside the target and moved
into place with ``os.replace``) holding::

    {"format": 1, "step": int, "model": state_dict, "optimizer": state_dict | None,
     "extra": dict, "rng": {"torch": ByteTensor, "cuda": [ByteTensor] | None,
                            "numpy": tuple, "python": tuple}}

``load`` restores the model, the optimiser and all RNG states, so that training resumed from a
checkpoint continues exactly (bitwise on CPU) as an uninterrupted run would. Generators that
are not global (e.g. a ``torch.Generator`` used for sampling) belong in ``extra``
(``generator.get_state()``).

:class:`RollingCheckpoint` is the rolling checkpoint of a training loop (pre-training, SUITS
training, VoxelMorph-MIND): one file, resumed from if it exists, rewritten every few steps and
at the end.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from suits.atomic import atomic_path

__all__ = ["save", "load", "rng_state", "set_rng_state", "latest", "step_path", "RollingCheckpoint"]

FORMAT = 1
PathLike = str | os.PathLike


def rng_state() -> dict[str, Any]:
    """Current states of the torch CPU, torch CUDA (if available), numpy global and python RNGs."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`rng_state` (CUDA only when present on both sides)."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    np.random.set_state(state["numpy"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def save(path: PathLike, step: int, model: nn.Module,
         optimizer: torch.optim.Optimizer | None = None, **extra: Any) -> Path:
    """Write a checkpoint atomically; returns the path. ``extra`` must be picklable."""
    payload = {
        "format": FORMAT,
        "step": int(step),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": dict(extra),
        "rng": rng_state(),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load(path: PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
         map_location: torch.device | str | None = None,
         restore_rng: bool = True) -> tuple[int, dict[str, Any]]:
    """Restore a checkpoint into ``model`` (and ``optimizer``) and the RNG states.

    Returns ``(step, extra)``. ``map_location`` defaults to the device of the model's first
    parameter (CPU for a parameterless model), so tensors land where the model lives.
    Raises ``ValueError`` if an ``optimizer`` is given but the checkpoint has none.
    """
    if map_location is None:
        p = next(model.parameters(), None)
        map_location = p.device if p is not None else "cpu"
    # our own file format holds numpy/python RNG states, which weights_only=True rejects
    payload = torch.load(Path(path), map_location=map_location, weights_only=False)
    if not isinstance(payload, dict) or "model" not in payload or "step" not in payload:
        raise ValueError(f"{path}: not a suits checkpoint")
    model.load_state_dict(payload["model"])
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise ValueError(f"{path}: checkpoint has no optimiser state")
        optimizer.load_state_dict(payload["optimizer"])
    if restore_rng and payload.get("rng") is not None:
        set_rng_state(payload["rng"])
    return int(payload["step"]), dict(payload.get("extra") or {})


def step_path(folder: PathLike, step: int, prefix: str = "checkpoint") -> Path:
    """``folder/{prefix}_{step:08d}.pt``: the naming :func:`latest` understands."""
    return Path(folder) / f"{prefix}_{int(step):08d}.pt"


def latest(folder: PathLike, prefix: str = "checkpoint") -> Path | None:
    """The ``{prefix}_{step}.pt`` file in ``folder`` with the highest step, or ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.pt$")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return max(found)[1] if found else None


class RollingCheckpoint:
    """The rolling checkpoint of a training loop over ``total`` steps.

    Holds the model, the optimiser, the loop's sampling ``generator`` and its ``history`` lists
    (``{name: (list, type)}``, e.g. ``{"losses": (losses, float)}``), which the loop appends
    to: one entry per step, or, with a third element ``False`` (``(list, type, False)``), any
    number of entries (e.g. the validations so far, step 0 among them). Each checkpoint's ``extra`` holds the generator state, a copy of every
    history list and ``settings`` (``seed`` among them). ``path=None``: no checkpoint, every
    method does nothing.

    Use::

        rolling = RollingCheckpoint(path, model, opt, gen, total, every, history, settings, logger)
        start, extra = rolling.resume(device)
        for step in range(start, total):
            ...
            rolling.after_step(step + 1)
        if start < total:
            rolling.save(total)
    """

    def __init__(self, path: PathLike | None, model: nn.Module, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator, total: int, every: int,
                 history: Mapping[str, tuple[list, Callable[[Any], Any]]
                                  | tuple[list, Callable[[Any], Any], bool]],
                 settings: Mapping[str, Any], logger: logging.Logger | None = None,
                 name: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.total, self.every = int(total), int(every)
        self.history = dict(history)
        self.settings = dict(settings)
        self.logger = logger or logging.getLogger(__name__)
        self.name = name

    def resume(self, map_location: torch.device | str | None = None,
               check: Callable[[dict[str, Any]], None] | None = None) -> tuple[int, dict[str, Any]]:
        """If the file exists: restore the model, the optimiser, every RNG (:func:`load`), the
        generator and the history lists (per-step lists cut to the checkpoint's step), warn if it was written
        with another seed, call ``check(extra)`` (which raises on a mismatch) and return
        ``(step, extra)``; otherwise ``(0, {})``."""
        if self.path is None or not self.path.exists():
            return 0, {}
        start, extra = load(self.path, self.model, self.optimizer, map_location=map_location)
        self.generator.set_state(extra["generator"].cpu())
        for key, (values, kind, *per_step) in self.history.items():
            restored = [kind(x) for x in extra.get(key, [])]
            values[:] = restored[:start] if (per_step or [True])[0] else restored
        seed = self.settings.get("seed")
        if extra.get("seed", seed) != seed:
            self.logger.warning("checkpoint %s was written with seed %s, now %s", self.path,
                                extra.get("seed"), seed)
        if check is not None:
            check(extra)
        self.logger.info("resuming %sfrom step %d (%s)", f"{self.name} " if self.name else "",
                         start, self.path)
        return start, extra

    def save(self, step: int) -> None:
        """Write the checkpoint of ``step`` (atomically, :func:`save`)."""
        if self.path is not None:
            history = {key: list(spec[0]) for key, spec in self.history.items()}
            save(self.path, step, self.model, self.optimizer, generator=self.generator.get_state(),
                 **history, **self.settings)

    def after_step(self, done: int) -> None:
        """Save after step ``done`` if it is a multiple of ``every`` (> 0) before the last."""
        if self.every > 0 and done % self.every == 0 and done < self.total:
            self.save(done)
