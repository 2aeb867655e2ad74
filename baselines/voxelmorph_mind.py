"""VoxelMorph-MIND baseline (paper Sec. 4.1): voxelmorph 0.3.4's ``VxmPairwise`` trained with an
MSE loss on MIND-SSC features plus a diffusion regulariser.

Mapping to the paper. The paper used the public VoxelMorph (2019) with a UNet predicting a
dense displacement from the concatenated moving and fixed images. Here that is
``voxelmorph.nn.models.VxmPairwise(ndim=3, source_channels=1, target_channels=1,
integration_steps=0)``: with ``integration_steps=0`` the flow layer's output *is* the
displacement (no scaling-and-squaring), and the network input is ``cat([moving, fixed])``
(voxelmorph's ``source``/``target``). Everything else is voxelmorph's default (UNet features
``(16, 16, 16, 16, 16)``, ReLU, flow layer initialised N(0, 1e-5)); configurable via ``config``.

Loss: ``MSE(mind_ssc(warp(moving, u)), mind_ssc(fixed)) + reg_weight * diffusion(u)`` with
``diffusion(u)`` = the mean over the three axes of the mean squared forward difference of
``u`` (voxelmorph's ``Grad('l2')``, which 0.3.4 only keeps as a deprecated stub). Warping in the
loss is ``suits.warp.warp`` (border padding), the same function the evaluator uses.

Field-of-view masks. With masks (1 = voxel from the scan, 0 = padding) of which one has
padding, the MIND term is the mean over the voxels weighted by the fixed mask times the moving
mask warped by ``u`` (:func:`loss_weight`), so padding around a partial scan does not drive the
field; masks of all ones give the unmasked loss exactly.

Field convention. voxelmorph's flow is ``(B, ndim, *spatial)`` in voxels, channel ``c``
along spatial axis ``c`` (``ij`` meshgrid, ``align_corners=True``), i.e. exactly the contract
(channel 0 along ``D``); ``tests/test_voxelmorph_mind.py`` checks that ``suits.warp.warp`` with
it equals voxelmorph's ``SpatialTransformer`` (which pads with zeros instead of the border).

Shapes. The UNet pools ``len(nb_features)`` times, so every spatial size must be a multiple of
``2**len(nb_features)`` (32 by default). Inputs are padded at the high end of each axis
(replicate) to the next multiple, and the predicted field is cropped back to the input grid;
the loss only sees the cropped field.

Intensities. With ``normalise=True`` (default) each image is z-scored (over its volume)
before entering the network; MIND is computed on the images as given (it is invariant to
``a*x + b``).

Validation (optional, on held-out pairs with labels, every ``validate_every`` steps, before the
first and after the last): the training loss of each pair (``val_loss``, :func:`pair_loss`)
and the Dice of the moving labels warped by the predicted field (``val_dice``, the score of
``suits.validation.pair_scores``), both means over the pairs and kept in the checkpoint.
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from suits import checkpoint as ckpt
from suits.atomic import atomic_path
from suits.fov import binary_fov
from suits.mind import mind_ssc
from suits.validation import ValidationLog, pair_scores
from suits.warp import warp

__all__ = [
    "DEFAULT_CONFIG",
    "VxmMind",
    "diffusion_loss",
    "mind_loss",
    "loss_weight",
    "pair_loss",
    "validation_measures",
    "train",
    "register",
    "register_files",
    "save_model",
    "load_model",
]

logger = logging.getLogger(__name__)
PathLike = str | os.PathLike
Pair = tuple[torch.Tensor, torch.Tensor]

#: constructor configuration stored with the weights
DEFAULT_CONFIG: dict[str, Any] = {
    "nb_features": (16, 16, 16, 16, 16),
    "integration_steps": 0,
    "flow_initializer": 1e-5,
    "normalise": True,
    "pad_mode": "replicate",
}
MODEL_FORMAT = 1


def _zscore(x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


class VxmMind(nn.Module):
    """``VxmPairwise`` (integration_steps=0) behind the field contract.

    ``model(fixed, moving) -> u`` ``(B, 3, D, H, W)``: voxels of the input grid, channels
    ``D, H, W``, ``warp(moving, u) ≈ fixed``; any input size (padded/cropped internally).

    Args:
        config: overrides of :data:`DEFAULT_CONFIG` (``nb_features``, ``integration_steps``,
            ``flow_initializer``, ``normalise``, ``pad_mode``, ``unet_kwargs``).
        device: where the parameters live.
    """

    def __init__(self, config: Mapping[str, Any] | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        import voxelmorph as vxm

        cfg = {**DEFAULT_CONFIG, **dict(config or {})}
        cfg["nb_features"] = tuple(int(n) for n in cfg["nb_features"])
        unknown = set(cfg) - set(DEFAULT_CONFIG) - {"unet_kwargs"}
        if unknown:
            raise ValueError(f"unknown VoxelMorph config keys: {sorted(unknown)}")
        self.config: dict[str, Any] = cfg
        device = torch.device("cpu" if device is None else device)
        self.net = vxm.nn.models.VxmPairwise(
            ndim=3, source_channels=1, target_channels=1, nb_features=cfg["nb_features"],
            flow_initializer=cfg["flow_initializer"], integration_steps=int(cfg["integration_steps"]),
            device=str(device), unet_kwargs=cfg.get("unet_kwargs"))
        self.to(device)

    @property
    def multiple(self) -> int:
        """Every padded spatial size is a multiple of this (``2 ** len(nb_features)``)."""
        return 2 ** len(self.config["nb_features"])

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        m = self.multiple
        pads: list[int] = []
        for n in reversed(x.shape[-3:]):                     # F.pad order: W, H, D
            pads += [0, (-int(n)) % m]
        if not any(pads):
            return x
        return F.pad(x, pads, mode=self.config["pad_mode"])

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        if fixed.dim() != 5 or moving.dim() != 5 or fixed.shape[-3:] != moving.shape[-3:]:
            raise ValueError(f"fixed and moving must be (B, 1, D, H, W) on one grid, got "
                             f"{tuple(fixed.shape)} and {tuple(moving.shape)}")
        shape = fixed.shape[-3:]
        if self.config["normalise"]:
            fixed, moving = _zscore(fixed), _zscore(moving)
        flow = self.net(self._pad(moving), self._pad(fixed), return_field_type="displacement")
        return flow[..., : shape[0], : shape[1], : shape[2]]


def diffusion_loss(u: torch.Tensor) -> torch.Tensor:
    """Mean over the 3 axes of the mean squared forward difference of ``u`` (``Grad('l2')``)."""
    terms = [(torch.diff(u, dim=d) ** 2).mean() for d in (2, 3, 4)]
    return sum(terms) / 3.0


def mind_loss(warped: torch.Tensor, fixed_mind: torch.Tensor, radius: int = 2,
              dilation: int = 2, weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the MIND-SSC of ``warped`` and precomputed ``fixed_mind``; with ``weight``
    ``(B, 1, D, H, W)`` (>= 0) the squared differences are averaged with these voxel weights."""
    d = mind_ssc(warped, radius=radius, dilation=dilation)
    if weight is None:
        return F.mse_loss(d, fixed_mind)
    sq = (d - fixed_mind) ** 2 * weight
    return sq.sum() / (weight.expand_as(sq).sum()).clamp_min(1e-6)


def loss_weight(fixed_mask: torch.Tensor | None, moving_mask: torch.Tensor | None,
                u: torch.Tensor) -> torch.Tensor | None:
    """The voxel weight of :func:`mind_loss`: the fixed mask times the moving mask warped by
    ``u``; ``None`` when neither mask has padding (:func:`suits.fov.binary_fov`)."""
    fixed_mask = binary_fov(fixed_mask, "fixed mask")
    moving_mask = binary_fov(moving_mask, "moving mask")
    if fixed_mask is None and moving_mask is None:
        return None
    weight = torch.ones_like(u[:, :1]) if fixed_mask is None else fixed_mask.to(u)
    if moving_mask is not None:
        weight = weight * warp(moving_mask.to(u), u)
    return weight


def pair_loss(model: VxmMind, fixed: torch.Tensor, moving: torch.Tensor, reg_weight: float,
              mind_radius: int = 2, mind_dilation: int = 2,
              fixed_mind: torch.Tensor | None = None, fixed_mask: torch.Tensor | None = None,
              moving_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss of one pair: :func:`mind_loss` of the warped moving image plus
    ``reg_weight`` times :func:`diffusion_loss` of the predicted field (``fixed_mind``: the
    fixed image's MIND-SSC, computed if not given; ``fixed_mask``, ``moving_mask``:
    field-of-view masks weighting the MIND term, :func:`loss_weight`)."""
    if fixed_mind is None:
        fixed_mind = mind_ssc(fixed, radius=mind_radius, dilation=mind_dilation)
    u = model(fixed, moving)
    weight = loss_weight(fixed_mask, moving_mask, u)
    return mind_loss(warp(moving, u), fixed_mind, mind_radius, mind_dilation, weight) \
        + reg_weight * diffusion_loss(u)


def validation_measures(val_pairs: Sequence[Mapping[str, torch.Tensor]], reg_weight: float,
                        mind_radius: int = 2, mind_dilation: int = 2,
                        device: torch.device | str | None = None
                        ) -> dict[str, Callable[[VxmMind], float]]:
    """``{"val_loss": f, "val_dice": g}``: the mean over ``val_pairs`` (dicts with ``fixed``,
    ``moving``, ``fixed_labels``, ``moving_labels``, ``(1, 1, D, H, W)`` on one grid per pair,
    optionally ``fixed_fov``, ``moving_fov`` masks)
    of :func:`pair_loss` and of the Dice of the warped moving labels
    (``suits.validation.pair_scores``), each evaluated without a gradient in eval mode."""
    for n, p in enumerate(val_pairs):
        missing = [k for k in ("fixed", "moving", "fixed_labels", "moving_labels") if k not in p]
        if missing:
            raise ValueError(f"validation pair {n}: missing {missing}")
        grids = {tuple(p[k].shape[-3:]) for k in ("fixed", "moving", "fixed_labels",
                                                  "moving_labels")}
        if len(grids) != 1 or p["fixed"].dim() != 5:
            raise ValueError(f"validation pair {n}: images and labels must be (1, 1, D, H, W) "
                             f"on one grid, got {sorted(grids)}")
    device = torch.device("cpu" if device is None else device)
    pairs = [{k: v.to(device) for k, v in p.items() if isinstance(v, torch.Tensor)}
             for p in val_pairs]
    minds: dict[int, torch.Tensor] = {}

    def val_loss(model: VxmMind) -> float:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = []
                for n, p in enumerate(pairs):
                    fixed, moving = p["fixed"].float(), p["moving"].float()
                    if n not in minds:
                        minds[n] = mind_ssc(fixed, radius=mind_radius, dilation=mind_dilation)
                    out.append(float(pair_loss(model, fixed, moving, reg_weight, mind_radius,
                                               mind_dilation, minds[n], p.get("fixed_fov"),
                                               p.get("moving_fov"))))
        finally:
            model.train(was_training)
        return sum(out) / len(out)

    def val_dice(model: VxmMind) -> float:
        s = pair_scores(pairs, lambda p: register(model, p["fixed"], p["moving"]))
        return sum(s) / len(s)

    return {"val_loss": val_loss, "val_dice": val_dice}


def _check_pairs(pairs: Sequence[Pair]) -> None:
    if not pairs:
        raise ValueError("train needs at least one (fixed, moving) pair")
    for n, (f, m) in enumerate(pairs):
        if f.dim() != 5 or m.dim() != 5 or f.shape[-3:] != m.shape[-3:] or f.shape[:2] != (1, 1) \
                or m.shape[:2] != (1, 1):
            raise ValueError(f"pair {n}: fixed and moving must be (1, 1, D, H, W) on one grid, got "
                             f"{tuple(f.shape)} and {tuple(m.shape)}")


def _check_masks(pairs: Sequence[Pair], masks) -> list:
    """The masks per pair, checked against the pair's grid and made 0/1 (``None`` without
    padding, :func:`suits.fov.binary_fov`)."""
    if masks is None:
        return [(None, None)] * len(pairs)
    if len(masks) != len(pairs):
        raise ValueError(f"masks: {len(masks)} entries for {len(pairs)} pairs")
    checked = []
    for n, ((f, _), ms) in enumerate(zip(pairs, masks)):
        row = []
        for what, m in zip(("fixed", "moving"), ms):
            if m is not None and tuple(m.shape) != tuple(f.shape):
                raise ValueError(f"pair {n}: {what} mask {tuple(m.shape)} is not on the image "
                                 f"grid {tuple(f.shape)}")
            row.append(binary_fov(m, f"pair {n}: {what} mask"))
        checked.append(tuple(row))
    return checked


def train(pairs: Sequence[Pair], iterations: int, lr: float = 1e-4, reg_weight: float = 0.1,
          mind_radius: int = 2, mind_dilation: int = 2, seed: int = 0,
          checkpoint: PathLike | None = None, checkpoint_every: int = 500,
          device: torch.device | str | None = None, progress: bool = True,
          config: Mapping[str, Any] | None = None,
          log: Callable[[int, float], None] | None = None,
          val_pairs: Sequence[Mapping[str, torch.Tensor]] | None = None,
          validate_every: int = 0,
          curve: dict[str, list[tuple[int, float]]] | None = None,
          masks: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]] | None = None
          ) -> VxmMind:
    """Train VoxelMorph-MIND on ``(fixed, moving)`` pairs (batch 1, one pair drawn per step).

    Args:
        pairs: list of ``(fixed, moving)`` ``(1, 1, D, H, W)`` tensors, each pair on one grid
            (sizes may differ between pairs).
        iterations: total Adam steps (paper: 15000); a resumed run counts the steps done.
        lr: Adam learning rate (1e-4).
        reg_weight: weight of :func:`diffusion_loss` (0.1).
        mind_radius, mind_dilation: MIND-SSC parameters of the similarity term.
        seed: seeds the weight initialisation and the generator drawing the pairs.
        checkpoint: path of a rolling checkpoint file (``suits.checkpoint``); if it exists the
            run resumes from it (bitwise identical to an uninterrupted run on CPU).
        checkpoint_every: write it every this many steps and at the end.
        device: where to train (default CPU); pairs are moved there.
        progress: tqdm progress bar.
        config: model configuration (:data:`DEFAULT_CONFIG` overrides).
        log: ``log(step, loss)`` after every step (``step`` counts from 1).
        val_pairs: held-out pairs with labels (see :func:`validation_measures`); ``None`` or
            empty: no validation.
        validate_every: steps between validations, which also run before the first step and
            after the last (0: only those two).
        curve: if given, filled with ``{"val_loss": [(step, value), ...], "val_dice": [...]}``
            (also the validations before a resume, kept in the checkpoint).
        masks: per pair ``(fixed_mask, moving_mask)`` field-of-view masks on the pair's grid
            (either may be ``None``) weighting the MIND term (:func:`loss_weight`); ``None``:
            no masks.

    Returns:
        the trained :class:`VxmMind` (train mode off); ``model.losses`` holds every step's loss
        (including steps before a resume).
    """
    _check_pairs(pairs)
    masks = _check_masks(pairs, masks)
    device = torch.device("cpu" if device is None else device)
    with torch.random.fork_rng(devices=[]):              # seeded init, global RNG untouched
        torch.manual_seed(int(seed))
        model = VxmMind(config, device=device)
    model.train()
    measures = (validation_measures(val_pairs, reg_weight, mind_radius, mind_dilation, device)
                if val_pairs else {})
    validation = ValidationLog(measures, validate_every, iterations, "VoxelMorph-MIND")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    losses: list[float] = []
    rolling = ckpt.RollingCheckpoint(
        checkpoint, model, opt, gen, iterations, checkpoint_every,
        {"losses": (losses, float), **validation.history()},
        dict(config=model.config, seed=seed, lr=lr, reg_weight=reg_weight,
             mind_radius=mind_radius, mind_dilation=mind_dilation), logger, "VoxelMorph-MIND")
    path = rolling.path
    if path is not None and path.exists():
        # the weights of another config do not fit the model: compare before loading them
        saved = torch.load(path, map_location="cpu", weights_only=False).get("extra", {}).get("config")
        if saved != model.config:
            raise ValueError(f"{path}: checkpoint model config {saved} != {model.config}; "
                             "use the same config or another checkpoint path")
    start, _ = rolling.resume(device)
    validation.resumed(model, start)

    cache: dict[int, tuple] = {}

    def sample(idx: int) -> tuple:
        if idx not in cache:
            f, m = (t.to(device=device, dtype=torch.float32) for t in pairs[idx])
            # 0/1, or None without padding (_check_masks)
            fm, mm = (None if t is None else t.to(device) for t in masks[idx])
            with torch.no_grad():
                cache[idx] = (f, m, mind_ssc(f, radius=mind_radius, dilation=mind_dilation),
                              fm, mm)
        return cache[idx]

    bar = tqdm(range(start, int(iterations)), initial=start, total=int(iterations),
               desc="VoxelMorph-MIND", disable=not progress)
    for step in bar:
        idx = int(torch.randint(len(pairs), (1,), generator=gen))
        fixed, moving, fixed_mind, fixed_mask, moving_mask = sample(idx)
        loss = pair_loss(model, fixed, moving, reg_weight, mind_radius, mind_dilation, fixed_mind,
                         fixed_mask, moving_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        losses.append(value)
        done = step + 1
        if log is not None:
            log(done, value)
        bar.set_postfix(loss=f"{value:.5f}")
        validation(model, done)
        rolling.after_step(done)
    bar.close()
    if start < iterations:
        rolling.save(int(iterations))
    model.eval()
    model.losses = losses
    if curve is not None:
        curve.clear()
        curve.update(validation.columns())
    return model


@torch.no_grad()
def register(model: VxmMind, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """One forward pass: ``u`` ``(B, 3, D, H, W)`` float32 on ``fixed``'s device, voxels of the
    fixed grid, ``warp(moving, u) ≈ fixed`` (inputs ``(B, 1, D, H, W)`` on one grid)."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        u = model(fixed.to(p.device, torch.float32), moving.to(p.device, torch.float32))
    finally:
        model.train(was_training)
    return u.to(fixed.device)


def save_model(path: PathLike, model: VxmMind, **extra: Any) -> Path:
    """Write ``{"format", "config", "state_dict", "extra"}`` atomically (``torch.save``)."""
    payload = {"format": MODEL_FORMAT, "kind": "voxelmorph_mind", "config": dict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": dict(extra)}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_model(path: PathLike, device: torch.device | str | None = None) -> VxmMind:
    """Rebuild a :class:`VxmMind` from :func:`save_model`'s file (eval mode)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or payload.get("kind") != "voxelmorph_mind":
        raise ValueError(f"{path}: not a VoxelMorph-MIND model file (written by save_model)")
    model = VxmMind(copy.deepcopy(payload["config"]), device=device)
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def register_files(model: VxmMind | PathLike, fixed_path: PathLike, moving_path: PathLike,
                   out_field: PathLike, device: torch.device | str | None = None) -> None:
    """Register two NIfTI images (same grid) and write the contract field with the fixed
    image's affine. ``model`` is a :class:`VxmMind` or a :func:`save_model` file."""
    from suits.io import load_volume, save_field

    if not isinstance(model, nn.Module):
        model = load_model(model, device=device)
    fixed, affine = load_volume(fixed_path)
    moving, _ = load_volume(moving_path)
    if fixed.shape != moving.shape:
        raise ValueError(f"{moving_path}: grid {tuple(moving.shape[-3:])} differs from the fixed "
                         f"image's {tuple(fixed.shape[-3:])}; VoxelMorph needs both on one grid")
    save_field(out_field, register(model, fixed, moving), affine)
