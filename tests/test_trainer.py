"""Trainer against a plain Paddle loop and numpy references."""
import numpy as np
import paddle
import pytest

import slimhub
from slimhub.callbacks import Callback
from conftest import ReplaceClassifier, tiny_net


def make(seed=0, dropout=0.0, lr=0.05, metrics=True, **kw):
    paddle.seed(seed)
    net = tiny_net(dropout)
    opt = paddle.optimizer.Momentum(lr, parameters=net.parameters())
    m = [paddle.metric.Accuracy(topk=(1, 2))] if metrics else None
    return slimhub.Trainer(net, opt, paddle.nn.CrossEntropyLoss(), metrics=m, **kw)


def plain_loop(net, opt, data, epochs, batch_size, extra=None):
    loss_fn = paddle.nn.CrossEntropyLoss()
    losses = []
    for _ in range(epochs):
        net.train()
        for i in range(0, len(data), batch_size):
            x = paddle.to_tensor(data.images[i:i + batch_size])
            y = paddle.to_tensor(data.labels[i:i + batch_size])
            loss = loss_fn(net(x), y)
            if extra is not None:
                loss = loss + extra(net)
            loss.backward()
            opt.step()
            opt.clear_grad()
            losses.append(loss.item())
    return losses


def test_fit_equals_plain_paddle_loop(data):
    trainer = make()
    trainer.fit(data, epochs=2, batch_size=16, shuffle=False, verbose=0)
    paddle.seed(0)
    net = tiny_net()
    plain_loop(net, paddle.optimizer.Momentum(0.05, parameters=net.parameters()), data, 2, 16)
    for (k, a), b in zip(trainer.network.state_dict().items(), net.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_evaluate_and_predict_match_numpy(data):
    trainer = make()
    trainer.fit(data, epochs=1, batch_size=16, verbose=0)
    logits = trainer.predict(data, batch_size=10)
    labels = data.labels.ravel()
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    top2 = np.argsort(-logits, axis=1)[:, :2]
    result = trainer.evaluate(data, batch_size=7)
    assert logits.shape == (len(data), 3)
    assert result["loss"] == pytest.approx(-logp[np.arange(len(labels)), labels].mean(), rel=1e-5)
    assert result["acc_top1"] == pytest.approx((logits.argmax(1) == labels).mean())
    assert result["acc_top2"] == pytest.approx((top2 == labels[:, None]).any(1).mean())


def test_static_graph_follows_dygraph_loss_curve(data):
    curves = []
    for static in (False, True):
        trainer = make(static=static, metrics=False)
        seen = []

        class Record(Callback):
            def on_train_batch_end(self, step, logs=None):
                seen.append(logs["step_loss"])
        trainer.fit(data, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=[Record()])
        curves.append(seen)
    assert len(curves[0]) == 6
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-4, atol=1e-5)


def test_loss_hook_terms_are_added_and_logged(data):
    weight = 0.01

    class L2(Callback):
        def on_loss(self, inputs, outputs, labels):
            return {"l2": weight * sum((p ** 2).sum() for p in self.network.parameters())}

    logs_seen = []

    class Record(Callback):
        def on_train_batch_end(self, step, logs=None):
            logs_seen.append(dict(logs))

    trainer = make(metrics=False)
    trainer.fit(data, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[L2(), Record()])
    paddle.seed(0)
    net = tiny_net()
    plain = plain_loop(net, paddle.optimizer.Momentum(0.05, parameters=net.parameters()), data, 1, 16,
                       extra=lambda n: weight * sum((p ** 2).sum() for p in n.parameters()))
    np.testing.assert_allclose([l["step_loss"] for l in logs_seen], plain, rtol=1e-5)
    first = logs_seen[0]
    assert first["loss"] == pytest.approx(first["task_loss"] + first["l2"], rel=1e-5)
    for a, b in zip(trainer.network.parameters(), net.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_structure_change_rebinds_optimizer(data):
    replace = ReplaceClassifier()
    trainer = make(metrics=False)
    trainer.fit(data, epochs=2, batch_size=16, verbose=0, callbacks=[replace])
    assert replace.events == ["Sequential"]
    assert trainer.network[-1].weight is replace.new_weight
    assert not np.allclose(replace.new_weight.numpy(), replace.before)  # the optimizer updates it


def test_scalars_from_trainer_log_reach_the_logs(data):
    class Report(Callback):
        def on_train_batch_begin(self, step, logs=None):
            self.log("pruned_flops", 0.25 * step)

    seen = []

    class Record(Callback):
        def on_train_batch_end(self, step, logs=None):
            seen.append(logs["pruned_flops"])
    make().fit(data, epochs=1, batch_size=16, verbose=0, callbacks=[Report(), Record()])
    assert seen == [0.0, 0.25, 0.5]


def test_lr_scheduler_steps_per_epoch(data):
    paddle.seed(0)
    net = tiny_net()
    sched = paddle.optimizer.lr.StepDecay(0.1, step_size=1, gamma=0.5)
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(sched, parameters=net.parameters()),
                              paddle.nn.CrossEntropyLoss())
    history = trainer.fit(data, epochs=3, batch_size=16, verbose=0)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])


def test_early_stopping_and_nan_guard(data, capsys):
    from slimhub.callbacks import EarlyStopping, NaNGuard

    trainer = make()
    # no change of the loss can beat a min_delta of 100
    history = trainer.fit(data, data, epochs=10, batch_size=16, verbose=0,
                          callbacks=[EarlyStopping(monitor="eval_loss", patience=2, min_delta=100)])
    assert len(history["loss"]) == 3  # the first sets best, two more without improvement

    def nan_after_two(outputs, labels, calls=[0]):
        calls[0] += 1
        loss = paddle.nn.functional.cross_entropy(outputs, labels)
        return loss * float("nan") if calls[0] == 3 else loss

    paddle.seed(0)
    net = tiny_net()
    trainer = slimhub.Trainer(net, paddle.optimizer.SGD(0.1, parameters=net.parameters()), nan_after_two)
    guard = NaNGuard()
    history = trainer.fit(data, epochs=2, batch_size=8, verbose=0, callbacks=[guard])
    assert "epoch 1, step 3" in guard.message
    assert "epoch 1, step 3" in capsys.readouterr().err
    assert len(history["loss"]) == 1


def test_export_loads_in_paddle_jit_and_matches(tmp_path, data):
    trainer = make()
    trainer.fit(data, epochs=1, batch_size=16, verbose=0)
    files = trainer.export(str(tmp_path / "m"), [paddle.static.InputSpec([None, 1, 8, 8], "float32")])
    assert all(f.startswith(str(tmp_path / "m.")) for f in files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    loaded = paddle.jit.load(str(tmp_path / "m"))
    loaded.eval()
    x = paddle.to_tensor(data.images[:5])
    np.testing.assert_allclose(loaded(x).numpy(), trainer.predict(data)[:5], rtol=1e-5, atol=1e-6)


def test_progress_bar_quiet_and_summary(data, capsys):
    make().fit(data, epochs=1, batch_size=16, verbose=0)
    assert capsys.readouterr().err == ""
    make().fit(data, epochs=2, batch_size=16, verbose=2)
    err = capsys.readouterr().err
    assert "epoch 1/2:" in err and "epoch 2/2:" in err and "acc_top1=" in err
