"""Validation Dice: how well a representation registers held-out pairs in the iterative scheme.

The score the trainers log every N steps and by which a best checkpoint is chosen: each
validation pair is registered with :func:`suits.register.register` (the test-time scheme), its
moving labels are warped by the field as the evaluator warps them (one-hot, trilinear per
channel, then argmax) and compared with the fixed labels; the score of a pair is the mean Dice
over the structures present in either map, the score of the set the mean over pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from suits.register import register
from suits.warp import warp_labels

__all__ = ["mean_dice", "pair_scores", "Validator", "write_curve"]

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
    ``fixed_labels``, ``moving_labels`` index maps on the same grid. ``register_kwargs`` go to
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


def write_curve(path, losses: Sequence[float], curve: Sequence[tuple[int, float]],
                initial: float | None = None) -> None:
    """A learning-curve TSV: one row per step from 0 with columns ``step``, ``loss`` (the
    training loss of that step; empty at step 0), ``val_dice`` (where validated, else empty)
    and ``val_initial`` (the identity field's validation score, the reference line)."""
    from suits.atomic import write_text

    val = dict(curve)
    fmt = lambda x: "" if x is None else f"{x:.6g}"  # noqa: E731
    lines = ["step\tloss\tval_dice\tval_initial"]
    for step in range(len(losses) + 1):
        loss = losses[step - 1] if step > 0 else None
        lines.append(f"{step}\t{fmt(loss)}\t{fmt(val.get(step))}\t{fmt(initial)}")
    write_text(path, "\n".join(lines) + "\n")
