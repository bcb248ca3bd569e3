"""Output quanters on the convs that feed residual sums: which layers, training, calibration,
stripping."""
import numpy as np
import paddle
from paddle import nn
from paddle.nn import functional as F
from paddle.vision.models import resnet18

from quant_models import RESIDUAL_OUTPUTS, batch, residual_net
from slimhub.quant import calibrate, quantize, strip_quant
from slimhub.quant.wrap import output_quantized_layers


class Shapes(nn.Layer):
    """A conv summed with its input (no BatchNorm), a conv run twice, and a sum with a
    parameter: only the first is a residual sum of a conv's output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2D(3, 4, 3, padding=1)
        self.direct = nn.Conv2D(4, 4, 3, padding=1)
        self.twice = nn.Conv2D(4, 4, 3, padding=1)
        self.offset = self.create_parameter([1, 4, 1, 1])
        self.fc = nn.Linear(4 * 16 * 16, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.direct(x))
        x = self.twice(x) + self.twice(x) + self.offset
        return self.fc(paddle.flatten(x, 1))


def test_a_resnet_gets_output_quanters_on_the_batchnorms_feeding_its_sums():
    paddle.seed(0)
    net = quantize(resnet18(num_classes=10), inputs=np.random.default_rng(0).standard_normal(
        (1, 3, 32, 32)).astype("float32"))
    expected = [f"layer{i}.{j}.bn2" for i in range(1, 5) for j in range(2)]
    expected += [f"layer{i}.0.downsample.1" for i in range(2, 5)]
    assert sorted(output_quantized_layers(net)) == sorted(expected)
    assert net.training  # the trace leaves the mode as it was


def test_a_conv_summed_without_batchnorm_is_found_and_shared_convs_are_not():
    net = quantize(Shapes(), inputs=batch(1))
    assert sorted(output_quantized_layers(net)) == ["direct"]


def test_dynamic_activation_scales_get_no_output_quanters():
    net = quantize(residual_net(), activation_quantize_type="abs_max", inputs=batch(1))
    assert output_quantized_layers(net) == {}


def test_output_quanters_learn_signed_scales_and_strip_quant_removes_them():
    model = quantize(residual_net(), inputs=batch(2))
    x = batch(8, seed=1)
    model(paddle.to_tensor(x))  # one training step's forward sets the scales
    quanters = {name: layer.output_quanter for name, layer in output_quantized_layers(model).items()}
    assert sorted(quanters) == RESIDUAL_OUTPUTS
    assert all(q.scale.item() > 0 and not q.is_unsigned() for q in quanters.values())
    assert all(q.bits == 8 for q in quanters.values())
    state = model.state_dict()
    assert {f"{name}.output_quanter.scale" for name in RESIDUAL_OUTPUTS} <= set(state)
    stripped = strip_quant(model)
    assert output_quantized_layers(stripped) == {}
    assert not any(layer._forward_post_hooks for layer in stripped.sublayers(include_self=True))
    float_net = residual_net()
    float_net.set_state_dict({k: v for k, v in state.items() if "quanter" not in k})
    float_net.eval()
    stripped.eval()
    np.testing.assert_allclose(stripped(paddle.to_tensor(x)).numpy(), float_net(paddle.to_tensor(x)).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_calibration_scales_the_outputs_by_their_largest_magnitude():
    batches = [batch(4, seed=s) for s in range(2)]
    float_net = residual_net()
    float_net.eval()
    seen = []
    hook = float_net[3].bn2.register_forward_post_hook(lambda layer, args, out: seen.append(out.numpy()))
    for x in batches:
        float_net(paddle.to_tensor(x))
    hook.remove()
    model = calibrate(residual_net(), batches, num_batches=2, method="abs_max")
    quanter = model[3].bn2.output_quanter
    assert not quanter.is_unsigned()
    np.testing.assert_allclose(quanter.scale.item(), max(np.abs(o).max() for o in seen) / 127, rtol=1e-5)
    assert sorted(output_quantized_layers(model)) == RESIDUAL_OUTPUTS
