"""Validation Dice: how well a representation registers held-out pairs in the iterative scheme.

The score the trainers log every N steps and by which a best checkpoint is chosen: each
validation pair is registered with :func:`suits.register.register` (the test-time scheme), its
moving labels are warped by the field as the evaluator warps them (one-hot, trilinear per
channel, then argmax) and compared with the fixed labels; the score of a pair is the mean Dice
over the structures present in either map, the score of the set the mean over pairs.

:class:`ValidationLog` runs a trainer's validation measures on schedule and keeps them in its
rolling checkpoint; :func:`write_curve` writes the learning-curve TSV every trainer produces.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from suits.register import register
from suits.warp import warp_labels

__all__ = ["mean_dice", "pair_scores", "Validator", "ValidationLog", "final_score", "write_curve",
           "read_curve"]

logger = logging.getLogger(__name__)

Pair = Mapping[str, torch.Tensor]
FieldFn = Callable[[Pair], torch.Tensor]


def mean_dice(fixed_labels: torch.Tensor, warped_labels: torch.Tensor) -> float:
    """Mean Dice over the labels ``> 0`` present in either index map (``nan`` if none)."""
    a, b = fixed_labels.reshape(-1), warped_labels.reshape(-1)
    labels = torch.unique(torch.cat([a.unique(), b.unique()]))
    scores = []
    for v in labels[labels > 0].tolist():
        x, y = a == v, b == v
        scores.append(2.0 * float((x & y).sum()) / float(x.sum() + y.sum()))
    return sum(scores) / len(scores) if scores else float("nan")


def pair_scores(pairs: Sequence[Pair], field_of: FieldFn) -> list[float]:
    """Per pair, :func:`mean_dice` of the fixed labels and the moving labels warped by
    ``field_of(pair)`` (a ``(1, 3, D, H, W)`` field in voxels of the fixed grid)."""
    out = []
    for p in pairs:
        moving = p["moving_labels"].long()
        k = 1 + int(max(moving.max(), p["fixed_labels"].max()))
        with torch.no_grad():
            warped = warp_labels(moving, field_of(p).to(moving.device), k).argmax(1)
        out.append(mean_dice(p["fixed_labels"].long()[:, 0], warped))
    return out


@dataclass
class Validator:
    """Scores a model on validation pairs with the test-time registration settings.

    ``pairs``: dicts with ``fixed``, ``moving`` ``(1, 1, D, H, W)`` images and
    ``fixed_labels``, ``moving_labels`` index maps on the same grid (and optionally
    ``fixed_fov``, ``moving_fov`` field-of-view masks). ``register_kwargs`` go to
    :func:`suits.register.register` (``iterations``, ``lam``, ``warp_space``, ``solver``,
    modalities, ...). ``device``: where the pairs are registered (default: the model's).
    """

    pairs: Sequence[Pair]
    register_kwargs: dict = field(default_factory=dict)
    device: torch.device | str | None = None

    def _pair(self, p: Pair, device: torch.device) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in p.items() if isinstance(v, torch.Tensor)}

    def scores(self, model) -> list[float]:
        """Per-pair mean Dice after registering with ``model`` (left in its train/eval mode)."""
        params = next(iter(getattr(model, "parameters", lambda: iter(()))()), None)
        device = torch.device(self.device if self.device is not None else
                              (params.device if params is not None else "cpu"))
        was_training = bool(getattr(model, "training", False))
        if hasattr(model, "eval"):
            model.eval()
        try:
            def field_of(p: Pair) -> torch.Tensor:
                q = self._pair(p, device)
                return register(q["fixed"].float(), q["moving"].float(), model,
                                fixed_mask=q.get("fixed_fov"), moving_mask=q.get("moving_fov"),
                                **self.register_kwargs)
            return pair_scores([self._pair(p, device) for p in self.pairs], field_of)
        finally:
            if was_training:
                model.train()

    def __call__(self, model) -> float:
        """Mean over pairs of :meth:`scores`."""
        s = self.scores(model)
        return sum(s) / len(s)

    def initial(self) -> float:
        """The same score for the identity field (affine alignment only): the reference line."""
        s = pair_scores(self.pairs, lambda p: torch.zeros((1, 3, *p["fixed"].shape[-3:]),
                                                          device=p["fixed"].device))
        return sum(s) / len(s)


class ValidationLog:
    """The validations of a training loop of ``total`` steps: each measure
    (``name -> measure(model) -> float``, e.g. ``{"val_loss": ..., "val_dice": ...}``) taken
    before the first step, every ``every`` steps (0: never in between) and after the last, at
    most once per step.

    Its lists go into the loop's :class:`suits.checkpoint.RollingCheckpoint` (:meth:`history`),
    so a resumed run keeps the validations of before the interruption (:meth:`resumed`). With
    no measures it records nothing. Measures must not draw from the training's random
    generators.

    Use::

        log = ValidationLog(measures, every, total)
        rolling = RollingCheckpoint(..., {"losses": (losses, float), **log.history()}, ...)
        start, _ = rolling.resume(device)
        log.resumed(model, start)
        for step in range(start, total):
            ...
            log(model, step + 1)
            rolling.after_step(step + 1)
    """

    def __init__(self, measures: Mapping[str, Callable[[Any], float]], every: int = 0,
                 total: int = 0, name: str = "", keep_weights: bool = False) -> None:
        if int(every) < 0:
            raise ValueError(f"validate_every must be >= 0, got {every}")
        self.measures = dict(measures)
        self.every = int(every)
        self.total = int(total)
        self.name = name
        self.steps: list[int] = []
        self.values: dict[str, list[float]] = {k: [] for k in self.measures}
        self.keep_weights = bool(keep_weights)
        self.weights: list[dict] = []

    def history(self) -> dict[str, tuple[list, type, bool]]:
        """``RollingCheckpoint`` history entries: ``val_steps``, one list per measure and, with
        ``keep_weights``, the weights of every validated step."""
        out: dict[str, tuple[list, type, bool]] = {"val_steps": (self.steps, int, False)}
        out.update({k: (v, float, False) for k, v in self.values.items()})
        if self.keep_weights:
            out["val_weights"] = (self.weights, dict, False)
        return out

    def due(self, done: int) -> bool:
        """Whether step ``done`` is validated: step 0, a multiple of ``every``, the last."""
        return done == 0 or done == self.total or (self.every > 0 and done % self.every == 0)

    def resumed(self, model: Any, start: int) -> None:
        """After a resume from step ``start``: drop restored validations off the current
        schedule (the last step of a shorter run being extended), then validate ``start`` if
        due and missing (step 0 of a new run)."""
        keep = [n for n, s in enumerate(self.steps) if s <= start and self.due(s)]
        self.steps[:] = [self.steps[n] for n in keep]
        for values in self.values.values():
            values[:] = [values[n] for n in keep]
        self.weights[:] = [w for w in self.weights if w["step"] in self.steps]
        self(model, start)

    def __call__(self, model: Any, done: int) -> None:
        """Validate ``model`` after step ``done`` if it is due and not yet recorded (with
        ``keep_weights``: also keep a copy of its weights)."""
        if (not self.measures and not self.keep_weights) or not self.due(done) or (
                self.steps and self.steps[-1] == done):
            return
        scores = {k: float(m(model)) for k, m in self.measures.items()}
        for k, v in scores.items():
            self.values[k].append(v)
        self.steps.append(int(done))
        if self.keep_weights:
            self.weights.append({"step": int(done), "state": {
                k: v.detach().clone() for k, v in model.state_dict().items()}})
        logger.info("%sstep %d validation %s", f"{self.name} " if self.name else "", done,
                    " ".join(f"{k} {v:.4f}" for k, v in scores.items()))

    def snapshots(self) -> list[tuple[int, dict]]:
        """``[(step, state_dict), ...]`` of every validated step (``keep_weights``)."""
        return [(w["step"], w["state"]) for w in self.weights]

    def columns(self) -> dict[str, list[tuple[int, float]]]:
        """``{measure: [(step, value), ...]}`` of every validation so far."""
        return {k: list(zip(self.steps, v)) for k, v in self.values.items()}


def validator_for(rows: Sequence[Mapping], source, register_kwargs: Mapping,
                  fixed_modality: str, moving_modality: str,
                  device: torch.device | str | None = None) -> Validator | None:
    """A :class:`Validator` on the pairs of ``rows`` (:func:`suits.pairs.read_pairs` rows of
    the file ``source``), registering with ``register_kwargs`` and the two modalities;
    ``None`` when there are no rows (no validation set)."""
    from suits.pairs import load_pairs

    if not rows:
        return None
    return Validator(load_pairs(rows, source),
                     dict(register_kwargs, fixed_modality=str(fixed_modality),
                          moving_modality=str(moving_modality)), device=device)


def final_score(path) -> float | None:
    """The ``val_dice`` of the last step of a learning-curve TSV (:func:`write_curve`), or
    ``None`` when that step was not validated."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "val_dice" not in rows[0]:
        raise ValueError(f"{path}: not a learning-curve TSV (no val_dice column)")
    last = max(rows, key=lambda r: int(r["step"]))
    return float(last["val_dice"]) if last["val_dice"] else None


def write_curve(path, losses: Sequence[float], curve: Sequence[tuple[int, float]],
                initial: float | None = None,
                columns: Mapping[str, Sequence[tuple[int, float]]] | None = None) -> None:
    """A learning-curve TSV: one row per step from 0 with columns ``step``, ``loss`` (the
    training loss of that step; empty at step 0), the further ``columns`` in their order
    (``{name: [(step, value), ...]}``, e.g. ``val_loss``; empty where not validated),
    ``val_dice`` (``curve``'s ``(step, score)``, empty where not validated) and
    ``val_initial`` (the identity field's validation score, the reference line)."""
    from suits.atomic import write_text

    extra = {k: dict(v) for k, v in (columns or {}).items()}
    clash = sorted(set(extra) & {"step", "loss", "val_dice", "val_initial"})
    if clash:
        raise ValueError(f"write_curve: {clash} are fixed columns, not further columns")
    val = dict(curve)
    fmt = lambda x: "" if x is None else f"{x:.6g}"  # noqa: E731
    lines = ["\t".join(["step", "loss", *extra, "val_dice", "val_initial"])]
    for step in range(len(losses) + 1):
        loss = losses[step - 1] if step > 0 else None
        cells = [str(step), fmt(loss), *(fmt(v.get(step)) for v in extra.values()),
                 fmt(val.get(step)), fmt(initial)]
        lines.append("\t".join(cells))
    write_text(path, "\n".join(lines) + "\n")


def read_curve(path) -> tuple[list[float], dict[str, list[tuple[int, float]]]]:
    """The inverse of :func:`write_curve`: ``(losses, {column: [(step, value), ...]})`` with
    the further columns and ``val_dice`` (steps with a value only); ``val_initial`` is left
    out (:meth:`Validator.initial` recomputes it)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "step" not in rows[0] or "loss" not in rows[0]:
        raise ValueError(f"{path}: not a learning-curve TSV (no step and loss columns)")
    rows.sort(key=lambda r: int(r["step"]))
    losses = [float(r["loss"]) for r in rows if int(r["step"]) > 0]
    names = [k for k in rows[0] if k not in ("step", "loss", "val_initial")]
    columns = {k: [(int(r["step"]), float(r[k])) for r in rows if r[k]] for k in names}
    return losses, columns
