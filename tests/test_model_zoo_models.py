"""Zoo architectures: output shapes, parameter counts by hand, equality with paddle.vision."""
import numpy as np
import paddle
import pytest
from paddle.vision import models as pv
from paddle.vision.models.vgg import cfgs as paddle_vgg_cfgs
from paddle.vision.models.vgg import make_layers as paddle_vgg_layers

from slimhub.model_zoo import create_model, list_models

ALL = ["mobilenet_v1", "resnet18", "resnet20", "resnet34", "resnet50", "resnet56", "vgg11", "vgg16"]
# small widths keep every forward pass cheap; VGG gets the compact classifier
SMALL = {name: {"scale": 0.125} for name in ALL}
SMALL["mobilenet_v1"] = {"scale": 0.25}
for _vgg in ("vgg11", "vgg16"):
    SMALL[_vgg] = {"scale": 0.0625, "pool_size": 1, "hidden": 0}


def bn(c):
    """weight, bias, running mean, running variance: all are Paddle parameters."""
    return 4 * c


def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def shapes(model):
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_registered_architectures():
    assert list_models() == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_grayscale_28(name):
    model = create_model(name, in_channels=1, num_classes=10, **SMALL[name])
    model.eval()
    assert model(paddle.rand([2, 1, 28, 28])).shape == [2, 10]


@pytest.mark.parametrize("name", ALL)
def test_forward_rgb_224(name):
    kwargs = dict(SMALL[name])
    if name.startswith("vgg"):
        kwargs.update(pool_size=7, hidden=64)  # the paper's head shape, narrow
    model = create_model(name, in_channels=3, num_classes=1000, **kwargs)
    model.eval()
    assert model(paddle.rand([1, 3, 224, 224])).shape == [1, 1000]


def test_mobilenet_v1_params_by_hand():
    s, c, k = 0.25, 1, 10
    blocks = [(32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512)] + [(512, 512)] * 5
    blocks += [(512, 1024), (1024, 1024)]
    expected = 9 * c * 8 + bn(8)  # stem: 3x3 conv to int(32 * s) = 8, no bias, BN
    for cin, cout in blocks:
        i, o = int(cin * s), int(cout * s)
        expected += 9 * i + bn(i) + i * o + bn(o)  # depthwise 3x3 + BN, pointwise 1x1 + BN
    expected += 256 * k + k
    assert n_params(create_model("mobilenet_v1", in_channels=c, num_classes=k, scale=s)) == expected


def cifar_resnet_params(n, c, k, widths):
    """Basic blocks, n per stage; a 1x1 conv + BN shortcut where the shape changes."""
    w1 = widths[0]
    total = 9 * c * w1 + bn(w1)
    prev = w1
    for w in widths:
        for b in range(n):
            cin = prev if b == 0 else w
            total += 9 * cin * w + bn(w) + 9 * w * w + bn(w)
            if cin != w:
                total += cin * w + bn(w)
        prev = w
    return total + prev * k + k


@pytest.mark.parametrize("name,n", [("resnet20", 3), ("resnet56", 9)])
def test_cifar_resnet_params_by_hand(name, n):
    model = create_model(name, in_channels=1, num_classes=10, scale=0.25)
    assert n_params(model) == cifar_resnet_params(n, 1, 10, (4, 8, 16))


def test_resnet20_full_width_is_the_papers_size():
    # He et al. 2016 table 6: 0.27M trainable parameters (shortcut projections add ~3K here)
    model = create_model("resnet20", in_channels=3, num_classes=10)
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if p.trainable)
    assert 0.27e6 <= trainable <= 0.28e6


def test_vgg11_params_by_hand():
    s, c, k = 0.125, 1, 10
    widths = [int(w * s) for w in (64, 128, 256, 256, 512, 512, 512, 512)]
    expected, prev = 0, c
    for w in widths:
        expected += 9 * prev * w + w + bn(w)  # conv with bias, BN
        prev = w
    head = 3 * 3 * prev * 32 + 32 + 32 * 32 + 32 + 32 * k + k  # pool 3x3, hidden int(256 * s) = 32
    model = create_model("vgg11", in_channels=c, num_classes=k, scale=s, pool_size=3, hidden=256)
    assert n_params(model) == expected + head


@pytest.mark.parametrize("ours,kwargs,theirs", [
    ("mobilenet_v1", {}, lambda: pv.mobilenet_v1()),
    ("resnet18", {}, lambda: pv.resnet18()),
    ("resnet34", {}, lambda: pv.resnet34()),
    ("resnet50", {}, lambda: pv.resnet50()),
    ("vgg11", {}, lambda: pv.vgg11(batch_norm=True)),
    ("vgg16", {}, lambda: pv.vgg16(batch_norm=True)),
    ("vgg16", {"batch_norm": False}, lambda: pv.vgg16()),
])
def test_state_dict_matches_paddle_vision(ours, kwargs, theirs):
    with paddle.LazyGuard():  # shapes only, no weight initialisation
        assert shapes(create_model(ours, **kwargs)) == shapes(theirs())


def test_mobilenet_v1_computes_what_paddle_vision_does():
    paddle.seed(0)
    ours, theirs = create_model("mobilenet_v1", scale=0.25), pv.MobileNetV1(scale=0.25)
    ours.set_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = paddle.rand([1, 3, 64, 64])
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-6)


def test_resnet18_computes_what_paddle_vision_does():
    paddle.seed(0)
    ours = create_model("resnet18")
    for p in ours.parameters():  # non-trivial BN statistics
        if not p.trainable:
            p.set_value(paddle.rand(p.shape) + 0.5)
    with paddle.LazyGuard():  # weights come from ours
        theirs = pv.resnet18()
    theirs.set_state_dict(ours.state_dict())
    ours.eval()
    theirs.eval()
    x = paddle.rand([1, 3, 32, 32])
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-6)


def test_vgg_features_compute_what_paddle_vision_does():
    # configuration A at 1/8 width, built by paddle.vision's own layer maker
    narrow = [w if w == "M" else w // 8 for w in paddle_vgg_cfgs["A"]]
    theirs = paddle_vgg_layers(narrow, batch_norm=True)
    ours = create_model("vgg11", scale=0.125, pool_size=1, hidden=0)
    ours.features.set_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = paddle.rand([1, 3, 64, 64])
    np.testing.assert_allclose(ours.features(x).numpy(), theirs(x).numpy(), rtol=1e-5, atol=1e-6)


def test_vgg_pools_round_up_on_28():
    model = create_model("vgg11", in_channels=1, num_classes=10, scale=0.0625, pool_size=1, hidden=0)
    assert model.features(paddle.rand([1, 1, 28, 28])).shape == [1, 32, 1, 1]


def test_channel_widths_scale():
    with paddle.LazyGuard():
        model = create_model("resnet50", scale=0.5)
    assert model.conv1.weight.shape == [32, 3, 7, 7]
    assert model.fc.weight.shape == [1024, 1000]  # 512 * 0.5 * expansion 4


@pytest.mark.parametrize("name,kwargs,words", [
    ("resnet20", {"in_channels": 0}, ["resnet20", "in_channels", "0"]),
    ("mobilenet_v1", {"num_classes": 2.5}, ["mobilenet_v1", "num_classes", "2.5"]),
    ("vgg16", {"scale": -1}, ["vgg16", "scale", "-1"]),
    ("mobilenet_v1", {"scale": 0.01}, ["mobilenet_v1", "scale=0.01"]),
    ("vgg11", {"hidden": -3}, ["vgg11", "hidden", "-3"]),
])
def test_bad_arguments_name_the_model_and_value(name, kwargs, words):
    with pytest.raises(ValueError) as e:
        create_model(name, **kwargs)
    for word in words:
        assert word in str(e.value)


def test_unknown_argument_names_the_architecture():
    with pytest.raises(TypeError, match="resnet18.*width"):
        create_model("resnet18", width=2)


def test_mobilenet_v1_small_input_has_total_stride_8_and_the_same_weights():
    """Stride-1 stem and first downsampling block: 28x28 ends at 4x4 (28 -> 14 -> 7 -> 4)
    instead of 1x1, with the same parameter shapes."""
    small = create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25, small_input=True)
    plain = create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25)
    assert shapes(small) == shapes(plain)
    seen = {}
    small.conv6.register_forward_post_hook(lambda layer, inputs, output: seen.update(shape=output.shape))
    small(paddle.zeros([2, 1, 28, 28]))
    assert seen["shape"] == [2, 256, 4, 4]
    with pytest.raises(ValueError, match="small_input must be true or false"):
        create_model("mobilenet_v1", small_input="yes")
