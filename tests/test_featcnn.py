"""suits.featcnn.FeatCNN: Table 1 architecture, parameter counts, feature grid convention."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from suits.featcnn import FeatCNN, feature_shape


def _convs(model, modality):
    return [m for m in list(model.stems[modality].modules()) + list(model.shared.modules())
            if isinstance(m, nn.Conv3d)]


def test_parameter_count_default():
    model = FeatCNN()
    # stems: 2 x [(16*1*125+16) + 2*16 + (32*16*27+32) + 2*32]; shared: 2 x (32*32*27+32+2*32) + 12*32*27+12
    assert model.num_parameters() == 97_804
    assert FeatCNN(affine_norm=False).num_parameters() == 97_484
    assert FeatCNN(downsample=2).num_parameters() == 97_804
    assert FeatCNN(modalities=("mr", "us", "ct")).num_parameters() == 97_804 + 15_968


def test_table1_layers():
    model = FeatCNN(downsample=2)
    convs = _convs(model, "ct")
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 32), (32, 32), (32, 32), (32, 12)]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3, 3, 3]
    assert [c.dilation[0] for c in convs] == [2, 1, 1, 1, 1]
    assert [c.padding[0] for c in convs] == [4, 1, 1, 1, 1]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 1]
    assert [c.stride[0] for c in _convs(FeatCNN(), "ct")] == [1, 2, 2, 1, 1]
    for c in convs:  # "same" padding: every output is centred on its input position
        assert c.padding[0] * 2 == c.dilation[0] * (c.kernel_size[0] - 1)
    assert isinstance(model.shared[-1], nn.Sigmoid)
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert len(norms) == 2 * 2 + 2  # 4 per stream-path, no norm after layer 5


def test_stems_separate_shared_layers_shared():
    model = FeatCNN(modalities=("mr", "us"))
    assert set(model.stems.keys()) == {"mr", "us"}
    assert model.stems["mr"][0][0].weight.data_ptr() != model.stems["us"][0][0].weight.data_ptr()
    x = torch.randn(1, 1, 8, 8, 8)
    assert not torch.allclose(model(x, "mr"), model(x, "us"))


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("shape", [(16, 12, 8), (17, 13, 9), (15, 10, 11)])
def test_output_grid_size(factor, shape):
    model = FeatCNN(downsample=factor)
    assert model.factor == factor
    with torch.no_grad():
        out = model(torch.randn(2, 1, *shape), "ct")
    expected = tuple(-(-n // factor) for n in shape)  # ceil(n / factor)
    assert out.shape == (2, 12, *expected)
    assert feature_shape(shape, factor) == expected == model.feature_shape(shape)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_unknown_modality_and_bad_args():
    model = FeatCNN()
    with pytest.raises(ValueError, match="unknown modality 'us'"):
        model(torch.randn(1, 1, 8, 8, 8), "us")
    with pytest.raises(ValueError):
        FeatCNN(downsample=3)
    with pytest.raises(ValueError):
        FeatCNN(modalities=("ct", "ct"))
    with pytest.raises(ValueError):
        model(torch.randn(1, 2, 8, 8, 8), "ct")


def test_train_and_eval_identical_and_device():
    model = FeatCNN(device="cpu")
    x = torch.randn(1, 1, 12, 12, 12)
    a = model.train()(x, "mr")
    b = model.eval()(x, "mr")
    torch.testing.assert_close(a, b)
    assert next(model.parameters()).device.type == "cpu"


def test_relu_in_place_only_without_autograd_same_values_and_gradients():
    """The ReLUs act in place only when autograd does not record them (no CopySlices nodes in
    training); the values are those of a plain ReLU and gradcheck holds in float64."""
    torch.manual_seed(0)
    model = FeatCNN().double()
    x = torch.randn(1, 1, 9, 8, 7, dtype=torch.float64)
    with torch.no_grad():
        ref = model.shared(model.stems["ct"](x))
    y = model(x, "ct")
    torch.testing.assert_close(y, ref, rtol=0, atol=0)

    def names(fn):
        out, seen, stack = [], set(), [fn]
        while stack:
            f = stack.pop()
            if f is None or f in seen:
                continue
            seen.add(f)
            out.append(type(f).__name__)
            stack.extend(g for g, _ in f.next_functions)
        return out

    graph = names(y.grad_fn)
    assert "ReluBackward0" in graph and "CopySlices" not in graph
    small = FeatCNN(downsample=2).double()
    xs = torch.randn(1, 1, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: small(t, "mr"), (xs,), eps=1e-6, atol=1e-5)
