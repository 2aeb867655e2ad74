"""suits.featcnn.FeatCNN: Table 1 architecture, parameter counts, feature grid convention."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

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


def _reference(model, x, modality):
    """Table 1 written out with torch.nn.functional: conv, instance norm, ReLU; sigmoid last."""
    convs = _convs(model, modality)
    norms = [m for m in list(model.stems[modality].modules()) + list(model.shared.modules())
             if isinstance(m, nn.InstanceNorm3d)]
    for i, c in enumerate(convs):
        x = F.conv3d(x, c.weight, c.bias, c.stride, c.padding, c.dilation)
        if i < 4:
            x = torch.relu(F.instance_norm(x, weight=norms[i].weight, bias=norms[i].bias,
                                           eps=norms[i].eps))
    return torch.sigmoid(x)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("factor", [2, 4])
def test_forward_and_gradients_equal_the_plain_formula(channels_last, factor):
    """Fused instance norm + ReLU (suits.norm) and channels-last memory change nothing but
    float rounding: values with and without autograd, parameter gradients, gradcheck."""
    torch.manual_seed(0)
    model = FeatCNN(downsample=factor, channels_last=channels_last).double()
    with torch.no_grad():
        for p in model.parameters():           # non-trivial norm scales/shifts and conv biases
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(2, 1, 11, 9, 8, dtype=torch.float64)
    ref = _reference(model, x, "ct")
    with torch.no_grad():
        torch.testing.assert_close(model(x, "ct"), ref, rtol=1e-12, atol=1e-12)
    y = model(x, "ct")
    assert y.is_contiguous()
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    w = torch.rand_like(ref)
    grads = torch.autograd.grad((y * w).sum(), list(model.parameters()), allow_unused=True)
    ref_grads = torch.autograd.grad((_reference(model, x, "ct") * w).sum(),
                                    list(model.parameters()), allow_unused=True)
    for (name, _), g, r in zip(model.named_parameters(), grads, ref_grads):
        if r is None:
            assert g is None, name                # the other modality's stem
        elif name.endswith("0.bias"):
            torch.testing.assert_close(g, r, rtol=0, atol=1e-9)   # conv bias before a norm: ~0
        else:
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11, msg=name)
    small = FeatCNN(downsample=2, channels_last=channels_last).double()
    xs = torch.randn(1, 1, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: small(t, "mr"), (xs,), eps=1e-6, atol=1e-5)


def test_channels_last_parameters_and_state_dict_compatible():
    """Channels-last is a layout only: the state dict keys and values are those of the
    contiguous model, and either loads into the other."""
    a = FeatCNN(channels_last=True)
    b = FeatCNN(channels_last=False)
    conv = a.stems["ct"][1][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    assert b.stems["ct"][1][0].weight.is_contiguous()
    assert list(a.state_dict()) == list(b.state_dict())
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 12, 10, 9)
    with torch.no_grad():
        torch.testing.assert_close(a(x, "mr"), b(x, "mr"), rtol=1e-5, atol=1e-6)
