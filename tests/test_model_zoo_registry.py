"""Names, the manifest, and create_model loading weights through a local mirror."""
import hashlib
import json
import os
import shutil

import numpy as np
import paddle
import pytest
from paddle.vision import models as pv
from paddle.vision.models import mobilenetv1, resnet, vgg

from slimhub.model_zoo import (
    UnknownModelError,
    create_model,
    list_models,
    model_info,
    record_pretrained,
    registry,
)
from slimhub.model_zoo.hub import DownloadError
from slimhub.prune import apply_plan
from slimhub.quant import QuantConfig, quantize

IMAGENET = {  # name -> (Paddle's own url and md5, the paddle.vision model they belong to)
    "mobilenet_v1.imagenet": (mobilenetv1.model_urls["mobilenetv1_1.0"], lambda: pv.mobilenet_v1()),
    "resnet18.imagenet": (resnet.model_urls["resnet18"], lambda: pv.resnet18()),
    "resnet34.imagenet": (resnet.model_urls["resnet34"], lambda: pv.resnet34()),
    "resnet50.imagenet": (resnet.model_urls["resnet50"], lambda: pv.resnet50()),
    "vgg16.imagenet": (vgg.model_urls["vgg16"], lambda: pv.vgg16()),
}
TINY_VGG = {"in_channels": 1, "num_classes": 10, "scale": 1 / 64, "pool_size": 1, "hidden": 0}


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMHUB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLIMHUB_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.delenv("SLIMHUB_OFFLINE", raising=False)
    (tmp_path / "mirror").mkdir()
    return tmp_path


def n_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def outputs(model, shape):
    model.eval()
    paddle.seed(1)
    return model(paddle.rand(shape)).numpy()


def randomize_bn_statistics(model):
    for p in model.parameters():
        if not p.trainable:
            p.set_value(paddle.rand(p.shape) + 0.5)


def test_list_models_with_wildcards():
    assert list_models("resnet*") == ["resnet18", "resnet20", "resnet34", "resnet50", "resnet56"]
    assert list_models("vgg1?") == ["vgg11", "vgg16"]
    assert list_models("nothing*") == []
    pretrained = list_models(pretrained=True)
    assert pretrained == sorted(pretrained) and set(IMAGENET) <= set(pretrained)
    assert all(model_info(n)["dataset"] == "fashion_mnist" for n in pretrained if ".fmnist_" in n)
    assert set(pretrained) - set(IMAGENET) == set(list_models("*.fmnist_*", pretrained=True))
    assert list_models("vgg16*", pretrained=True) == ["vgg16.imagenet"]
    assert list_models("*.imagenet", pretrained=True) == sorted(IMAGENET)


@pytest.mark.parametrize("name", sorted(IMAGENET))
def test_imagenet_entries_are_paddles_files(name):
    (url, md5), paddle_model = IMAGENET[name]
    info = model_info(name)
    assert info["urls"] == [url] and info["md5"] == md5 and info["sha256"] is None
    assert info["dataset"] == "imagenet" and info["input_size"] == [3, 224, 224] and info["num_classes"] == 1000
    with paddle.LazyGuard():  # the weights load into our model only if every name and shape agree
        ours = create_model(info["architecture"], **info["model_kwargs"])
        theirs = paddle_model()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert info["params"] == n_params(theirs)


def test_recorded_flops_match_published_counts():
    # Howard et al. 2017: 569M mult-adds in conv + fc; the counter adds BN and pooling (~1%)
    assert 569e6 < model_info("mobilenet_v1.imagenet")["flops"] < 575e6
    # He et al. 2016: ResNet-18 1.8 GFLOPs (multiply-adds), ResNet-50 3.8-4.1 G
    assert 1.80e9 < model_info("resnet18.imagenet")["flops"] < 1.83e9
    assert 3.8e9 < model_info("resnet50.imagenet")["flops"] < 4.15e9


def test_model_info_of_an_architecture():
    info = model_info("resnet18")
    assert info["name"] == "resnet18" and info["pretrained_tags"] == ["imagenet"]
    assert "ResNet-18" in info["description"]
    assert model_info("resnet56")["pretrained_tags"] == []


def test_unknown_architecture_lists_close_names():
    with pytest.raises(UnknownModelError) as e:
        create_model("resnet19")
    assert isinstance(e.value, KeyError)
    assert "resnet19" in str(e.value) and "resnet18" in str(e.value)


def test_unknown_tag_lists_the_tags():
    with pytest.raises(UnknownModelError, match="resnet18.imagenett.*imagenet"):
        model_info("resnet18.imagenett")
    with pytest.raises(UnknownModelError, match="imagenet"):
        create_model("resnet18", pretrained="fmnist")


def test_imagenet_weights_load_through_the_mirror(env, monkeypatch):
    """Paddle's own architecture saves a file under Paddle's file name; our model loads it.

    Only the md5 differs from the real entry (and the width, to keep the test small)."""
    paddle.seed(0)
    theirs = pv.mobilenet_v1(scale=0.25)
    randomize_bn_statistics(theirs)
    weights = env / "mirror" / "mobilenetv1_1.0.pdparams"
    paddle.save(theirs.state_dict(), str(weights))
    use_manifest(monkeypatch, env, {
        "mobilenet_v1.imagenet": {**model_info("mobilenet_v1.imagenet"), "md5": md5_of(weights)}})

    ours = create_model("mobilenet_v1", pretrained="imagenet", scale=0.25)

    np.testing.assert_allclose(outputs(ours, [1, 3, 32, 32]), outputs(theirs, [1, 3, 32, 32]), rtol=1e-5, atol=1e-6)
    assert os.path.isfile(env / "home" / "hub" / "mobilenetv1_1.0.pdparams")


def test_offline_without_cache_fails_before_building(monkeypatch):
    monkeypatch.setenv("SLIMHUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="resnet50.pdparams.*SLIMHUB_OFFLINE"):
        create_model("resnet50", pretrained=True)


def tiny_vgg_macs():
    """MACs of vgg11 at 1/64 width on 1x28x28, counted as slimhub.flops documents."""
    widths = [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"]
    side, channels, macs = 28, 1, 0
    for w in widths:
        if w == "M":
            side = -(-side // 2)  # ceil mode
            macs += side * side * channels * 4
        else:
            macs += side * side * w * channels * 9 + side * side * w  # conv + BN
            channels = w
    return macs + channels + channels * 10  # adaptive pool reads every input, then Linear


@pytest.fixture
def recorded(env):
    """A tiny vgg11 saved in the mirror and recorded into a manifest of its own."""
    paddle.seed(0)
    model = create_model("vgg11", **TINY_VGG)
    randomize_bn_statistics(model)
    weights = env / "mirror" / "vgg11.unit.pdparams"
    paddle.save(model.state_dict(), str(weights))
    manifest = env / "manifest.json"
    entry = record_pretrained(
        "vgg11.unit", model=model, urls=["https://models.invalid/zoo/vgg11.unit.pdparams"],
        dataset="fashion_mnist", input_size=(1, 28, 28), model_kwargs=TINY_VGG, file=str(weights),
        top1=0.5, top5=0.9, recipe="recipes/fashion_mnist/vgg11_unit.yaml", manifest_path=str(manifest))
    return model, weights, manifest, entry


def test_record_pretrained_measures_the_model_and_file(recorded):
    model, weights, manifest, entry = recorded
    data = weights.read_bytes()
    assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.md5 is None
    assert entry.file_size == len(data)
    assert entry.num_classes == 10 and entry.input_size == (1, 28, 28)
    assert entry.params == n_params(model)
    assert entry.flops == tiny_vgg_macs()
    assert (entry.top1, entry.top5, entry.dataset) == (0.5, 0.9, "fashion_mnist")
    assert registry.load_manifest(str(manifest)) == {"vgg11.unit": entry}
    assert not [f for f in os.listdir(manifest.parent) if f.startswith(".")]  # no temporary file left


def test_record_pretrained_updates_in_place(recorded, env):
    model, weights, manifest, _ = recorded
    common = dict(model=model, urls=["https://models.invalid/zoo/vgg11.unit.pdparams"], dataset="fashion_mnist",
                  input_size=(1, 28, 28), model_kwargs=TINY_VGG, file=str(weights), manifest_path=str(manifest))
    record_pretrained("vgg11.other", top1=0.1, **common)
    record_pretrained("vgg11.unit", top1=0.7, **common)
    entries = registry.load_manifest(str(manifest))
    assert sorted(entries) == ["vgg11.other", "vgg11.unit"]
    assert entries["vgg11.unit"].top1 == 0.7 and entries["vgg11.other"].top1 == 0.1


def test_our_weights_load_by_tag(recorded, monkeypatch):
    model, _, manifest, _ = recorded
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(manifest))
    expected = outputs(model, [2, 1, 28, 28])
    for name, pretrained in [("vgg11.unit", True), ("vgg11", "unit"), ("vgg11", True)]:
        np.testing.assert_allclose(outputs(create_model(name, pretrained=pretrained), [2, 1, 28, 28]), expected,
                                   rtol=1e-6)


def test_tag_without_pretrained_builds_the_entrys_architecture(recorded, monkeypatch, env):
    model, _, manifest, _ = recorded
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(manifest))
    fresh = create_model("vgg11.unit")
    assert fresh.features[0].weight.shape == [1, 1, 3, 3] and fresh.classifier[0].weight.shape == [8, 10]
    assert not os.path.exists(env / "home" / "hub")  # nothing downloaded


def test_weights_that_do_not_fit_name_the_parameter(recorded, monkeypatch):
    _, _, manifest, _ = recorded
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(manifest))
    with pytest.raises(ValueError, match=r"vgg11.unit.*vgg11.unit.pdparams.*classifier.0.weight: network \[8, 5\]"):
        create_model("vgg11.unit", pretrained=True, num_classes=5)


def test_conflicting_and_ambiguous_tags(recorded, monkeypatch, env):
    model, weights, manifest, _ = recorded
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(manifest))
    with pytest.raises(ValueError, match="'unit'.*pretrained='other'"):
        create_model("vgg11.unit", pretrained="other")
    record_pretrained("vgg11.other", model=model, urls=["https://models.invalid/x.pdparams"], dataset="d",
                      input_size=(1, 28, 28), model_kwargs=TINY_VGG, file=str(weights), manifest_path=str(manifest))
    with pytest.raises(ValueError, match=r"2 pretrained entries \['other', 'unit'\]"):
        create_model("vgg11", pretrained=True)


PLAN = {"format": "slimhub.prune_plan", "version": 1, "layers": {  # drop channel 0 of the second conv
    "features.4": {"type": "Conv2D", "out_channels": {"size": 2, "keep": [1]}},
    "features.5": {"type": "BatchNorm2D", "num_features": {"size": 2, "keep": [1]}},
    "features.8": {"type": "Conv2D", "in_channels": {"size": 2, "keep": [1]}},
}}


def test_pruned_entries_are_rebuilt_from_their_plan(recorded, monkeypatch, env):
    _, _, manifest, _ = recorded
    paddle.seed(2)
    pruned = create_model("vgg11", **TINY_VGG)
    randomize_bn_statistics(pruned)
    apply_plan(pruned, PLAN)
    weights = env / "mirror" / "vgg11.pruned.pdparams"
    paddle.save(pruned.state_dict(), str(weights))
    record_pretrained("vgg11.pruned", model=pruned, urls=["https://models.invalid/zoo/vgg11.pruned.pdparams"],
                      dataset="fashion_mnist", input_size=(1, 28, 28), model_kwargs=TINY_VGG, file=str(weights),
                      pruning_plan=PLAN, manifest_path=str(manifest))
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(manifest))

    assert model_info("vgg11.pruned")["params"] == n_params(create_model("vgg11", **TINY_VGG)) - (9 + 1 + 4 + 4 * 9)
    structure = create_model("vgg11.pruned")
    assert structure.features[4].weight.shape == [1, 1, 3, 3] and structure.features[8].weight.shape == [4, 1, 3, 3]
    loaded = create_model("vgg11.pruned", pretrained=True)
    np.testing.assert_allclose(outputs(loaded, [2, 1, 28, 28]), outputs(pruned, [2, 1, 28, 28]), rtol=1e-6)


def test_int8_entries_load_quantized_with_their_scales(recorded, monkeypatch, env):
    _, _, manifest, _ = recorded
    paddle.seed(3)
    model = create_model("vgg11", **TINY_VGG)
    float_model = create_model("vgg11", **TINY_VGG)
    float_model.set_state_dict(model.state_dict())
    config = QuantConfig(weight_quantize_type="abs_max", activation_quantize_type="moving_average_abs_max")
    quantize(model, config)
    model.train()
    model(paddle.rand([4, 1, 28, 28]))  # one training batch sets the moving-average scales
    weights = env / "mirror" / "vgg11.int8.pdparams"
    paddle.save(model.state_dict(), str(weights))
    record_pretrained("vgg11.int8", model=model, urls=["https://models.invalid/zoo/vgg11.int8.pdparams"],
                      dataset="fashion_mnist", input_size=(1, 28, 28), model_kwargs=TINY_VGG, file=str(weights),
                      quant_format=config.to_dict(), manifest_path=str(manifest))
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(manifest))

    loaded = create_model("vgg11.int8", pretrained=True)
    expected = outputs(model, [2, 1, 28, 28])
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(outputs(loaded, [2, 1, 28, 28]), expected, rtol=1e-6)
    assert np.abs(outputs(float_model, [2, 1, 28, 28]) - expected).max() > 1e-4  # quantization is applied


def test_relative_urls_name_files_beside_the_manifest(recorded, monkeypatch, env):
    model, weights, _, entry = recorded
    monkeypatch.delenv("SLIMHUB_MIRROR")
    (env / "package" / "pretrained").mkdir(parents=True)
    shutil.copy(weights, env / "package" / "pretrained" / "vgg11.unit.pdparams")
    manifest = env / "package" / "manifest.json"
    record = {**entry.to_dict(), "urls": ["pretrained/vgg11.unit.pdparams"]}
    manifest.write_text(json.dumps({"format": 1, "models": {"vgg11.unit": record}}))
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(manifest))
    loaded = create_model("vgg11.unit", pretrained=True)
    np.testing.assert_allclose(outputs(loaded, [2, 1, 28, 28]), outputs(model, [2, 1, 28, 28]), rtol=1e-6)
    assert (env / "home" / "hub" / "vgg11.unit.pdparams").read_bytes() == weights.read_bytes()


def test_shipped_weight_files_match_the_package_manifest():
    root = os.path.dirname(registry.MANIFEST_PATH)
    for name, entry in registry.load_manifest().items():
        for url in entry.urls:
            if "://" not in url:
                with open(os.path.join(root, url), "rb") as f:
                    data = f.read()
                assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry.sha256, entry.file_size), name


@pytest.mark.parametrize("change,words", [
    ({"colour": "red"}, ["vgg11.bad", "unknown field", "colour"]),
    ({"md5": "0" * 32}, ["vgg11.bad", "exactly one of sha256 / md5"]),
    ({"input_size": [28, 28]}, ["vgg11.bad", "input_size"]),
    ({"quant_format": "int8"}, ["vgg11.bad", "quant_format", "'int8'"]),
    ({"quant_format": {"weight_quantize_type": "max"}}, ["vgg11.bad", "quant_format", "'max'"]),
])
def test_bad_manifest_entries_are_named(recorded, monkeypatch, env, change, words):
    _, _, _, entry = recorded
    path = use_manifest(monkeypatch, env, {"vgg11.bad": {**entry.to_dict(), **change}})
    with pytest.raises(ValueError) as e:
        list_models(pretrained=True)
    for word in words + [str(path)]:
        assert word in str(e.value)


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def use_manifest(monkeypatch, env, models):
    """Write a manifest holding ``models`` (dicts of entry fields) and make it the registry's."""
    models = {name: {k: v for k, v in record.items() if k not in ("name", "architecture", "tag")}
              for name, record in models.items()}
    path = env / "other_manifest.json"
    path.write_text(json.dumps({"format": 1, "models": models}))
    monkeypatch.setattr(registry, "MANIFEST_PATH", str(path))
    return path


SHIPPED_CHECKS = ["mobilenet_v1.fmnist_baseline", "mobilenet_v1.fmnist_prune_sensitive50",
                  "mobilenet_v1.fmnist_qat_mavg_absmax", "mobilenet_v1.fmnist_prune50_qat",
                  "resnet20.fmnist_prune_uniform50", "vgg11.fmnist_prune_sensitive50",
                  "vgg11.fmnist_distill_qat"]


@pytest.mark.parametrize("name", SHIPPED_CHECKS)
def test_shipped_fashion_mnist_models_reach_their_recorded_accuracy(name, env, monkeypatch):
    """Rebuilt from the package (pruning plan and int8 QAT wrapping included), a shipped model
    scores on the first 1,000 test images what reproduce.py measured on all 10,000."""
    from slimhub.data import fashion_mnist
    monkeypatch.delenv("SLIMHUB_MIRROR")
    info = model_info(name)
    net = create_model(name, pretrained=True)
    net.eval()
    test = fashion_mnist("test", limit=1000)
    with paddle.no_grad():
        logits = np.concatenate([net(paddle.to_tensor(test.images[i:i + 250])).numpy()
                                 for i in range(0, 1000, 250)])
    accuracy = float((logits.argmax(1) == test.labels[:, 0]).mean())
    assert abs(accuracy - info["top1"]) < 0.04  # 3 standard errors of a 1,000-image estimate
