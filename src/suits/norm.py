"""Instance normalisation followed by ReLU as one autograd operation (FeatCNN layers 1-4).

``instance_norm_relu(x, weight, bias)`` equals ``relu(instance_norm(x, weight=weight,
bias=bias))`` (biased variance, no running statistics) up to float rounding, in any memory
format. What it does differently, for speed on the CPU at the paper's image size:

* the per-channel mean and variance come from matrix products over the ``(B, N, C)`` view of
  the activation (``N`` voxels; a view without copy for channels-last and contiguous tensors):
  the sum, then the sum of squares of the centred values, instead of a Welford reduction;
* the output keeps the input's memory format (``torch.nn.InstanceNorm3d`` copies channels-last
  input to contiguous and back);
* the backward pass is analytic (the instance-norm gradient with the ReLU mask from the saved
  output) and saves only the input and the output, which the next convolution keeps anyway.

With ``inplace=True`` and no autograd recording, the result overwrites ``x`` (one activation of
memory less at inference).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["instance_norm_relu", "InstanceNormReLU3d"]


def _format(x: torch.Tensor) -> torch.memory_format:
    """``channels_last_3d`` for a 5-D tensor laid out that way (and not also contiguous)."""
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d) \
            and not x.is_contiguous():
        return torch.channels_last_3d
    return torch.contiguous_format


def _bnc(x: torch.Tensor) -> torch.Tensor:
    """A ``(B, N, C)`` view of a ``(B, C, *spatial)`` tensor (no copy for the usual formats)."""
    B, C = x.shape[:2]
    if _format(x) == torch.channels_last_3d:
        return x.permute(0, 2, 3, 4, 1).reshape(B, -1, C)
    return x.reshape(B, C, -1).transpose(1, 2)


def _channel_sum(x: torch.Tensor) -> torch.Tensor:
    """``sum x`` per batch and channel, ``(B, C)``, as a matrix product (one pass)."""
    X = _bnc(x)
    return torch.bmm(X.new_ones(X.shape[0], 1, X.shape[1]), X)[:, 0]


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum a * b`` per batch and channel, ``(B, C)``: the diagonal of ``A^T B`` over voxels."""
    return torch.diagonal(torch.bmm(_bnc(a).transpose(1, 2), _bnc(b)), dim1=1, dim2=2)


def _expand(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(*v.shape, *([1] * (x.dim() - 2)))


def _affine_coefficients(x, weight, bias, eps):
    """``mean, rstd, scale, shift`` (each ``(B, C)``) with ``norm(x) = x * scale + shift``.

    Two passes (mean, then the squares of the centred values), so the variance keeps its
    precision when a channel's mean is far above its spread."""
    n = x[0, 0].numel()
    mean = _channel_sum(x) / n
    d = x - _expand(mean, x)
    var = _channel_dot(d, d) / n
    del d
    rstd = torch.rsqrt(var + eps)
    scale = rstd if weight is None else rstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return mean, rstd, scale, shift


class _InstanceNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        mean, rstd, scale, shift = _affine_coefficients(x, weight, bias, eps)
        y = torch.addcmul(_expand(shift, x), x, _expand(scale, x)).relu_()
        ctx.save_for_backward(x, y, weight, mean, rstd)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, y, weight, mean, rstd = ctx.saved_tensors
        n = x[0, 0].numel()
        gz = torch.ops.aten.threshold_backward(g, y, 0)                  # through the ReLU
        gz = gz.contiguous(memory_format=_format(x))
        sg, sgx = _channel_sum(gz), _channel_dot(gz, x)          # sum gz, sum gz * x
        sgxhat = rstd * (sgx - mean * sg)                        # sum gz * xhat
        a = rstd if weight is None else rstd * weight
        k = sgxhat / n
        b = -a * rstd * k
        c = a * (rstd * mean * k - sg / n)
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.addcmul(_expand(c, x), x, _expand(b, x)).addcmul_(gz, _expand(a, x))
        gw = sgxhat.sum(0) if weight is not None and ctx.needs_input_grad[1] else None
        gb = sg.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def instance_norm_relu(x: torch.Tensor, weight: torch.Tensor | None = None,
                       bias: torch.Tensor | None = None, eps: float = 1e-5,
                       inplace: bool = False) -> torch.Tensor:
    """``relu(instance_norm(x) * weight + bias)`` per sample and channel of ``(B, C, ...)``.

    ``weight``/``bias``: ``(C,)`` or ``None``. Differentiable in all three tensors (first
    order). ``inplace``: when autograd does not record the call, write the result into ``x``.
    """
    if x.dim() < 3:
        raise ValueError(f"expected (B, C, *spatial), got shape {tuple(x.shape)}")
    x = x.contiguous(memory_format=_format(x))
    tracked = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    if tracked:
        return _InstanceNormReLU.apply(x, weight, bias, eps)
    _, _, scale, shift = _affine_coefficients(x, weight, bias, eps)
    if inplace:
        return x.mul_(_expand(scale, x)).add_(_expand(shift, x)).relu_()
    return torch.addcmul(_expand(shift, x), x, _expand(scale, x)).relu_()


class InstanceNormReLU3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (no running statistics) followed by ReLU, as
    :func:`instance_norm_relu`. Same parameters and state-dict entries as the norm alone.
    ``inplace``: overwrite the input when autograd does not record (as ``nn.ReLU(inplace)``)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True,
                 inplace: bool = False, device=None, dtype=None) -> None:
        super().__init__(num_features, eps=eps, affine=affine, track_running_stats=False,
                         device=device, dtype=dtype)
        self.inplace = bool(inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.num_features:
            raise ValueError(f"expected (B, {self.num_features}, D, H, W), got {tuple(x.shape)}")
        return instance_norm_relu(x, self.weight, self.bias, self.eps, self.inplace)
