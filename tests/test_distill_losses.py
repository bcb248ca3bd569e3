"""Distillation losses against numpy formulas on random tensors."""
import numpy as np
import paddle
import pytest

from slimhub.distill import LOSSES, fsp, fsp_matrix, get_loss, l2, soft_label

RNG = np.random.default_rng(0)


def _t(a):
    return paddle.to_tensor(a.astype("float32"))


def _np_fsp_matrix(a, b):
    h, w = a.shape[2:]
    return np.einsum("nchw,ndhw->ncd", a, b) / (h * w)


def _np_log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _np_soft_label(t, s, temp, s_temp):
    p = np.exp(_np_log_softmax(t / temp, 1))
    return -(p * _np_log_softmax(s / s_temp, 1)).sum(axis=1).mean() * temp ** 2


def test_fsp_matrix_matches_numpy():
    a, b = RNG.normal(size=(2, 3, 4, 5)), RNG.normal(size=(2, 6, 4, 5))
    np.testing.assert_allclose(fsp_matrix(_t(a), _t(b)).numpy(), _np_fsp_matrix(a, b), rtol=1e-5, atol=1e-6)


def test_fsp_loss_matches_numpy_with_different_spatial_sizes_per_side():
    t1, t2 = RNG.normal(size=(2, 3, 8, 8)), RNG.normal(size=(2, 4, 8, 8))
    s1, s2 = RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 4, 4, 4))
    expected = np.mean((_np_fsp_matrix(t1, t2) - _np_fsp_matrix(s1, s2)) ** 2)
    value = fsp([_t(t1), _t(t2)], [_t(s1), _t(s2)])
    assert value.shape == []
    np.testing.assert_allclose(value.item(), expected, rtol=1e-5)


def test_fsp_pair_of_different_spatial_size_names_the_layers():
    pair = [_t(RNG.normal(size=(2, 3, 8, 8))), _t(RNG.normal(size=(2, 4, 4, 4)))]
    ok = [_t(RNG.normal(size=(2, 3, 4, 4))), _t(RNG.normal(size=(2, 4, 4, 4)))]
    with pytest.raises(ValueError, match=r"teacher layers 'blk1' \[2, 3, 8, 8\] and 'blk2' \[2, 4, 4, 4\]"):
        fsp(pair, ok, names=(["blk1", "blk2"], ["s1", "s2"]))


def test_fsp_channel_mismatch_between_teacher_and_student_is_refused():
    t = [_t(RNG.normal(size=(1, 3, 4, 4))), _t(RNG.normal(size=(1, 4, 4, 4)))]
    s = [_t(RNG.normal(size=(1, 2, 4, 4))), _t(RNG.normal(size=(1, 4, 4, 4)))]
    message = r"teacher \['a', 'b'\] gives \[1, 3, 4\], student \['c', 'd'\] gives \[1, 2, 4\]"
    with pytest.raises(ValueError, match=message):
        fsp(t, s, names=(["a", "b"], ["c", "d"]))


def test_l2_matches_numpy_and_hints_at_adapter_when_channels_differ():
    t, s = RNG.normal(size=(2, 3, 4, 4)), RNG.normal(size=(2, 3, 4, 4))
    np.testing.assert_allclose(l2(_t(t), _t(s)).item(), np.mean((t - s) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match=r"teacher layer 'tl'.*student layer 'sl'.*adapter"):
        l2(_t(t), _t(RNG.normal(size=(2, 5, 4, 4))), names=("tl", "sl"))


@pytest.mark.parametrize("temp,s_temp", [(1.0, None), (4.0, None), (4.0, 2.0)])
def test_soft_label_matches_numpy(temp, s_temp):
    t, s = RNG.normal(size=(4, 10)) * 3, RNG.normal(size=(4, 10)) * 3
    expected = _np_soft_label(t, s, temp, s_temp or temp)
    value = soft_label(_t(t), _t(s), temperature=temp, student_temperature=s_temp)
    np.testing.assert_allclose(value.item(), expected, rtol=1e-5)


def test_soft_label_on_dense_logits_uses_axis_one():
    t, s = RNG.normal(size=(2, 5, 3, 3)), RNG.normal(size=(2, 5, 3, 3))
    np.testing.assert_allclose(soft_label(_t(t), _t(s), temperature=2.0).item(),
                               _np_soft_label(t, s, 2.0, 2.0), rtol=1e-5)


def test_soft_label_bad_temperature_and_shapes():
    x = _t(RNG.normal(size=(2, 3)))
    with pytest.raises(ValueError, match="'temperature' must be a number > 0, got 0"):
        soft_label(x, x, temperature=0)
    with pytest.raises(ValueError, match="'student_temperature'"):
        soft_label(x, x, student_temperature=-1.0)
    with pytest.raises(ValueError, match=r"layer 'fc' gives \[2, 3\], student layer 'head' gives \[2, 4\]"):
        soft_label(x, _t(RNG.normal(size=(2, 4))), names=("fc", "head"))


def test_non_tensor_feature_is_refused():
    with pytest.raises(TypeError, match="teacher layer 'lstm' gave a tuple"):
        l2((1, 2), _t(RNG.normal(size=(2, 3))), names=("lstm", "s"))


def test_registry_lists_valid_names():
    assert set(LOSSES) == {"fsp", "l2", "soft_label"}
    assert get_loss("l2") is l2
    with pytest.raises(KeyError, match="loss type 'kl'; valid types: fsp, l2, soft_label"):
        get_loss("kl")
