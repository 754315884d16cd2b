import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from sslgraph.models.backbones import build_backbone
from sslgraph.models.small_maps import SmallMapConv2d, tap_index, use_plain_convs, use_small_map_convs


def test_tap_index_by_hand_for_a_3x3_kernel_on_a_2x2_map():
    # Padding 1, stride 1: output (0, 0) meets input (0, 0) at the centre tap 4, input (0, 1) at tap 5,
    # input (1, 0) at tap 7 and input (1, 1) at tap 8.
    index, out_size = tap_index((2, 2), kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    assert out_size == (2, 2)
    assert index.tolist() == [[4, 5, 7, 8], [3, 4, 6, 7], [1, 2, 4, 5], [0, 1, 3, 4]]
    # Stride 2 on a 2x2 map gives one output pixel; a 1x1 kernel without padding on a 2x2 map joins each
    # output pixel to its own input pixel only (9 would be "no tap" for a 3x3 kernel, 1 here).
    index, out_size = tap_index((2, 2), kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    assert (out_size, index.tolist()) == ((1, 1), [[4, 5, 7, 8]])
    index, _ = tap_index((2, 2), kernel_size=(1, 1), stride=(1, 1), padding=(0, 0), dilation=(1, 1))
    assert index.tolist() == [[0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]


CASES = [
    # (in, out, kernel, stride, padding, dilation, bias, map size)
    (8, 6, 3, 1, 1, 1, False, (1, 1)),
    (8, 6, 3, 1, 1, 1, True, (2, 2)),
    (8, 6, 3, 2, 1, 1, False, (2, 2)),
    (8, 6, 3, 1, 1, 1, False, (3, 3)),
    (8, 6, 3, 1, 1, 1, False, (1, 3)),
    (8, 6, 3, 1, 0, 1, True, (3, 3)),
    (8, 6, 1, 1, 0, 1, False, (1, 1)),
    (8, 6, 1, 2, 0, 1, False, (1, 1)),
    (8, 6, 3, 1, 2, 2, False, (3, 3)),
    (8, 6, (3, 5), 1, (1, 2), 1, True, (2, 3)),
    (8, 6, 7, 2, 3, 1, False, (4, 4)),
    (8, 6, 3, 1, 1, 1, False, (5, 5)),  # larger than the kernel: nn.Conv2d's own path
]


@pytest.mark.parametrize("case", CASES)
def test_equals_nn_conv2d_forward_and_backward(case):
    c_in, c_out, kernel, stride, padding, dilation, bias, size = case
    torch.manual_seed(0)
    reference = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    fast = SmallMapConv2d(c_in, c_out, kernel, stride=stride, padding=padding, dilation=dilation, bias=bias).double()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(5, c_in, *size, dtype=torch.float64)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_fast = reference(x_ref), fast(x_fast)
    assert y_fast.shape == y_ref.shape
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(y_ref)
    (y_ref * upstream).sum().backward()
    (y_fast * upstream).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(fast.bias.grad, reference.bias.grad, rtol=1e-12, atol=1e-12)


def test_channels_last_input_gives_channels_last_output_of_the_same_values():
    torch.manual_seed(0)
    conv = SmallMapConv2d(16, 32, 3, padding=1, bias=False)
    x = torch.randn(4, 16, 2, 2)
    out = conv(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, nn.functional.conv2d(x, conv.weight, padding=1), rtol=1e-5, atol=1e-5)


def test_bf16_autocast_matches_the_convolution_within_bf16_precision():
    torch.manual_seed(0)
    conv = SmallMapConv2d(64, 64, 3, padding=1, bias=False)
    x = torch.randn(8, 64, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = conv(x)
        reference = nn.functional.conv2d(x, conv.weight, padding=1)
    assert fast.dtype == torch.bfloat16
    torch.testing.assert_close(fast.float(), reference.float(), rtol=0.02, atol=0.02)


def test_conversion_keeps_parameters_and_state_dict_keys_of_a_torchvision_resnet():
    torch.manual_seed(0)
    plain = resnet18(weights=None)
    converted = use_small_map_convs(resnet18(weights=None))
    converted.load_state_dict(plain.state_dict())
    assert list(converted.state_dict()) == list(plain.state_dict())
    convs = [m for m in converted.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(type(m) is SmallMapConv2d for m in convs)
    plain.eval()
    converted.eval()
    x = torch.randn(3, 3, 32, 32)  # ImageNet stem at 32 px: layer3 runs on 2x2 maps, layer4 on 1x1
    with torch.no_grad():
        torch.testing.assert_close(converted(x), plain(x), rtol=1e-4, atol=1e-4)


def test_conversion_moves_the_parameters_instead_of_copying_them():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1)))
    weights = [net[0].weight, net[2][0].weight]
    use_small_map_convs(net)
    assert isinstance(net[0], SmallMapConv2d) and isinstance(net[2][0], SmallMapConv2d)
    assert net[0].weight is weights[0] and net[2][0].weight is weights[1]
    use_plain_convs(net)
    assert type(net[0]) is nn.Conv2d and type(net[2][0]) is nn.Conv2d
    assert net[0].weight is weights[0] and net[2][0].bias is not None


def test_resnet_backbones_use_it_and_train_like_the_plain_network():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", image_size=32)
    assert any(isinstance(m, SmallMapConv2d) for m in backbone.modules())
    plain = resnet18(weights=None)
    plain.fc = nn.Identity()
    plain.load_state_dict(backbone.net.state_dict())
    backbone.double()
    plain.double()
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)  # train mode: batch statistics over 4 images at 1x1
    backbone(x).square().mean().backward()
    plain(x).square().mean().backward()
    for (name, p), q in zip(backbone.net.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-8, atol=1e-10, msg=name)
