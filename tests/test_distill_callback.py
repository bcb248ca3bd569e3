"""DistillCallback inside slimhub.Trainer: end to end, epoch window, structure changes, resume."""

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import mobilenet_v1, resnet18

import slimhub
from slimhub.callbacks import Callback
from slimhub.callbacks.distill import ADAPTERS, DistillCallback


class Images(paddle.io.Dataset):
    def __init__(self, n, shape, classes=10):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(n, *shape)).astype("float32")
        self.y = rng.integers(0, classes, size=(n, 1)).astype("int64")

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class Tiny(nn.Layer):
    def __init__(self, c_a=4, c_b=6, classes=5):
        super().__init__()
        self.a = nn.Conv2D(2, c_a, 1)
        self.b = nn.Conv2D(c_a, c_b, 1)
        self.fc = nn.Linear(c_b, classes)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean([2, 3]))


class Recorder(Callback):
    """Keeps each step's log keys by epoch and the adapter weights after the first step."""

    def __init__(self, distill):
        super().__init__()
        self.distill, self.keys, self.first_adapter = distill, {}, None

    def on_train_batch_end(self, step, logs=None):
        self.keys.setdefault(self.model.epoch, set()).update(logs)
        adapters = self.distill.distiller.adapters
        if self.first_adapter is None and len(adapters):
            self.first_adapter = {k: v.numpy().copy() for k, v in adapters.state_dict().items()}


def _trainer(net, lr=0.05, loss=None):
    opt = paddle.optimizer.Momentum(lr, parameters=net.parameters())
    return slimhub.Trainer(net, opt, loss or nn.CrossEntropyLoss())


def _snapshot(net):
    return {k: v.numpy().copy() for k, v in net.state_dict().items()}


def test_resnet_teacher_mobilenet_student_end_to_end(tmp_path):
    paddle.seed(0)
    teacher, student = resnet18(num_classes=10), mobilenet_v1(scale=0.5, num_classes=10)
    teacher_before, student_keys = _snapshot(teacher), list(student.state_dict())
    cb = DistillCallback(teacher, [
        {"type": "soft_label", "teacher": "fc", "student": "fc", "temperature": 4.0},
        {"type": "l2", "teacher": "layer2", "student": "conv3_2._depthwise_conv", "adapter": True,
         "weight": 0.1},
        {"type": "fsp", "teacher": ["layer1.0", "layer1.1"], "student": ["conv2_2", "conv3_1"]},
    ])
    rec = Recorder(cb)
    trainer = _trainer(student, lr=0.01)
    student_before = _snapshot(student)
    history = trainer.fit(Images(6, (3, 32, 32)), epochs=1, batch_size=2, callbacks=[cb, rec], verbose=0)

    for name in ("distill_soft_label", "distill_l2", "distill_fsp"):
        assert len(history[name]) == 1 and np.isfinite(history[name][0])
    total = np.array(history["task_loss"]) + sum(np.array(history[n]) for n in
                                                 ("distill_soft_label", "distill_l2", "distill_fsp"))
    np.testing.assert_allclose(history["loss"], total, rtol=1e-4)
    for k, v in teacher.state_dict().items():  # the teacher is never updated
        np.testing.assert_array_equal(v.numpy(), teacher_before[k], err_msg=k)
    assert any(not np.array_equal(v.numpy(), student_before[k]) for k, v in student.state_dict().items())
    adapter = cb.distiller.adapters["distill_l2"]
    assert adapter.weight.shape == [128, 64, 1, 1]  # 64 student channels -> 128 of the teacher
    assert not np.array_equal(adapter.weight.numpy(), rec.first_adapter["distill_l2.weight"])  # it trained
    # after fit the student is exactly the student: no adapters, no hooks
    assert not hasattr(student, ADAPTERS) and list(student.state_dict()) == student_keys
    for layer in student.sublayers(include_self=True) + teacher.sublayers(include_self=True):
        assert not layer._forward_pre_hooks and not layer._forward_post_hooks
    files = trainer.export(str(tmp_path / "student"), [paddle.static.InputSpec([None, 3, 32, 32], "float32")])
    assert any(f.endswith(".pdiparams") for f in files)
    loaded = paddle.jit.load(str(tmp_path / "student"))
    assert sum(int(np.prod(p.shape)) for p in loaded.parameters()) == \
        sum(int(np.prod(p.shape)) for p in student.parameters())


def test_distillation_alone_pulls_the_student_to_the_teacher():
    paddle.seed(1)
    teacher, student = Tiny(), Tiny()
    data = Images(8, (2, 3, 3), classes=5)
    x = paddle.to_tensor(data.x)

    def gap():
        p = nn.functional.softmax(teacher(x), 1)
        return float(-(p * nn.functional.log_softmax(student(x), 1)).sum(1).mean().item())

    teacher.eval()
    before = gap()
    cb = DistillCallback(teacher, [{"type": "soft_label", "teacher": "fc", "student": "fc"}])
    trainer = _trainer(student, lr=0.5, loss=lambda out, label: out.sum() * 0.0)  # no task loss
    history = trainer.fit(data, epochs=15, batch_size=8, callbacks=[cb], verbose=0, shuffle=False)
    assert history["distill_soft_label"][-1] < history["distill_soft_label"][0]
    assert gap() < before


def test_epoch_window():
    paddle.seed(2)
    cb = DistillCallback(Tiny(), [{"type": "soft_label", "teacher": "fc", "student": "fc"}],
                         start_epoch=1, end_epoch=2)
    rec = Recorder(cb)
    _trainer(Tiny()).fit(Images(4, (2, 3, 3), 5), epochs=3, batch_size=2, callbacks=[cb, rec], verbose=0)
    assert ["distill_soft_label" in rec.keys[e] for e in range(3)] == [False, True, False]


class Wrap(nn.Layer):
    """Stands for a quantization wrapper around a layer."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 1.0


class Restructure(Callback):
    """At epoch 1: shrinks Tiny's layer ``a`` to 2 channels (pruning) and wraps ``fc`` (QAT)."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            net = self.network
            net.a, net.b = nn.Conv2D(2, 2, 1), nn.Conv2D(2, 6, 1)
            net.fc = Wrap(net.fc)
            self.structure_changed()


def test_follows_pruning_and_wrapping_of_the_student():
    paddle.seed(3)
    teacher, student = Tiny(c_a=3), Tiny()
    cb = DistillCallback(teacher, [{"type": "l2", "teacher": "a", "student": "a", "adapter": True},
                                   {"type": "soft_label", "teacher": "fc", "student": "fc"}])
    rec = Recorder(cb)
    trainer = _trainer(student)
    seen = {}

    class Check(Callback):
        def on_train_batch_end(self, step, logs=None):
            adapter = cb.distiller.adapters["distill_l2"]
            names = {p.name for p in trainer.optimizer._parameter_list}
            seen[self.model.epoch] = (adapter.channels, adapter.weight.name in names)

    trainer.fit(Images(4, (2, 3, 3), 5), epochs=2, batch_size=2,
                callbacks=[Restructure(), cb, rec, Check()], verbose=0)
    assert seen == {0: ((4, 3), True), 1: ((2, 3), True)}
    assert {"distill_l2", "distill_soft_label"} <= rec.keys[1]
    assert not hasattr(student, ADAPTERS)


class ConvNet(nn.Layer):
    def __init__(self, width):
        super().__init__()
        self.c1, self.b1 = nn.Conv2D(3, width, 3, padding=1), nn.BatchNorm2D(width)
        self.c2, self.b2 = nn.Conv2D(width, width, 3, padding=1), nn.BatchNorm2D(width)
        self.fc = nn.Linear(width, 5)

    def forward(self, x):
        y = nn.functional.relu(self.b1(self.c1(x)))
        return self.fc(nn.functional.relu(self.b2(self.c2(y))).mean([2, 3]))


def test_works_with_prune_callback():
    from slimhub.callbacks.prune import PruneCallback
    paddle.seed(5)
    teacher, student = ConvNet(16), ConvNet(8)
    cb = DistillCallback(teacher, [{"type": "l2", "teacher": "b1", "student": "b1", "adapter": True},
                                   {"type": "soft_label", "teacher": "fc", "student": "fc"}])
    trainer = _trainer(student, lr=0.01)
    seen = {}

    class Check(Callback):
        def on_epoch_end(self, epoch, logs=None):
            adapter = cb.distiller.adapters["distill_l2"]
            in_optimizer = adapter.weight.name in {p.name for p in trainer.optimizer._parameter_list}
            seen[epoch] = (adapter.channels, in_optimizer, "distill_l2" in logs)

    trainer.fit(Images(8, (3, 8, 8), 5), epochs=2, batch_size=4, verbose=0, callbacks=[
        PruneCallback(0.5, input_shape=(3, 8, 8), start_epoch=1, round_to=1), cb, Check()])
    assert student.b1.weight.shape == [4]  # pruned from 8 channels
    assert seen == {0: ((8, 16), True, True), 1: ((4, 16), True, True)}
    assert not hasattr(student, ADAPTERS)


def _run(save_dir, epochs, resume):
    """Fresh networks, callback and optimizer, as after a restart. Plain SGD keeps no
    per-parameter state, which Paddle would key by per-process parameter names."""
    paddle.seed(4)
    teacher, student = Tiny(c_a=3), Tiny()
    cb = DistillCallback(teacher, [{"type": "l2", "teacher": "a", "student": "a", "adapter": True}])
    trainer = slimhub.Trainer(student, paddle.optimizer.SGD(0.1, parameters=student.parameters()),
                              nn.CrossEntropyLoss())
    trainer.fit(Images(8, (2, 3, 3), 5), epochs=epochs, batch_size=4, callbacks=[cb], verbose=0,
                save_dir=str(save_dir), resume=resume, seed=7)
    weights = _snapshot(student)
    weights["adapter"] = cb.distiller.state_dict()["adapters"]["distill_l2"]["weight"]
    return weights


def test_resume_restores_adapters_and_matches_an_uninterrupted_run(tmp_path):
    full = _run(tmp_path / "full", 2, False)
    _run(tmp_path / "cut", 1, False)
    ckpt = paddle.load(str(tmp_path / "cut" / "last.pdckpt"))
    assert f"{ADAPTERS}.distill_l2.weight" in ckpt["network"]
    resumed = _run(tmp_path / "cut", 2, True)
    for k in full:
        np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)


def test_needs_a_dygraph_slimhub_trainer():
    cb = DistillCallback(Tiny(), [{"type": "soft_label", "teacher": "fc", "student": "fc"}])
    net = Tiny()
    static = slimhub.Trainer(net, paddle.optimizer.SGD(parameters=net.parameters()), nn.CrossEntropyLoss(),
                             static=True)
    with pytest.raises(ValueError, match="dygraph Trainer"):
        static.fit(Images(2, (2, 3, 3), 5), batch_size=2, callbacks=[cb], verbose=0)
    model = paddle.Model(Tiny())
    model.prepare(paddle.optimizer.SGD(parameters=model.network.parameters()), nn.CrossEntropyLoss())
    with pytest.raises(TypeError, match="needs slimhub.Trainer"):
        model.fit(Images(2, (2, 3, 3), 5), batch_size=2, callbacks=[cb], verbose=0)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"start_epoch": -1}, ValueError, r"start_epoch must be an integer in \[0, 9999\], got -1"),
    ({"start_epoch": 2, "end_epoch": 2}, ValueError,
     r"so end_epoch must be greater than 2, got end_epoch=2"),
    ({"end_epoch": 2.5}, ValueError, r"end_epoch must be null or an integer in \[1, 10000\], got 2.5"),
    ({"teacher": "resnet18"}, TypeError, "teacher must be a paddle.nn.Layer, got str"),
    ({"losses": [{"type": "l2", "teacher": "aa", "student": "a"}]}, KeyError,
     "teacher has no layer named 'aa'; nearest names: 'a'"),
    ({"losses": [{"type": "l2", "teacher": "a"}]}, KeyError, r"losses\[0\] has no 'student'"),
])
def test_bad_arguments_fail_at_construction(kwargs, error, message):
    args = {"teacher": Tiny(), "losses": [{"type": "l2", "teacher": "a", "student": "a"}], **kwargs}
    with pytest.raises(error, match=message):
        DistillCallback(**args)
