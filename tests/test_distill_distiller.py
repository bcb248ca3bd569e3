"""Distiller: weighted terms by layer name vs numpy, gradients, adapters, bad configs."""
import numpy as np
import paddle
import pytest
from paddle import nn

from slimhub.distill import Distiller


class Tiny(nn.Layer):
    """1x1 convs a -> b -> pooled fc; easy to run by hand in numpy."""

    def __init__(self, c_a, c_b, classes=5, bn=False):
        super().__init__()
        self.a = nn.Conv2D(2, c_a, 1)
        self.b = nn.Conv2D(c_a, c_b, 1)
        self.bn = nn.BatchNorm2D(c_b) if bn else None
        self.drop = nn.Dropout(0.5) if bn else None
        self.fc = nn.Linear(c_b, classes)

    def forward(self, x):
        y = self.b(self.a(x))
        if self.bn is not None:
            y = self.drop(self.bn(y))
        return self.fc(y.mean([2, 3]))


def _conv1x1(layer, z):
    weight, bias = layer.weight.numpy()[:, :, 0, 0], layer.bias.numpy()
    return np.einsum("oc,nchw->nohw", weight, z) + bias[None, :, None, None]


def _np(net, x):
    """Features a, b and the logits of a Tiny without batch norm, in numpy."""
    a = _conv1x1(net.a, x)
    b = _conv1x1(net.b, a)
    return a, b, b.mean((2, 3)) @ net.fc.weight.numpy() + net.fc.bias.numpy()


def _fsp(a, b):
    return np.einsum("nchw,ndhw->ncd", a, b) / (a.shape[2] * a.shape[3])


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _nets(seed=0):
    paddle.seed(seed)
    return Tiny(3, 4), Tiny(3, 4), np.random.default_rng(seed).normal(size=(2, 2, 3, 3)).astype("float32")


def mean_abs_gap(teacher, student):
    return (teacher - student).abs().mean()


def test_weighted_terms_equal_numpy():
    teacher, student, x = _nets()
    d = Distiller(teacher, student, [
        {"type": "fsp", "teacher": ["a", "b"], "student": ["a", "b"], "weight": 3.0},
        {"type": "soft_label", "teacher": "fc", "student": "fc", "temperature": 2.0, "weight": 0.5},
        {"type": "l2", "teacher": "b", "student": "b", "name": "hint"},
        {"type": mean_abs_gap, "teacher": "fc", "student": "fc", "weight": 2.0},
    ])
    student(paddle.to_tensor(x))
    terms = d.loss(paddle.to_tensor(x))
    ta, tb, tl = _np(teacher, x)
    sa, sb, sl = _np(student, x)
    p = np.exp(_log_softmax(tl / 2.0))
    expected = {
        "distill_fsp": 3.0 * np.mean((_fsp(ta, tb) - _fsp(sa, sb)) ** 2),
        "distill_soft_label": 0.5 * 4.0 * -(p * _log_softmax(sl / 2.0)).sum(1).mean(),
        "hint": np.mean((tb - sb) ** 2),
        "distill_mean_abs_gap": 2.0 * np.abs(tl - sl).mean(),
    }
    assert list(terms) == list(expected)
    for name, value in expected.items():
        assert terms[name].shape == []
        np.testing.assert_allclose(terms[name].item(), value, rtol=1e-4, err_msg=name)


def test_gradients_reach_the_student_only():
    teacher, student, x = _nets()
    d = Distiller(teacher, student, [{"type": "l2", "teacher": "b", "student": "a", "adapter": True},
                                     {"type": "soft_label", "teacher": "fc", "student": "fc"}])
    student(paddle.to_tensor(x))
    paddle.add_n(list(d.loss(paddle.to_tensor(x)).values())).backward()
    assert all(p.grad is None for p in teacher.parameters())
    for p in student.parameters() + d.adapters.parameters():
        assert p.grad is not None and np.abs(p.grad.numpy()).sum() > 0, p.name


def test_teacher_runs_in_eval_mode_and_keeps_its_statistics():
    paddle.seed(3)
    teacher, student = Tiny(3, 4, bn=True), Tiny(3, 4)
    x = paddle.randn([4, 2, 3, 3])
    teacher.train()
    mean_before = teacher.bn._mean.numpy().copy()
    d = Distiller(teacher, student, [{"type": "soft_label", "teacher": "fc", "student": "fc"}])
    teacher.train()  # even if someone switches it back
    student(x)
    first = d.loss(x)["distill_soft_label"].item()
    student(x)
    assert d.loss(x)["distill_soft_label"].item() == first  # no dropout noise
    np.testing.assert_array_equal(teacher.bn._mean.numpy(), mean_before)
    assert not teacher.training


def test_adapter_maps_student_channels_and_follows_a_channel_change():
    teacher, student, x = _nets()
    d = Distiller(teacher, student, [{"type": "l2", "teacher": "b", "student": "a", "adapter": True}])
    student(paddle.to_tensor(x))
    value = d.loss(paddle.to_tensor(x))["distill_l2"].item()
    adapter = d.adapters["distill_l2"]
    assert adapter.weight.shape == [4, 3, 1, 1]
    _, tb, _ = _np(teacher, x)
    sa, _, _ = _np(student, x)
    mapped = _conv1x1(adapter, sa)
    np.testing.assert_allclose(value, np.mean((tb - mapped) ** 2), rtol=1e-4)
    # pruning shrinks the student's layer "a" to 2 channels: a new adapter, new parameters
    student.a, student.b = nn.Conv2D(2, 2, 1), nn.Conv2D(2, 4, 1)
    d.rebind(student)
    student(paddle.to_tensor(x))
    d.loss(paddle.to_tensor(x))
    assert d.adapters["distill_l2"].weight.shape == [4, 2, 1, 1]
    assert d.adapters["distill_l2"].weight.name != adapter.weight.name


def test_build_creates_adapters_without_touching_student_state():
    paddle.seed(0)
    teacher, student = Tiny(3, 4), Tiny(3, 6, bn=True)
    student.train()
    student.fc.eval()  # a deliberately frozen sublayer keeps its flag
    mean_before = student.bn._mean.numpy().copy()
    d = Distiller(teacher, student, [{"type": "l2", "teacher": "b", "student": "bn", "adapter": True}])
    d.build(paddle.randn([2, 2, 3, 3]))
    assert d.adapters["distill_l2"].weight.shape == [4, 6, 1, 1]
    np.testing.assert_array_equal(student.bn._mean.numpy(), mean_before)
    assert student.training and student.bn.training and not student.fc.training


def test_state_dict_round_trip_keeps_weights_and_parameter_names():
    teacher, student, x = _nets()
    spec = [{"type": "l2", "teacher": "b", "student": "a", "adapter": True}]
    d = Distiller(teacher, student, spec)
    d.build(paddle.to_tensor(x))
    state = d.state_dict()
    d.close()
    other = Distiller(teacher, student, spec)
    other.set_state_dict(state)
    a, b = d.adapters["distill_l2"], other.adapters["distill_l2"]
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    np.testing.assert_array_equal(a.bias.numpy(), b.bias.numpy())
    assert (a.weight.name, a.bias.name) == (b.weight.name, b.bias.name)


def test_default_names_are_unique():
    teacher, student, _ = _nets()
    d = Distiller(teacher, student, [
        {"type": "soft_label", "teacher": "fc", "student": "fc"},
        {"type": "soft_label", "teacher": "fc", "student": "fc", "temperature": 4.0},
        {"type": lambda t, s: (t - s).mean(), "teacher": "fc", "student": "fc"}])
    assert [t.name for t in d.terms] == ["distill_soft_label", "distill_soft_label_2", "distill_custom"]


L2 = {"type": "l2", "teacher": "b", "student": "b"}
SOFT = {"type": "soft_label", "teacher": "fc", "student": "fc"}


@pytest.mark.parametrize("losses,error,message", [
    ({"type": "l2"}, TypeError, "losses must be a non-empty list of dicts"),
    ([], TypeError, "losses must be a non-empty list"),
    (["l2"], TypeError, r"losses\[0\] must be a dict"),
    ([{"teacher": "b", "student": "b"}], KeyError, r"losses\[0\] has no 'type'"),
    ([{**L2, "type": "kl"}], KeyError, "valid types: fsp, l2, soft_label"),
    ([{**SOFT, "temprature": 4}], KeyError,
     r"unknown keys \['temprature'\]; valid keys: .*'temperature', 'student_temperature'"),
    ([{**SOFT, "adapter": True}], KeyError, r"unknown keys \['adapter'\]"),
    ([{"type": "l2", "teacher": "b"}], KeyError, r"losses\[0\] has no 'student'"),
    ([{"type": "fsp", "teacher": "a", "student": ["a", "b"]}], ValueError,
     r"losses\[0\]\['teacher'\] must name a pair"),
    ([{**L2, "teacher": ["b"]}], ValueError, "must be one layer name for l2"),
    ([{**L2, "teacher": 3}], TypeError, "must be a layer name or a list"),
    ([{**L2, "weight": -1}], ValueError, r"\['weight'\] must be a number >= 0, got -1"),
    ([{**L2, "adapter": "yes"}], TypeError, r"\['adapter'\] must be True or False"),
    ([{**L2, "name": "x"}, {**L2, "name": "x"}], ValueError, r"losses\[1\]\['name'\] must be a new"),
    ([{**L2, "teacher": "bb"}], KeyError, "teacher has no layer named 'bb'; nearest names: 'b'"),
    ([{**L2, "student": "fc.x"}], KeyError, "student has no layer named 'fc.x'"),
])
def test_bad_config_is_refused_with_its_location(losses, error, message):
    teacher, student, _ = _nets()
    with pytest.raises(error, match=message):
        Distiller(teacher, student, losses)


def test_bad_networks_and_custom_results_are_refused():
    teacher, student, x = _nets()
    spec = [{"type": "l2", "teacher": "b", "student": "b"}]
    with pytest.raises(ValueError, match="teacher is the student or one of its sublayers"):
        Distiller(student.b, student, spec)
    with pytest.raises(TypeError, match="teacher must be a paddle.nn.Layer, got str"):
        Distiller("resnet", student, spec)
    d = Distiller(teacher, student,
                  [{"type": lambda t, s: t - s, "teacher": "fc", "student": "fc", "name": "gap"}])
    student(paddle.to_tensor(x))
    with pytest.raises(TypeError, match=r"loss 'gap' must return a scalar Tensor, got Tensor \[2, 5\]"):
        d.loss(paddle.to_tensor(x))
    with pytest.raises(RuntimeError, match="student layer 'fc' did not run"):
        d.loss(paddle.to_tensor(x))  # features are used once; run the student again first
