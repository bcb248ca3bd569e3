"""Combined strategies in one fit, each ending in an int8 ONNX export, on a tiny subset."""
import textwrap

import numpy as np
import onnx
import paddle

import slimhub
from slimhub.model_zoo import create_model
from slimhub.quant.wrap import quantized_layers
from slimhub.recipe import load_recipe
from slimhub.deploy import load

STUDENT = "model: {name: mobilenet_v1, args: {in_channels: 1, num_classes: 10, scale: 0.25}}\n"
TINY = "data: {train_limit: 32, eval_limit: 32}\n"


def write(path, text):
    """A recipe for the student on the tiny subset, plus ``text``."""
    path.write_text(STUDENT + TINY + textwrap.dedent(text))
    return str(path)


def onnx_logits(path, images):
    return load(path, "onnxruntime")(images)


def int8_weights(path):
    """Shapes of the int8 weight tensors (int8 initializers of 2 or more dimensions) in an ONNX file."""
    model = onnx.load(path)
    return {i.name: list(i.dims) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2}


def fit_and_export(recipe):
    history = recipe.fit()
    files = recipe.export()
    return history, [f for f in files if f.endswith(".onnx")][0]


def test_distillation_then_qat_in_one_fit_ends_in_int8_onnx(tmp_path):
    paddle.seed(1)
    teacher = create_model("resnet20", in_channels=1, num_classes=10, scale=0.25)
    paddle.save(teacher.state_dict(), str(tmp_path / "teacher.pdparams"))
    path = write(tmp_path / "r.yaml", f"""\
        trainer: {{epochs: 2, batch_size: 32, verbose: 0, seed: 0}}
        strategies:
          distill:
            teacher:
              name: resnet20
              args: {{in_channels: 1, num_classes: 10, scale: 0.25}}
              weights: {tmp_path / 'teacher.pdparams'}
            losses: [{{type: soft_label, teacher: fc, student: fc, temperature: 4.0}}]
            end_epoch: 1
          qat: {{start_epoch: 1}}
        export: {{path: {tmp_path / 'out' / 'model'}, formats: [onnx_int8]}}
        """)
    recipe = load_recipe(path)
    history, onnx_path = fit_and_export(recipe)
    assert len(history["distill_soft_label"]) == 1  # distilled in epoch 0 only
    assert quantized_layers(recipe.network)  # quantized in epoch 1
    distill = recipe.callbacks[0]
    for name, value in teacher.state_dict().items():  # the teacher never changed
        np.testing.assert_array_equal(distill.teacher.state_dict()[name].numpy(), value.numpy())
    images = recipe.eval_data.images
    qat_logits = recipe.trainer.predict(recipe.eval_data)
    logits = onnx_logits(onnx_path, images)
    assert (logits.argmax(1) == qat_logits.argmax(1)).mean() >= 0.9
    weights = int8_weights(onnx_path)
    assert len(weights) == len(quantized_layers(recipe.network))


def test_prune_finetune_then_qat_in_one_fit_ends_in_int8_onnx_and_resumes(tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path / "r.yaml", f"""\
        trainer: {{epochs: 3, batch_size: 32, verbose: 0, seed: 0, save_dir: {out}}}
        strategies:
          prune: {{pruned_flops: 0.5, start_epoch: 0}}
          qat: {{start_epoch: 2}}
        export: {{path: {out / 'model'}, formats: [onnx_int8]}}
        """)
    recipe = load_recipe(path)
    _, onnx_path = fit_and_export(recipe)
    reference = slimhub.flops(create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25), (1, 28, 28))
    pruned = slimhub.flops(recipe.network, (1, 28, 28))
    assert 0.45 <= pruned["flops"] / reference["flops"] <= 0.55
    layers = quantized_layers(recipe.network)
    assert layers and len(int8_weights(onnx_path)) == len(layers)
    # the exported int8 weights have the pruned shapes
    assert sorted(int8_weights(onnx_path).values()) == sorted(list(l.weight.shape) for l in layers.values())
    qat_logits = recipe.trainer.predict(recipe.eval_data)
    logits = onnx_logits(onnx_path, recipe.eval_data.images)
    assert (logits.argmax(1) == qat_logits.argmax(1)).mean() >= 0.9
    # a fresh load restores the plan, then the quantizers, then the weights
    again = load_recipe(path)
    again.restore()
    np.testing.assert_allclose(again.trainer.predict(again.eval_data), qat_logits, rtol=1e-5, atol=1e-5)
