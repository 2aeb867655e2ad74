"""MIND-SSC: the modality independent neighbourhood descriptor with self-similarity context.

Heinrich et al., "Towards realtime multimodal fusion for image-guided interventions using
self-similarity context", MICCAI 2013. The formulation follows Heinrich's public PyTorch
reference (PDD-Net / Learn2Reg examples), written anew here:

1. the six-neighbourhood of a voxel: offsets ``±dilation`` along each axis;
2. the 12 pairs of six-neighbours at squared distance 2 (in units of ``dilation``), i.e. every
   pair of neighbours on two different axes;
3. for each pair (p, q): the patch SSD ``box_r * (I(x+p) - I(x+q))**2`` with a box filter of
   size ``2*radius+1`` (replicate padding for both the shifts and the box filter);
4. subtract the per-voxel minimum over the 12 channels, variance = per-voxel mean over the
   channels, clamped to ``[0.001, 1000] * its global mean`` (global = over the volume of each
   batch element, so a sample's descriptor does not depend on the rest of the batch);
5. ``exp(-ssd / var)``. Because of step 4's minimum subtraction the maximum over channels is
   already exactly 1 at every voxel, so the reference's max-normalisation is the identity.

Channels are returned in the reference implementation's order (:data:`CHANNEL_ORDER`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from suits.warp import box_filter

__all__ = ["mind_ssc", "ssc_pairs", "CHANNEL_ORDER"]

#: six-neighbourhood offsets in units of ``dilation``, (D, H, W), in the reference's order
SIX_NEIGHBOURHOOD: tuple[tuple[int, int, int], ...] = (
    (-1, 0, 0), (0, 0, -1), (0, -1, 0), (0, 0, 1), (1, 0, 0), (0, 1, 0),
)
#: permutation the reference applies to its 12 pair channels
CHANNEL_ORDER: tuple[int, ...] = (6, 8, 1, 11, 2, 10, 0, 7, 9, 4, 5, 3)

_EPS = 1e-12  # keeps a constant image finite (all channels 1) instead of 0/0


def ssc_pairs() -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The 12 neighbour pairs ``(p, q)`` (offsets in units of ``dilation``) in output order.

    Pairs are the six-neighbours ``i > j`` at squared distance 2, enumerated row-major over
    ``(i, j)`` as in the reference, then permuted by :data:`CHANNEL_ORDER`.
    """
    six = SIX_NEIGHBOURHOOD
    pairs = []
    for i in range(6):
        for j in range(6):
            d2 = sum((a - b) ** 2 for a, b in zip(six[i], six[j]))
            if i > j and d2 == 2:
                pairs.append((six[i], six[j]))
    assert len(pairs) == 12
    return [pairs[c] for c in CHANNEL_ORDER]


def _shift(img: torch.Tensor, offset: tuple[int, int, int], dilation: int) -> torch.Tensor:
    """``out(x) = img(x + offset*dilation)`` with replicate padding; shape preserved."""
    d = dilation
    padded = F.pad(img, (d, d, d, d, d, d), mode="replicate")
    D, H, W = img.shape[-3:]
    o0, o1, o2 = (d + o * d for o in offset)
    return padded[..., o0:o0 + D, o1:o1 + H, o2:o2 + W]


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Box (mean) filter of size ``2*radius+1`` with replicate padding; shape preserved.
    Separable (:func:`suits.warp.box_filter`): ``3*(2r+1)`` instead of ``(2r+1)**3`` additions
    per voxel, the same values up to float rounding."""
    return box_filter(x, 2 * radius + 1) if radius > 0 else x


def mind_ssc(img: torch.Tensor, radius: int = 2, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor of a batch of volumes.

    Args:
        img: ``(B, 1, D, H, W)`` float tensor (any device); a ``(B, C>1, ...)`` input is
            treated channel by channel and gives ``12*C`` channels.
        radius: patch radius ``r`` of the box filter (size ``2r+1``).
        dilation: distance (voxels) of the six-neighbourhood from the centre.

    Returns:
        ``(B, 12, D, H, W)`` tensor in ``[0, 1]`` on ``img``'s device; the channel maximum
        is 1 at every voxel. Invariant to ``a*img + b`` for ``a > 0``.
    """
    if img.dim() != 5:
        raise ValueError(f"mind_ssc expects (B, C, D, H, W), got shape {tuple(img.shape)}")
    if radius < 0 or dilation < 1:
        raise ValueError(f"need radius >= 0 and dilation >= 1, got {radius}, {dilation}")
    B, C = img.shape[:2]
    x = img.reshape(B * C, 1, *img.shape[2:])
    shifted = {o: _shift(x, o, dilation) for o in SIX_NEIGHBOURHOOD}
    diff2 = torch.cat([(shifted[p] - shifted[q]) ** 2 for p, q in ssc_pairs()], dim=1)
    ssd = _box(diff2, radius)
    ssd = ssd - ssd.min(dim=1, keepdim=True).values
    var = ssd.mean(dim=1, keepdim=True)
    gmean = var.mean(dim=(2, 3, 4), keepdim=True)
    var = torch.minimum(torch.maximum(var, gmean * 0.001), gmean * 1000.0).clamp_min(_EPS)
    mind = torch.exp(-ssd / var)
    return mind.reshape(B, C * 12, *img.shape[2:])
