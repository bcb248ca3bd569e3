"""The ``slimhub`` command: help on every command, clean errors with exit code 2, and
run / eval / export / sensitivity / flops / zoo on a tiny recipe."""
import json
import os

import paddle
import pytest

import slimhub
from slimhub.cli import build_parser, main
from slimhub.model_zoo import create_model, list_models

COMMANDS = [["run"], ["eval"], ["export"], ["sensitivity"], ["flops"], ["zoo"], ["zoo", "list"],
            ["zoo", "info"], ["zoo", "download"], ["demo"], ["bench"]]
BAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_recipes")


@pytest.mark.parametrize("command", [[]] + COMMANDS, ids=lambda c: " ".join(c) or "slimhub")
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(command + ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: slimhub {' '.join(command)}".rstrip())


def test_every_subcommand_has_help_text():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {c[0] for c in COMMANDS} == set(sub.choices)
    assert all(a.help for a in sub._choices_actions)


def test_bad_recipe_prints_one_line_and_exits_2(capsys):
    path = os.path.join(BAD, "pruned_flops_out_of_range.yaml")
    assert main(["run", path]) == 2
    err = capsys.readouterr().err
    assert err == (f"slimhub run: {path}:6: strategies.prune.pruned_flops: got 1.5; "
                   "allowed: a number in (0, 1)\n")
    assert main(["run", "no/such/recipe.yaml"]) == 2
    assert "recipe 'no/such/recipe.yaml' not found" in capsys.readouterr().err
    assert main(["zoo", "info", "mobilnet_v1"]) == 2
    assert "did you mean ['mobilenet_v1']" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["flops", "mobilenet_v1", "--input-shape", "3,224"])
    assert info.value.code == 2
    assert "three positive sizes" in capsys.readouterr().err


def test_run_check_prints_the_schedule(capsys):
    no_weights = ["--set", "model.weights=null"]  # the checkpoints of the baselines' runs
    assert main(["run", "fashion_mnist/mobilenet_v1_prune50_qat", "--check", *no_weights]) == 0
    assert main(["run", "fashion_mnist/mobilenet_v1_distill_qat", "--check", *no_weights,
                 "--set", "strategies.distill.teacher.weights=null"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["fashion_mnist/mobilenet_v1_prune50_qat: valid; 3 epochs",
                   "  strategies.prune (prune): epochs 0..0",
                   "  strategies.qat (qat): epochs 2..2",
                   "fashion_mnist/mobilenet_v1_distill_qat: valid; 1 epoch",
                   "  strategies.distill (distill): epochs 0..0",
                   "  strategies.qat (qat): epochs 0..0"]


def test_flops_of_a_zoo_model_and_of_a_recipe(capsys):
    net = create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25)
    counts = slimhub.flops(net, (1, 28, 28))
    assert main(["flops", "fashion_mnist/mobilenet_v1_baseline", "--set", "data.train_limit=8",
                 "--set", "data.eval_limit=8"]) == 0
    assert main(["flops", "resnet20", "--input-shape", "1,28,28", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"fashion_mnist/mobilenet_v1_baseline: {counts['flops'] / 1e6:.2f} M MACs, "
                      f"{counts['params'] / 1e6:.3f} M parameters for one (1, 28, 28) input")
    resnet = slimhub.flops(create_model("resnet20", in_channels=1, num_classes=10), (1, 28, 28))
    assert out[1].startswith(f"resnet20: {resnet['flops'] / 1e6:.2f} M MACs")


def test_zoo_list_and_info(capsys):
    assert main(["zoo", "list"]) == 0
    assert capsys.readouterr().out.split() == list_models()
    assert main(["zoo", "list", "resnet*", "--pretrained"]) == 0
    assert capsys.readouterr().out.split() == list_models("resnet*", pretrained=True)
    assert main(["zoo", "list", "--recipes"]) == 0
    assert "fashion_mnist/demo_prune_qat" in capsys.readouterr().out.split()
    assert main(["zoo", "info", "mobilenet_v1.imagenet"]) == 0
    assert "md5: 3033ab1975b1670bef51545feb65fc45" in capsys.readouterr().out.splitlines()


def test_run_eval_export_and_sensitivity_on_a_tiny_recipe(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "model: {name: mobilenet_v1, args: {in_channels: 1, num_classes: 10, scale: 0.25}}\n"
        "data: {train_limit: 64, eval_limit: 40}\n"
        "trainer: {epochs: 1, batch_size: 32, verbose: 0, save_dir: out, seed: 0}\n"
        "strategies: {prune: {pruned_flops: 0.1, include: ['conv5_6*', 'conv6*']}}\n")
    assert main(["run", str(recipe)]) == 0
    run_lines = capsys.readouterr().out.splitlines()

    assert main(["export", str(recipe), "--output", "out/model", "--format", "inference"]) == 0
    assert "wrote out/model.pdiparams" in capsys.readouterr().out.splitlines()
    # reference: the exported (pruned) model, scored with numpy
    data = slimhub.data.fashion_mnist("test", limit=40)
    exported = paddle.jit.load("out/model")
    exported.eval()
    logits = exported(paddle.to_tensor(data.images)).numpy()
    top1 = (logits.argmax(1) == data.labels[:, 0]).mean()
    assert f"acc_top1 {top1:.4f}" in run_lines[1]

    assert main(["eval", str(recipe)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"restored {os.path.join('out', 'last.pdckpt')}"
    assert f"acc_top1 {top1:.4f}" in lines[1]

    assert main(["sensitivity", str(recipe), "--ratios", "0.25,0.5", "--output", "sens"]) == 0
    lines = capsys.readouterr().out.splitlines()
    record = json.loads((tmp_path / "sens" / "sensitivity.json").read_text())
    assert record["baseline"] == pytest.approx(top1)  # the restored, pruned network
    assert sorted(record["groups"]) == ["conv5_6._pointwise_conv.0", "conv6._pointwise_conv.0"]  # the scope
    assert lines[1].split() == ["group", "size", "0.25", "0.5"]
    assert lines[2].split()[-1] == f"{top1:.4f}"
    group, entry = next(iter(record["groups"].items()))
    assert lines[3].split() == [group, str(entry["size"])] + [f"{entry['metrics'][r]:.4f}" for r in ("0.25", "0.5")]
    assert len(lines) == 4 + len(record["groups"])
    assert (tmp_path / "sens" / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
