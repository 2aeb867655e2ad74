"""SUITS model files: a FeatCNN's weights and the settings that rebuild it.

A model file is one ``torch.save`` of
``{"state_dict": ..., "config": {"modalities": [...], "downsample": f, "affine_norm": bool}}``,
written atomically (:mod:`suits.atomic`). A problem with a model file raises
:class:`ModelFileError`, a ``ValueError`` whose message is one line naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

__all__ = ["ModelFileError", "save_model", "load_model", "load_representation",
           "save_snapshots", "load_snapshots"]


class ModelFileError(ValueError):
    """A model file that is missing, unreadable, or does not fit its use."""


def save_model(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Write a FeatCNN as ``{"state_dict", "config"}`` atomically."""
    from suits.atomic import atomic_path

    config = {
        "modalities": list(model.modalities),
        "downsample": int(model.factor),
        "affine_norm": any(isinstance(m, torch.nn.InstanceNorm3d) and m.affine for m in model.modules()),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "config": config}, tmp)


def save_snapshots(path: str | os.PathLike, snapshots: Sequence[tuple[int, dict]]) -> None:
    """Write the weights of several steps of one training (``[(step, state_dict), ...]``, e.g.
    :func:`suits.pretrain.pretrain`'s ``snapshots``) atomically, on the CPU."""
    from suits.atomic import atomic_path

    payload = {"steps": [int(s) for s, _ in snapshots],
               "states": [{k: v.detach().cpu() for k, v in st.items()} for _, st in snapshots]}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_snapshots(path: str | os.PathLike,
                   device: torch.device | str | None = None) -> list[tuple[int, dict]]:
    """Read a file written by :func:`save_snapshots`: ``[(step, state_dict), ...]``."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=device or "cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is an input problem
        raise ModelFileError(f"{path}: not a readable snapshot file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or set(payload) != {"steps", "states"}:
        raise ModelFileError(f"{path}: not a snapshot file (expected keys 'steps' and 'states')")
    return list(zip(payload["steps"], payload["states"]))


def load_model(path: str | os.PathLike, device: torch.device | str | None = None) -> torch.nn.Module:
    """Read a model file written by :func:`save_model` into a new FeatCNN on ``device``."""
    from suits.featcnn import FeatCNN

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is an input problem
        raise ModelFileError(f"{path}: not a readable model file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise ModelFileError(f"{path}: not a suits model file (expected keys 'state_dict' and "
                             "'config'; checkpoints are not model files)")
    cfg = payload["config"]
    model = FeatCNN(modalities=tuple(cfg["modalities"]), downsample=int(cfg["downsample"]),
                    affine_norm=bool(cfg.get("affine_norm", True)))
    model.load_state_dict(payload["state_dict"])
    return model.to(device) if device is not None else model


def load_representation(model: str | os.PathLike, modalities: Sequence[str],
                        device: torch.device | str | None = None, mind_factor: int = 4,
                        mind_radius: int = 2, mind_dilation: int = 2) -> Any:
    """The representation ``suits.register.register`` works with: ``"mind"`` (any case) gives
    hand-crafted MIND-SSC (:class:`suits.register.MindRepresentation` with ``mind_factor``,
    ``mind_radius``, ``mind_dilation``), anything else is a model file, loaded onto ``device``
    in eval mode and checked to have a stream for each of ``modalities``."""
    from suits.register import MindRepresentation

    if str(model).lower() == "mind":
        return MindRepresentation(factor=mind_factor, radius=mind_radius, dilation=mind_dilation)
    net = load_model(model, device=device).eval()
    for m in modalities:
        if m not in net.modalities:
            raise ModelFileError(f"{model}: no FeatCNN stream for modality {m!r} "
                                 f"(streams: {list(net.modalities)})")
    return net
