"""Criteria pick the channels that plain numpy references pick."""
import numpy as np
import paddle
import pytest

from slimhub.prune import CRITERIA, build_graph, get_criterion, make_plan, select_kept
from slimhub.prune.criteria import filters_of


def ref_l1(w):
    return np.array([sum(abs(v) for v in row) for row in w.reshape(w.shape[0], -1)])


def ref_l2(w):
    return np.array([np.linalg.norm(row) for row in w.reshape(w.shape[0], -1)])


def ref_fpgm(w):
    rows = w.reshape(w.shape[0], -1)
    return np.array([sum(np.linalg.norm(a - b) for b in rows) for a in rows])


REFERENCES = {"l1_norm": ref_l1, "l2_norm": ref_l2, "fpgm": ref_fpgm}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_scores_match_numpy(name):
    w = np.random.default_rng(0).normal(size=(7, 3, 3, 3))
    np.testing.assert_allclose(get_criterion(name)(w.reshape(7, -1)), REFERENCES[name](w), rtol=1e-6)


def test_unknown_criterion_lists_valid_names():
    with pytest.raises(KeyError, match="l1_norm"):
        get_criterion("l3_norm")
    assert sorted(CRITERIA) == ["fpgm", "l1_norm", "l2_norm"]


def test_select_kept_equal_per_block():
    scores = np.array([5, 1, 3, 2, 9, 8, 0, 7.0])
    # blocks of 4: remove the 2 lowest of each block
    np.testing.assert_array_equal(select_kept(scores, 4, blocks=2), [0, 2, 4, 5])
    with pytest.raises(ValueError):
        select_kept(scores, 3, blocks=2)
    with pytest.raises(ValueError):
        select_kept(scores, 8)


class Residual(paddle.nn.Layer):
    """Two convolutions feeding one add: their channels form one group."""

    def __init__(self):
        super().__init__()
        self.a = paddle.nn.Conv2D(3, 6, 3, padding=1)
        self.b = paddle.nn.Conv2D(3, 6, 1)
        self.head = paddle.nn.Conv2D(6, 2, 1)

    def forward(self, x):
        return self.head(paddle.nn.functional.relu(self.a(x) + self.b(x)))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_plan_keeps_top_channels_of_summed_scores(name):
    paddle.seed(3)
    model = Residual()
    graph = build_graph(model, (3, 8, 8))
    (group,) = graph.groups
    assert sorted(group.sources) == ["a", "b"]
    plan = make_plan(model, graph, {group.name: 2}, criterion=name)
    ref = REFERENCES[name]
    scores = ref(model.a.weight.numpy().astype(np.float64)) + ref(model.b.weight.numpy().astype(np.float64))
    expected = sorted(np.argsort(-scores)[:4])
    for layer in ("a", "b"):
        assert plan["layers"][layer]["out_channels"]["keep"] == expected
    assert plan["layers"]["head"]["in_channels"]["keep"] == expected


def test_linear_filters_are_columns():
    layer = paddle.nn.Linear(4, 3)
    np.testing.assert_array_equal(filters_of(layer), layer.weight.numpy().T)
