"""The Y-shaped feature CNN of SUITS (Table 1 of the paper).

Layers 1-2 are a stem per modality (an ``nn.ModuleDict`` keyed by modality name), layers 3-5 are
shared. Every conv is followed by ``InstanceNorm3d`` + ReLU except layer 5 (Sigmoid), 12 output
channels (the MIND-SSC channels).

==========  ====  ====  ====  ====  =======
layer       1     2     3     4     5
==========  ====  ====  ====  ====  =======
in -> out   1-16  16-32 32-32 32-32 32-12
kernel      5     3     3     3     3
dilation    2     1     1     1     1
pad         4     1     1     1     1
stride      1     1*    2     1     1
==========  ====  ====  ====  ====  =======

``*`` ``downsample=4`` (default, the paper text's factor 4) sets layer 2's stride to 2 as well;
``downsample=2`` is Table 1 literally. Parameter counts (``affine_norm=True``, two modalities):
97,804 for ``downsample`` 2 or 4 (strides do not change the count), 97,484 with
``affine_norm=False``; the paper's "about 155k" is not reproduced by Table 1 (see
``docs/method-choices.md``).

Feature grid: every layer with stride 1 preserves the size (``pad = dilation*(kernel-1)/2``),
a stride-2 layer (kernel 3, pad 1) maps ``n`` to ``ceil(n/2)`` and its output ``i`` is centred on
input ``2i``. Hence the output has size ``ceil(n / factor)`` per axis and **output voxel ``i``
sits at (is centred on) image voxel ``i * factor``**; ``suits.warp.downsample_field`` /
``upsample_field(..., factor=)`` use the same convention.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from suits.norm import InstanceNormReLU3d

__all__ = ["FeatCNN", "feature_shape"]

OUT_CHANNELS = 12


def feature_shape(shape: Iterable[int], factor: int) -> tuple[int, ...]:
    """Feature grid size for an image grid: ``ceil(n / factor)`` per axis."""
    return tuple(-(-int(n) // int(factor)) for n in shape)


def _block(cin: int, cout: int, kernel: int, dilation: int, pad: int, stride: int,
           affine_norm: bool) -> nn.Sequential:
    """Conv3d, then instance norm + ReLU as one operation (:mod:`suits.norm`)."""
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation),
        InstanceNormReLU3d(cout, affine=affine_norm, inplace=True),
    )


class FeatCNN(nn.Module):
    """Y-shaped FeatCNN: ``model(x, modality) -> (B, 12, ceil(D/f), ceil(H/f), ceil(W/f))``.

    Args:
        modalities: names of the input streams (any strings, e.g. ``("mr", "us")``).
        downsample: feature grid factor ``f``, 2 (Table 1) or 4 (paper text; default).
        device: where the parameters are created.
        affine_norm: learnable per-channel scale/shift after the instance norms (default True;
            see docs/method-choices.md). Running statistics are never tracked, so ``train()``
            and ``eval()`` give identical outputs.
        channels_last: keep parameters and activations in the channels-last memory format
            (``torch.channels_last_3d``; default True). Same values up to float rounding; on
            the CPU (oneDNN) the convolutions run several times faster (docs/benchmarks.md).
            The output is always returned contiguous.
    """

    def __init__(self, modalities: Iterable[str] = ("ct", "mr"), downsample: int = 4,
                 device: torch.device | str | None = None, affine_norm: bool = True,
                 channels_last: bool = True) -> None:
        super().__init__()
        modalities = tuple(str(m) for m in modalities)
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be distinct non-empty names, got {modalities}")
        if downsample not in (2, 4):
            raise ValueError(f"downsample must be 2 (Table 1) or 4 (paper text), got {downsample}")
        self.modalities = modalities
        self.factor = int(downsample)
        stride2 = 2 if downsample == 4 else 1
        self.stems = nn.ModuleDict({
            m: nn.Sequential(
                _block(1, 16, 5, 2, 4, 1, affine_norm),
                _block(16, 32, 3, 1, 1, stride2, affine_norm),
            )
            for m in modalities
        })
        self.shared = nn.Sequential(
            _block(32, 32, 3, 1, 1, 2, affine_norm),
            _block(32, 32, 3, 1, 1, 1, affine_norm),
            nn.Conv3d(32, OUT_CHANNELS, 3, stride=1, padding=1),
            nn.Sigmoid(),
        )
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.to(device=device, memory_format=self.memory_format)

    def forward(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Features of a ``(B, 1, D, H, W)`` batch of one modality."""
        if modality not in self.stems:
            raise ValueError(f"unknown modality {modality!r}; this FeatCNN has streams for "
                             f"{list(self.modalities)}")
        if x.dim() != 5 or x.shape[1] != 1:
            raise ValueError(f"FeatCNN expects (B, 1, D, H, W), got {tuple(x.shape)}")
        x = x.contiguous(memory_format=self.memory_format)
        return self.shared(self.stems[modality](x)).contiguous()

    def feature_shape(self, shape: Iterable[int]) -> tuple[int, ...]:
        """Feature grid size for an image grid of ``shape``."""
        return feature_shape(shape, self.factor)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
