"""Reading, merging, validating and building recipes."""
import inspect
import os
import textwrap

import numpy as np
import paddle
import pytest

import slimhub
from slimhub.callbacks import Callback
from slimhub.callbacks.distill import DistillCallback
from slimhub.callbacks.prune import PruneCallback
from slimhub.callbacks.qat import QATCallback
from slimhub.model_zoo import create_model
from slimhub.recipe import RecipeError, check_recipe, list_recipes, load_recipe, run_recipe, schema_keys
from slimhub.recipe import build

TINY = ["data.train_limit=16", "data.eval_limit=16"]


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def test_include_merges_mappings_replaces_lists_and_null_removes_a_strategy(tmp_path):
    write(tmp_path, "base.yaml", """\
        model: {name: mobilenet_v1}
        trainer:
          epochs: 6
          optimizer: {type: momentum, learning_rate: 0.1, weight_decay: 4e-5}
        strategies:
          prune: {pruned_flops: 0.3}
          qat: {start_epoch: 4}
        export: {formats: [inference, onnx]}
        """)
    child = write(tmp_path, "child.yaml", """\
        include: base.yaml
        trainer:
          optimizer: {learning_rate: 0.01}
        strategies:
          qat: null
        export: {formats: [onnx]}
        """)
    config = check_recipe(child)
    assert config["trainer"]["optimizer"] == {"type": "momentum", "learning_rate": 0.01, "momentum": 0.9,
                                              "use_nesterov": False, "weight_decay": 4e-5,
                                              "multi_precision": False, "rescale_grad": 1.0,
                                              "use_multi_tensor": False}
    assert isinstance(config["trainer"]["optimizer"]["weight_decay"], float)  # YAML 1.2: 4e-5 is a number
    assert config["trainer"]["epochs"] == 6
    assert list(config["strategies"]) == ["prune"] and config["strategies"]["prune"]["pruned_flops"] == 0.3
    assert config["export"]["formats"] == ["onnx"]


def test_error_in_a_child_key_names_the_child_and_an_included_key_the_base(tmp_path):
    write(tmp_path, "base.yaml", "model: {name: mobilenet_v1}\ntrainer:\n  epochs: 2\n")
    child = write(tmp_path, "child.yaml", "include: base.yaml\ntrainer:\n  batch_size: 0\n")
    with pytest.raises(RecipeError) as info:
        check_recipe(child)
    assert str(info.value).startswith(f"{child}:3: trainer.batch_size: got 0")
    with pytest.raises(RecipeError) as info:
        check_recipe(child, ["trainer.epochs=2.5"])
    assert str(info.value).startswith("--set trainer.epochs=2.5: trainer.epochs: got 2.5")


def test_include_cycle_is_refused(tmp_path):
    a = write(tmp_path, "a.yaml", "include: b.yaml\nmodel: {name: mobilenet_v1}\n")
    write(tmp_path, "b.yaml", "include: a.yaml\n")
    with pytest.raises(RecipeError, match=r"b.yaml:1: include: recipes include each other in a cycle"):
        check_recipe(a)


def test_overrides_are_parsed_as_yaml(tmp_path):
    path = write(tmp_path, "r.yaml", "model: {name: mobilenet_v1}\ntrainer: {epochs: 5}\n")
    config = check_recipe(path, ["trainer.epochs=3", "strategies.prune.include=[conv1, 'conv2*']",
                                 "strategies.prune.pruned_flops=0.25", "trainer.seed=null"])
    assert config["trainer"]["epochs"] == 3 and config["trainer"]["seed"] is None
    assert config["strategies"]["prune"]["include"] == ["conv1", "conv2*"]
    assert config["strategies"]["prune"]["pruned_flops"] == 0.25


def test_strategy_keys_and_defaults_are_the_callbacks_constructor_arguments(tmp_path):
    path = write(tmp_path, "r.yaml", """\
        model: {name: mobilenet_v1}
        trainer: {epochs: 3}
        strategies: {prune: {}, qat: {start_epoch: 1}}
        """)
    config = check_recipe(path)
    for kind, cls in (("prune", PruneCallback), ("qat", QATCallback)):
        params = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()
                  if n not in ("self", "eval_fn")}
        given = {k: v for k, v in config["strategies"][kind].items() if k != "type"}
        assert set(given) == set(params)
        assert all(given[k] == params[k] for k in params if k != "start_epoch")


def test_a_new_callback_argument_is_a_new_recipe_key_without_schema_changes(tmp_path, monkeypatch):
    class Toy(Callback):
        def __init__(self, alpha=0.25, mode="fast", start_epoch=0):
            super().__init__()
            self.alpha, self.mode, self.start_epoch = alpha, mode, start_epoch

    monkeypatch.setitem(build.STRATEGIES, "toy", Toy)
    path = write(tmp_path, "r.yaml", """\
        model:
          name: mobilenet_v1
          args: {in_channels: 1, num_classes: 10, scale: 0.25}
        trainer: {epochs: 2}
        strategies:
          toy: {alpha: 0.5}
          another: {type: toy, start_epoch: 1, mode: slow}
        """)
    recipe = load_recipe(path, TINY)
    toys = [c for c in recipe.callbacks if isinstance(c, Toy)]
    assert sorted((t.alpha, t.mode, t.start_epoch) for t in toys) == [(0.25, "slow", 1), (0.5, "fast", 0)]
    with pytest.raises(RecipeError, match=r"--set strategies.toy.alpa=1.0: strategies.toy.alpa: unknown key in strategy 'toy'; "
                                          r"did you mean 'alpha'\?"):
        check_recipe(path, ["strategies.toy.alpa=1.0"])
    with pytest.raises(RecipeError, match=r"strategies.toy.alpha: got 'big'; allowed: a number"):
        check_recipe(path, ["strategies.toy.alpha=big"])


def test_load_recipe_builds_the_described_job():
    recipe = load_recipe("fashion_mnist/mobilenet_v1_prune50_qat", TINY + ["model.weights=null"])
    reference = create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25)
    assert slimhub.flops(recipe.network, (1, 28, 28)) == slimhub.flops(reference, (1, 28, 28))
    assert recipe.input_shape == (1, 28, 28)
    assert len(recipe.train_data) == 16 and len(recipe.eval_data) == 16
    opt = recipe.trainer.optimizer
    assert isinstance(opt, paddle.optimizer.Momentum)
    assert isinstance(opt._learning_rate, paddle.optimizer.lr.CosineAnnealingDecay)
    assert opt.get_lr() == pytest.approx(0.01) and opt._learning_rate.T_max == 3
    prune, qat = recipe.callbacks
    assert isinstance(prune, PruneCallback) and isinstance(qat, QATCallback)
    assert prune.pruned_flops == 0.5 and prune.input_shape == (1, 28, 28) and prune.schedule == [0]
    assert recipe.config["strategies"]["qat"]["start_epoch"] == 2
    assert recipe.config["export"]["formats"] == ["paddle_int8", "onnx_int8"]


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_validates(name):
    config = check_recipe(name)
    assert config["model"]["name"] and config["trainer"]["epochs"] >= 1


def fake_image_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            os.makedirs(os.path.join(root, split, cls))
            for i in range(2):
                pixels = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(root, split, cls, f"{i}.png"))
    return root


def test_imagenet_recipes_build_on_a_tiny_fake_folder(tmp_path):
    root = fake_image_folder(str(tmp_path / "imagenet"))
    small = [f"data.root={root}", "data.image_size=32", "model.pretrained=false"]
    recipe = load_recipe("imagenet/mobilenet_v1_distill_qat",
                         small + ["strategies.distill.teacher.pretrained=false"])
    distill, qat = recipe.callbacks
    assert isinstance(distill, DistillCallback) and isinstance(qat, QATCallback)
    assert "layer4" in dict(distill.teacher.named_sublayers())  # the ResNet50 teacher
    assert (distill.end_epoch, recipe.config["strategies"]["qat"]["start_epoch"]) == (120, 120)
    assert len(recipe.train_data) == 4 and recipe.input_shape == (3, 32, 32)
    x, y = recipe.train_data[0]
    assert list(x.shape) == [3, 32, 32]
    recipe = load_recipe("imagenet/mobilenet_v1_prune_sensitive36", small)
    assert recipe.callbacks[0].method == "sensitive" and recipe.callbacks[0].schedule == [0, 10, 20]


def test_model_from_module_function_and_weights_file(tmp_path, monkeypatch):
    write(tmp_path, "my_models.py", """\
        import paddle
        def small(num_classes=10):
            return paddle.nn.Sequential(paddle.nn.Conv2D(1, 4, 3, padding=1), paddle.nn.ReLU(),
                                        paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(),
                                        paddle.nn.Linear(4, num_classes))
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_models

    paddle.seed(3)
    trained = my_models.small(num_classes=10)
    paddle.save(trained.state_dict(), str(tmp_path / "w.pdparams"))
    path = write(tmp_path, "r.yaml", f"""\
        model:
          name: my_models:small
          args: {{num_classes: 10}}
          weights: {tmp_path / 'w.pdparams'}
        """)
    recipe = load_recipe(path, TINY)
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(2, 1, 28, 28)).astype("float32"))
    trained.eval(), recipe.network.eval()
    np.testing.assert_array_equal(recipe.network(x).numpy(), trained(x).numpy())
    assert recipe.trainer.metrics[0].topk == (1, 5)
    with pytest.raises(RecipeError, match=r"model.name: cannot build model 'my_models:big'"):
        load_recipe(path, TINY + ["model.name=my_models:big"])
    with pytest.raises(RecipeError, match=r"model.weights: weights in .* do not fit the network \(.*"
                                          r"network \[4, 12\] vs file \[4, 10\]"):
        load_recipe(path, TINY + ["model.args.num_classes=12"])


def test_run_recipe_trains_evaluates_and_exports(tmp_path):
    out = tmp_path / "run"
    overrides = ["data.train_limit=64", "data.eval_limit=48", "trainer.epochs=1", "trainer.batch_size=32",
                 "trainer.verbose=0", f"trainer.save_dir={out}", f"export.path={out / 'model'}"]
    result = run_recipe("fashion_mnist/mobilenet_v1_baseline", overrides)
    assert sorted(os.path.basename(f) for f in result["files"])[-1] == "model.pdiparams"
    assert os.path.isfile(out / "last.pdckpt")
    # reference: the exported file, run by paddle.jit.load, scored with numpy
    data = slimhub.data.fashion_mnist("test", limit=48)
    exported = paddle.jit.load(str(out / "model"))
    exported.eval()
    logits = exported(paddle.to_tensor(data.images)).numpy()
    top1 = float((logits.argmax(axis=1) == data.labels[:, 0]).mean())
    assert result["eval"]["acc_top1"] == pytest.approx(top1, abs=1e-6)
    reference = create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25)
    assert (result["flops"], result["params"]) == tuple(slimhub.flops(reference, (1, 28, 28)).values())
    again = load_recipe("fashion_mnist/mobilenet_v1_baseline", overrides)
    again.restore()
    assert again.evaluate()["acc_top1"] == pytest.approx(top1, abs=1e-6)


def test_docs_name_every_recipe_key():
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "recipes.md")) as f:
        docs = f.read()
    keys = [k for k in schema_keys() if not k.startswith("trainer.optimizer[")]  # documented as Paddle's
    missing = [k for k in keys if f"`{k.rsplit('.', 1)[-1]}`" not in docs and f"{k.rsplit('.', 1)[-1]}:" not in docs]
    assert not missing
