"""Paddle inference export with quantize/dequantize ops, loaded by paddle.inference."""
import paddle
import pytest
from paddle import inference

from quant_models import SPEC, assert_equal_but_rare_flips, batch, qat_residual, qat_trained
from slimhub.quant import export


def predict(prefix, x):
    config = inference.Config(prefix + ".pdmodel", prefix + ".pdiparams")
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def program_ops(prefix):
    with paddle.pir_utils.OldIrGuard():
        program, _, _ = paddle.static.load_inference_model(prefix, paddle.static.Executor())
    return [op.type for op in program.global_block().ops]


@pytest.mark.parametrize("config,quant_ops", [
    ({}, {"quantize_linear", "dequantize_linear"}),
    ({"activation_quantize_type": "abs_max", "weight_quantize_type": "abs_max"},
     {"fake_quantize_dequantize_abs_max", "dequantize_linear"}),
])
def test_paddle_int8_reproduces_the_qat_model(tmp_path, config, quant_ops):
    model = qat_trained(steps=2, **config)
    prefix = str(tmp_path / "model")
    files = export(model, prefix, SPEC, format="paddle_int8")
    assert sorted(files) == sorted([prefix + ".pdmodel", prefix + ".pdiparams", prefix + ".pdiparams.info"])
    ops = program_ops(prefix)
    assert quant_ops <= set(ops)
    assert "batch_norm" not in ops  # folded into the int8 weights
    x = batch(16, seed=3)
    assert_equal_but_rare_flips(predict(prefix, x), model(paddle.to_tensor(x)).numpy())


def test_paddle_int8_reproduces_a_residual_qat_model_with_unsigned_and_output_grids(tmp_path):
    model = qat_residual()
    prefix = str(tmp_path / "residual")
    export(model, prefix, SPEC, format="paddle_int8")
    x = batch(16, seed=3)
    assert_equal_but_rare_flips(predict(prefix, x), model(paddle.to_tensor(x)).numpy())
