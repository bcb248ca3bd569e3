"""slimhub: compress PaddlePaddle models with recipes (pruning, QAT, distillation).

Each command is a thin wrapper over the library; 'slimhub COMMAND --help' explains one.
A recipe is a YAML file or the name of a shipped one ('slimhub zoo list --recipes').
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from slimhub.checkpoint import LAST_CHECKPOINT, write_json  # noqa: E402
from slimhub.deploy import bench  # noqa: E402
from slimhub.flops import flops  # noqa: E402
from slimhub.model_zoo import create_model, list_models, model_info  # noqa: E402
from slimhub.model_zoo.hub import hub_dir  # noqa: E402
from slimhub.prune import plot_sensitivity  # noqa: E402
from slimhub.prune.graph import DEFAULT_ROUND_TO, ROUND_TO  # noqa: E402
from slimhub.recipe import RecipeError, list_recipes, load_recipe, run_recipe  # noqa: E402
from slimhub.recipe.demo import run_demo  # noqa: E402
from slimhub.recipe.schema import schedule  # noqa: E402


def _load(args):
    return load_recipe(args.recipe, args.set)


def _print_eval(logs):
    print("  ".join(f"{k} {v:.4f}" for k, v in logs.items()))


def _run(args):
    if args.check:  # everything run checks before it trains: the same call, without the training
        config = load_recipe(args.recipe, args.set).config
        epochs = config["trainer"]["epochs"]
        print(f"{args.recipe}: valid; {epochs} epoch{'' if epochs == 1 else 's'}")
        for name, kind, first, last in schedule(config):
            print(f"  strategies.{name} ({kind}): epochs {first}..{last}")
        return
    result = run_recipe(args.recipe, args.set)
    print(f"{args.recipe}: {result['flops'] / 1e6:.2f} M MACs, {result['params'] / 1e6:.3f} M parameters")
    _print_eval(result["eval"])
    for f in result["files"]:
        print(f"wrote {f}")


def _eval(args):
    recipe = _load(args)
    print(f"restored {recipe.restore(args.checkpoint)}")
    _print_eval(recipe.evaluate())


def _export(args):
    recipe = _load(args)
    print(f"restored {recipe.restore(args.checkpoint)}")
    for f in recipe.export(args.output, args.format):
        print(f"wrote {f}")


def _sensitivity(args):
    recipe = _load(args)
    if args.checkpoint or (recipe.save_dir and os.path.isfile(os.path.join(recipe.save_dir, LAST_CHECKPOINT))):
        print(f"restored {recipe.restore(args.checkpoint)}")
    os.makedirs(args.output, exist_ok=True)
    cache = os.path.join(args.output, "sensitivity.json")
    record = recipe.sensitivity(args.ratios, cache_path=cache)
    ratios = sorted({float(r) for g in record["groups"].values() for r in g["metrics"]})
    width = max([len(n) for n in record["groups"]] + [5])
    print(f"{'group':<{width}} {'size':>5} " + " ".join(f"{r:>6g}" for r in ratios))
    print(f"{'(none pruned)':<{width}} {'':>5} {record['baseline']:>6.4f}")
    for name, entry in record["groups"].items():
        print(f"{name:<{width}} {entry['size']:>5} " +
              " ".join(f"{entry['metrics'].get(f'{r:g}', float('nan')):>6.4f}" for r in ratios))
    print(f"wrote {cache} and {plot_sensitivity(record, os.path.join(args.output, 'sensitivity.png'))}")


def _flops(args):
    if args.target in list_models():
        net = create_model(args.target, in_channels=args.input_shape[0], num_classes=args.num_classes)
        shape = args.input_shape
    else:
        recipe = load_recipe(args.target, args.set)
        net, shape = recipe.network, recipe.input_shape
    counts = flops(net, shape)
    print(f"{args.target}: {counts['flops'] / 1e6:.2f} M MACs, {counts['params'] / 1e6:.3f} M parameters "
          f"for one {tuple(shape)} input")


def _zoo(args):
    if args.zoo_command == "list":
        if args.recipes:
            names = list_recipes()
        else:
            names = list_models(args.pattern, pretrained=args.pretrained)
        print("\n".join(names))
    elif args.zoo_command == "info":
        for key, value in model_info(args.name).items():
            print(f"{key}: {value}")
    else:
        create_model(args.name, pretrained=True)
        print(f"{args.name}: weights verified and cached in {hub_dir()}")


def _demo(args):
    run_demo(args.workdir)


def _bench_list(text, option, example, allow_all=False):
    """Positive integers (and "all" -> None where allowed) from comma-separated ``text``."""
    values = []
    for part in text.split(","):
        if allow_all and part.strip() == "all":
            values.append(None)
        elif part.strip().isdigit() and int(part) > 0:
            values.append(int(part))
        else:
            raise ValueError(f"{option} must be comma-separated positive integers"
                             f"{' or all' if allow_all else ''} like {example}, got {text!r}")
    return values


def _is_model_file(target):
    return os.path.isfile(target) or any(os.path.isfile(target + s) for s in (".json", ".pdmodel"))


def _bench(args):
    batch_sizes = _bench_list(args.batch, "--batch", "1,32")
    threads = _bench_list(args.threads, "--threads", "1,all", allow_all=True)
    if args.runs < 1:
        raise ValueError(f"--runs must be a positive integer, got {args.runs}")
    ROUND_TO.require(args.round_to, None, "--round-to")
    runtimes = bench.runtimes_to_use(args.runtimes.split(",") if args.runtimes else None)
    files, file_targets, zoo_names = {}, [], []
    for target in args.targets:
        if _is_model_file(target):
            files.setdefault(bench.variant_name(target), []).append(target)
            file_targets.append(target)
        elif os.sep in target or target.endswith(bench.MODEL_SUFFIXES):
            raise FileNotFoundError(f"model file {target!r} not found")
        else:
            model_info(target)  # an unknown zoo name raises here, before any work
            zoo_names.append(target)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        groups = {" ".join(file_targets): files} if files else {}
        for name in zoo_names:
            groups[name] = bench.zoo_variants(name, os.path.join(args.workdir or tmp, name), args.input_shape,
                                              pretrained="." in name, round_to=args.round_to)
        for title, models in groups.items():
            results[title] = bench.benchmark(models, runtimes, batch_sizes, threads, args.runs, args.input_shape)
            print(bench.format_table(results[title], title) + "\n", flush=True)
    if args.json:
        write_json(results, args.json)
        print(f"wrote {args.json}")


def _shape(text):
    try:
        shape = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"input shape must be like 3,224,224, got {text!r}")
    if len(shape) != 3 or min(shape) <= 0:
        raise argparse.ArgumentTypeError(f"input shape must be three positive sizes C,H,W, got {text!r}")
    return shape


def _ratios(text):
    try:
        ratios = [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"ratios must be like 0.1,0.3,0.5, got {text!r}")
    if not ratios or any(not 0 < r < 1 for r in ratios):
        raise argparse.ArgumentTypeError(f"ratios must be fractions in (0, 1), got {text!r}")
    return ratios


def _recipe_args(parser, checkpoint=False):
    parser.add_argument("recipe", help="recipe file, or a shipped recipe name like fashion_mnist/mobilenet_v1_baseline")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set trainer.epochs=3 (repeatable)")
    if checkpoint:
        parser.add_argument("--checkpoint", default=None,
                            help="training checkpoint to restore (default: trainer.save_dir/last.pdckpt)")


def build_parser():
    parser = argparse.ArgumentParser(prog="slimhub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train a recipe: fit with its strategies, evaluate, export")
    _recipe_args(run)
    run.add_argument("--check", action="store_true",
                     help="only check the recipe and print its schedule: every check run makes before "
                          "training (the model, data, teacher and strategies are built and tried on one "
                          "sample), nothing trained or written but pretrained weights fetched into the "
                          "cache")
    run.set_defaults(func=_run)

    ev = sub.add_parser("eval", help="evaluate a recipe's trained checkpoint on its eval data")
    _recipe_args(ev, checkpoint=True)
    ev.set_defaults(func=_eval)

    ex = sub.add_parser("export", help="export a recipe's trained checkpoint")
    _recipe_args(ex, checkpoint=True)
    ex.add_argument("--format", action="append", default=None,
                    help="export format (repeatable; default: the recipe's export.formats)")
    ex.add_argument("--output", default=None, help="path prefix of the files (default: export.path)")
    ex.set_defaults(func=_export)

    sens = sub.add_parser("sensitivity", help="scan each prunable group's sensitivity: table and plot")
    _recipe_args(sens, checkpoint=True)
    sens.add_argument("--ratios", type=_ratios, default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                      help="pruned ratios to try, e.g. 0.1,0.3,0.5")
    sens.add_argument("--output", default="sensitivity",
                      help="folder for sensitivity.json (a resumable cache) and sensitivity.png")
    sens.set_defaults(func=_sensitivity)

    flops = sub.add_parser("flops", help="count MACs and parameters of a zoo model or a recipe's model")
    flops.add_argument("target", help="zoo architecture name, or a recipe (file or shipped name)")
    flops.add_argument("--input-shape", type=_shape, default=(3, 224, 224), help="C,H,W of a zoo model's input")
    flops.add_argument("--num-classes", type=int, default=1000, help="a zoo model's classes")
    flops.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe key (recipes only)")
    flops.set_defaults(func=_flops)

    zoo = sub.add_parser("zoo", help="list, describe and download zoo models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    zl = zoo_sub.add_parser("list", help="architectures, pretrained entries (--pretrained) or recipes (--recipes)")
    zl.add_argument("pattern", nargs="?", default=None, help="wildcard such as 'resnet*'")
    zl.add_argument("--pretrained", action="store_true", help="list pretrained entries (arch.tag)")
    zl.add_argument("--recipes", action="store_true", help="list the shipped recipes")
    zi = zoo_sub.add_parser("info", help="describe an architecture or a pretrained entry")
    zi.add_argument("name")
    zd = zoo_sub.add_parser("download", help="fetch and verify a pretrained entry's weights into the cache")
    zd.add_argument("name", help="arch.tag")
    zoo.set_defaults(func=_zoo)

    demo = sub.add_parser("demo", help="baseline -> prune -> QAT -> int8 export on Fashion-MNIST, "
                                       "with a before/after table (a few minutes on 2 CPU cores)")
    demo.add_argument("--workdir", default=os.path.join("runs", "demo"),
                      help="folder for checkpoints and exports; a finished stage is reused")
    demo.set_defaults(func=_demo)

    bn = sub.add_parser("bench", help="CPU latency of model files or zoo models in every runtime that reads "
                                      "them, side by side, with speed-ups over float32")
    bn.add_argument("targets", nargs="+", metavar="TARGET",
                    help="a model file (.onnx, .xml) or Paddle inference prefix (files named alike are one "
                         "model in several formats; 'float32' is the reference), or a zoo name: an "
                         "architecture or float entry gives float32, pruned, int8 and pruned+int8; "
                         "a pruned or int8 entry itself")
    bn.add_argument("--input-shape", type=_shape, default=None,
                    help="C,H,W (default: read from the .onnx/.xml file; a zoo entry's input size; "
                         "3,224,224 for a zoo architecture)")
    bn.add_argument("--batch", default="1,32", help="batch sizes, e.g. 1,32")
    bn.add_argument("--threads", default="1,all", help="thread counts, 'all' for the runtime's default")
    bn.add_argument("--runs", type=int, default=bench.RUNS, help="interleaved timing rounds")
    bn.add_argument("--round-to", type=int, default=DEFAULT_ROUND_TO,
                    help="the pruned variant of a zoo architecture keeps multiples of this many channels "
                         "(wider multiples suit int8 on AMX CPUs, see docs/deploy.md)")
    bn.add_argument("--runtimes", default=None,
                    help="comma-separated, from onnxruntime,openvino,paddle (default: those installed)")
    bn.add_argument("--json", default=None, help="write the results to this JSON file")
    bn.add_argument("--workdir", default=None,
                    help="folder for the exported zoo models (default: a temporary folder)")
    bn.set_defaults(func=_bench)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RecipeError as exc:
        print(f"slimhub {args.command}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError, OSError, NotImplementedError, ImportError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"slimhub {args.command}: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
