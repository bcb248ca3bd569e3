"""QATCallback: quantization-aware training from ``start_epoch`` on (see slimhub.quant)."""
from __future__ import annotations

import dataclasses

from slimhub.callbacks.base import Callback, check_same_settings, float_layers
from slimhub.rules import StrategyContract
from slimhub.quant.wrap import (QUANT_RULES, QuantConfig, add_output_quanters, quantizable_layers, quantize,
                                quantize_residual_outputs, quantized_layers)


class QATCallback(Callback):
    """Fake-quantize the network's Conv2D and Linear layers at the start of ``start_epoch``.

    ``target`` names the CPUs the int8 model will run on: "x86" (default; every x86 CPU,
    7-bit weights), "x86_vnni" (VNNI/AMX CPUs only, 8-bit weights) or "arm";
    ``weight_bits`` defaults to the widest grid the target computes exactly.
    ``weight_quantize_type`` is "channel_wise_abs_max" or "abs_max";
    ``activation_quantize_type`` is "moving_average_abs_max" (a learned static scale)
    or "abs_max" (per batch); ``skip`` holds glob patterns of layer names left in
    float (e.g. ``["conv1", "fc"]``); layers marked with :func:`slimhub.callbacks.keep_float`
    (distillation adapters) always stay float. The
    wrapped layers keep their parameters; the Trainer is told the structure changed,
    so every callback (pruning, distillation) sees the quantized layers. The state
    records whether quantization was applied and its configuration: on resume the
    layers are wrapped again before the checkpoint's weights and learned scales load.
    After the first quantized training step, the convs whose outputs feed a residual sum
    (traced on that step's inputs) get output quanters, so that int8 runtimes run them in
    int8 as well (:func:`slimhub.quant.wrap.quantize_residual_outputs`); the state lists them.
    Put it after a PruneCallback.
    Export the trained network with ``trainer.export(path, input_spec, format="onnx_int8")``
    (or "paddle_int8"). :attr:`quantization` reads the settings once the network is quantized.
    """

    contract = StrategyContract(QUANT_RULES)

    def __init__(self, weight_quantize_type="channel_wise_abs_max",
                 activation_quantize_type="moving_average_abs_max", target="x86", weight_bits=None,
                 activation_bits=8, start_epoch=0, skip=(), moving_rate=0.9):
        super().__init__()
        self.contract.check("QATCallback", start_epoch=start_epoch)
        try:
            self.config = QuantConfig(weight_quantize_type, activation_quantize_type, target,
                                      weight_bits, activation_bits, moving_rate, skip)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"QATCallback: {exc}") from None
        self.start_epoch = start_epoch
        self._applied = False
        self.outputs = None  # names of the layers with output quanters; None: not traced yet
        self._first_inputs = None

    @property
    def quantization(self):
        """The settings the network was quantized with (:meth:`QuantConfig.to_dict`), or None
        while it is not quantized."""
        return self.config.to_dict() if self._applied else None

    def state_dict(self):
        return {"applied": self._applied, "config": self.config.to_dict(), "outputs": self.outputs}

    def set_state_dict(self, state):
        check_same_settings("QATCallback", state["config"], self.config.to_dict())
        if state["applied"] and not self._applied:
            self._quantize()  # the trainer rebinds the optimizer and loads the weights after this
        # checkpoints saved before output quanters existed have none, and keep none
        self.outputs = state.get("outputs", [] if state["applied"] else None)
        if self.outputs is not None:
            add_output_quanters(self.network, self.outputs, self.config)

    def on_train_begin(self, logs=None):
        if getattr(self.model, "static", False):
            raise ValueError("QATCallback needs a dygraph Trainer (static=False): the quantizers "
                             "update their scales eagerly")

    def on_epoch_begin(self, epoch, logs=None):
        if not self._applied and epoch >= self.start_epoch:
            self._quantize()
            self.structure_changed()

    def on_loss(self, inputs, outputs, labels):
        if self._applied and self.outputs is None:
            self._first_inputs = inputs
        return None

    def on_train_batch_end(self, step, logs=None):
        # traced after the step, so that the step itself and other callbacks' hooks are undisturbed
        if self._first_inputs is not None:
            self.outputs = quantize_residual_outputs(self.network, self._first_inputs, self.config)
            self._first_inputs = None
            self.log("output_quantized_layers", len(self.outputs))

    def _quantize(self):
        config = self.config
        kept = set(float_layers(self.network))
        left_float = tuple(name for name in quantizable_layers(self.network) if name in kept)
        if left_float:
            config = dataclasses.replace(config, skip=config.skip + left_float)
        quantize(self.network, config)
        self._applied = True
        self.log("quantized_layers", len(quantized_layers(self.network)))
