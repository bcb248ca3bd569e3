"""Loading a recipe into a Trainer, data and callbacks, and running it."""
from __future__ import annotations

import os

import numpy as np
import paddle
from tqdm import tqdm

from slimhub.callbacks import CallbackList, ModelCheckpoint
from slimhub.checkpoint import LAST_CHECKPOINT
from slimhub.deploy.verify import RANDOM_SAMPLES as VERIFY_SAMPLES
from slimhub.flops import flops
from slimhub.model_zoo import UnknownModelError
from slimhub.recipe import build
from slimhub.prune import build_graph, scan_sensitivity
from slimhub.prune.sensitivity import DEFAULT_RATIOS
from slimhub.recipe.errors import describe, reason
from slimhub.recipe.preflight import check_folders, check_taps, preflight
from slimhub.recipe.schema import signature_fields, validate
from slimhub.recipe.source import apply_overrides, read_recipe_file
from slimhub.trainer import Trainer

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "model_zoo", "recipes")
FIT_KEYS = tuple(signature_fields(Trainer.fit))
TRAINER_KEYS = tuple(signature_fields(Trainer.__init__))


def list_recipes():
    """Names of the recipes shipped in ``slimhub/model_zoo/recipes`` (files starting with
    ``_`` are bases for ``include:`` and not listed)."""
    names = []
    for folder, _, files in os.walk(RECIPES_DIR):
        for f in files:
            if f.endswith(".yaml") and not f.startswith("_"):
                names.append(os.path.relpath(os.path.join(folder, f[:-5]), RECIPES_DIR))
    return sorted(names)


def find_recipe(name):
    """``name`` if it is a file, else the shipped recipe of that name (``fashion_mnist/...``)."""
    if os.path.isfile(name):
        return name
    shipped = os.path.join(RECIPES_DIR, name if name.endswith(".yaml") else name + ".yaml")
    if os.path.isfile(shipped):
        return shipped
    raise FileNotFoundError(f"recipe {name!r} not found: it is not a file (looked for "
                            f"{os.path.abspath(name)}) nor a shipped recipe in {RECIPES_DIR}; "
                            f"shipped recipes: {list_recipes()}")


def _model(located, path, spec):
    """Build the model section at ``path``; errors name the key that caused them."""
    name = spec["name"]
    try:
        model = build.make_model(name, spec["pretrained"], spec["args"])
    except (UnknownModelError, TypeError, ValueError) as exc:
        # an entry that pretrained names but does not exist, or pretrained: true among several
        pretrained_named_it = isinstance(spec["pretrained"], str) or not isinstance(exc, UnknownModelError)
        if spec["pretrained"] and pretrained_named_it and "pretrained" in str(exc):
            raise located.error(path + ("pretrained",), f"cannot build model {name!r}: {reason(exc)}") from None
        if isinstance(exc, UnknownModelError):
            raise located.error(path + ("name",), f"cannot build model {name!r}: {reason(exc)}") from None
        raise located.error(path + ("args",), f"model {name!r} refused its arguments "
                            f"{spec['args']}: {exc}") from None
    except (ImportError, AttributeError) as exc:
        raise located.error(path + ("name",), f"cannot build model {name!r}: {reason(exc)}") from None
    except OSError as exc:
        raise located.error(path + ("pretrained",), f"pretrained weights of {name!r} could not "
                            f"be fetched: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (a model function's own failure)
        raise located.error(path + ("name",), f"building model {name!r} failed: {describe(exc)}") from None
    if spec["weights"] is not None:
        try:
            build.load_weights(model, build.existing_file(spec["weights"]))
        except (OSError, ValueError) as exc:
            raise located.error(path + ("weights",), str(exc)) from None
        except Exception as exc:  # noqa: BLE001  (a file paddle.load cannot read raises anything)
            raise located.error(path + ("weights",), f"cannot load {spec['weights']}: {describe(exc)}") from None
    return model


def _data(located, spec):
    kind = spec["dataset"]
    args = {k: v for k, v in spec.items() if k != "dataset"}
    try:
        return build.DATASETS[kind](**args)
    except FileNotFoundError as exc:
        key = "archive" if "archive" in args else "root"
        raise located.error(("data", key), str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise located.error(("data",), f"dataset {kind!r} refused its keys: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (an unreadable archive or folder raises anything)
        key = "archive" if "archive" in args else "root" if "root" in args else None
        raise located.error(("data",) + ((key,) if key else ()), f"dataset {kind!r} cannot be read: "
                            f"{describe(exc)}") from None


def _optimizer(located, config, model):
    trainer = config["trainer"]
    opt = dict(trainer["optimizer"])
    kind = opt.pop("type")
    sched = dict(trainer["lr_schedule"])
    sched_kind = sched.pop("type")
    lr = opt.pop("learning_rate")
    try:
        lr = build.LR_SCHEDULES[sched_kind](lr, trainer["epochs"], **sched)
    except (TypeError, ValueError) as exc:
        raise located.error(("trainer", "lr_schedule"), f"{sched_kind!r} refused its keys: {exc}") from None
    try:
        return build.OPTIMIZERS[kind](learning_rate=lr, parameters=model.parameters(), **opt)
    except (TypeError, ValueError) as exc:
        raise located.error(("trainer", "optimizer"), f"{kind!r} refused its keys: {exc}") from None


def _callbacks(located, config, input_shape, model):
    """``{strategy name: callback}``, in the order the callbacks run."""
    order = list(build.STRATEGIES)
    named = sorted(config["strategies"].items(),
                   key=lambda item: (order.index(item[1]["type"]), item[1].get("start_epoch", 0)))
    callbacks = {}
    for name, spec in named:
        path = ("strategies", name)
        args = {k: v for k, v in spec.items() if k != "type"}
        if "teacher" in args:
            args["teacher"] = _model(located, path + ("teacher",), args["teacher"])
            if "losses" in args:
                check_taps(located, name, args["losses"], args["teacher"], model)
        if "input_shape" in args and args["input_shape"] is None:
            args["input_shape"] = input_shape
        cls = build.STRATEGIES[spec["type"]]
        try:
            callbacks[name] = cls(**args)
        except (TypeError, ValueError, KeyError) as exc:
            raise located.error(path, f"{cls.__name__} refused these keys: {reason(exc)}") from None
    return callbacks


class Recipe:
    """A loaded recipe: its configuration (defaults filled in) and what it built.

    ``trainer`` holds the model, optimizer, loss and metrics; ``callbacks`` are the
    strategies' callbacks; :meth:`fit` trains with the recipe's fit arguments.
    """

    def __init__(self, path, located, config, trainer, train_data, eval_data, callbacks, input_shape):
        self.path = path
        self.located = located
        self.config = config
        self.trainer = trainer
        self.train_data = train_data
        self.eval_data = eval_data
        self.callbacks = callbacks
        self.input_shape = tuple(input_shape)

    @property
    def network(self):
        return self.trainer.network

    @property
    def save_dir(self):
        return self.config["trainer"]["save_dir"]

    def fit(self):
        """Train with the strategies' callbacks; returns the history."""
        kwargs = {k: self.config["trainer"][k] for k in FIT_KEYS}
        return self.trainer.fit(self.train_data, self.eval_data, callbacks=self.callbacks, **kwargs)

    def evaluate(self):
        """Loss and metrics of the network on the recipe's eval data."""
        return self.trainer.evaluate(self.eval_data, self.config["trainer"]["batch_size"])

    def size(self):
        """``{"flops": MACs, "params": n}`` of the network for one input."""
        return flops(self.network, self.input_shape)

    def export(self, path=None, formats=None):
        """Write the network in each format (default: the recipe's ``export`` section);
        returns the files written."""
        path = path or self.config["export"]["path"]
        if path is None:
            raise ValueError(f"{self.path}: export.path is not set; give a path")
        spec = [paddle.static.InputSpec([None, *self.input_shape], "float32", "image")]
        samples = self.samples()
        files = []
        for fmt in formats or self.config["export"]["formats"]:
            files += self.trainer.export(path, spec, format=fmt, samples=samples) or []
        return files

    def samples(self, count=VERIFY_SAMPLES):
        """The first ``count`` inputs of the eval data (those exports are checked on), as numpy."""
        data = self.eval_data
        n = min(count, len(data))
        return np.stack([np.asarray(data[i][0], dtype="float32") for i in range(n)])

    def restore(self, checkpoint=None):
        """Load a checkpoint of this recipe's training (default ``save_dir/last.pdckpt``):
        the strategies re-apply what they changed (pruning plan, quantizers), then the
        weights load."""
        if checkpoint is None:
            if self.save_dir is None:
                raise ValueError(f"{self.path}: trainer.save_dir is not set; give a checkpoint file")
            checkpoint = os.path.join(self.save_dir, LAST_CHECKPOINT)
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint {checkpoint!r} not found (looked for "
                                    f"{os.path.abspath(checkpoint)}); run the recipe first")
        saver = ModelCheckpoint(os.path.dirname(os.path.abspath(checkpoint)))
        self.trainer.callbacks = CallbackList(self.callbacks + [saver])
        self.trainer.callbacks.set_model(self.trainer)
        self.trainer.load(checkpoint)
        return checkpoint

    def sensitivity(self, ratios=DEFAULT_RATIOS, cache_path=None, progress=True):
        """Scan the network's pruning sensitivity on the eval data (first metric, e.g. top-1),
        within the scope and criterion of the recipe's first prune strategy if it has one.
        Returns the record of :func:`slimhub.prune.scan_sensitivity`."""
        prune = next((s for s in self.config["strategies"].values() if s["type"] == "prune"), {})
        scope = {k: prune.get(k) for k in ("include", "exclude")}
        criterion = prune.get("criterion", "l1_norm")
        total = 1 + len(build_graph(self.network, self.input_shape, **scope).groups) * len(ratios)
        bar = tqdm(total=total, desc="sensitivity", unit="eval", disable=not progress)
        trainer, batch_size = self.trainer, self.config["trainer"]["batch_size"]

        def eval_fn(network):
            scorer = Trainer(network, loss=trainer.loss, metrics=trainer.metrics)
            logs = scorer.evaluate(self.eval_data, batch_size)
            bar.update(1)
            return next(v for k, v in logs.items() if k != "loss")
        try:
            return scan_sensitivity(self.network, self.input_shape, eval_fn, ratios, criterion,
                                    cache_path, **scope)
        finally:
            bar.close()


def _configuration(path, overrides):
    """``(Located values, configuration with defaults)`` of the recipe file ``path``."""
    located = apply_overrides(read_recipe_file(path), overrides)
    return located, validate(located)


def check_recipe(path, overrides=None):
    """Read and validate a recipe's keys, values, epoch windows and combinations without
    building anything (no data, no downloads); returns its configuration with defaults
    filled in. :func:`load_recipe` checks this and everything else ``run`` checks."""
    return _configuration(find_recipe(path), overrides)[1]


def load_recipe(path, overrides=None):
    """Read, validate and build the recipe at ``path`` (a file, or a shipped recipe name such
    as ``"fashion_mnist/mobilenet_v1_baseline"``) with ``overrides`` like
    ``["trainer.epochs=3"]``. Returns a :class:`Recipe`; a bad recipe raises
    :class:`slimhub.recipe.RecipeError` naming the key path, file and line.

    This is every check ``slimhub run`` makes before training (``slimhub run --check`` is
    this call): :func:`check_recipe`'s, then the folders, then the built model, data,
    teacher, callbacks and the checkpoint to resume, tried on one sample of the data
    (:mod:`slimhub.recipe.preflight`). Nothing is left written. ``trainer.seed`` (if set)
    seeds Paddle before the model is built, so that its initial weights are reproducible,
    and again when :meth:`Recipe.fit` starts."""
    path = find_recipe(path)
    located, config = _configuration(path, overrides)
    check_folders(located, config)
    seed = config["trainer"]["seed"]
    if seed is not None:
        paddle.seed(seed)
    train_data, eval_data, input_shape = _data(located, config["data"])
    model = _model(located, ("model",), config["model"])
    optimizer = _optimizer(located, config, model)
    callbacks = _callbacks(located, config, input_shape, model)
    classes = preflight(located, config, model, train_data, eval_data, input_shape, callbacks,
                        lambda network: _optimizer(located, config, network))
    metrics = [paddle.metric.Accuracy(topk=(1, 5) if classes >= 5 else (1,))]
    trainer_args = {k: config["trainer"][k] for k in TRAINER_KEYS}
    trainer = Trainer(model, optimizer, paddle.nn.CrossEntropyLoss(), metrics, **trainer_args)
    return Recipe(os.path.abspath(path), located, config, trainer, train_data, eval_data,
                  list(callbacks.values()), input_shape)


def _trained_checkpoint(recipe):
    """A checkpoint of the trained recipe, written now unless ``save_dir`` holds it."""
    save_dir = recipe.save_dir
    if save_dir is not None and os.path.isfile(os.path.join(save_dir, LAST_CHECKPOINT)):
        return os.path.join(save_dir, LAST_CHECKPOINT)
    path = os.path.join(save_dir, LAST_CHECKPOINT) if save_dir is not None else \
        recipe.config["export"]["path"] + ".pdckpt"
    recipe.trainer.save(path)
    return path


def run_recipe(path, overrides=None):
    """Load the recipe, train, evaluate and export it. Returns ``{"history", "eval", "flops",
    "params", "files"}``.

    Before exporting, the trained model is in a checkpoint (``save_dir/last.pdckpt``, or
    ``export.path + ".pdckpt"`` without a ``save_dir``); an export that fails raises a
    :class:`RecipeError` at its format that names that checkpoint, from which
    ``slimhub export RECIPE --checkpoint FILE`` writes the files again."""
    recipe = load_recipe(path, overrides)
    history = recipe.fit()
    final = {k[len("eval_"):]: v[-1] for k, v in history.items() if k.startswith("eval_")}
    if not final or recipe.trainer.epoch != recipe.config["trainer"]["epochs"]:
        final = recipe.evaluate()  # fit evaluates the last epoch unless it stopped early
    result = {"history": history, "eval": final, **recipe.size(), "files": []}
    if recipe.config["export"]["path"] is not None:
        checkpoint = _trained_checkpoint(recipe)
        for i, fmt in enumerate(recipe.config["export"]["formats"]):
            try:
                result["files"] += recipe.export(formats=[fmt])
            except Exception as exc:  # noqa: BLE001  (whatever failed, say where the trained model is)
                words = " ".join(str(reason(exc)).split()) or type(exc).__name__
                raise recipe.located.error(
                    ("export", "formats", i),
                    f"exporting {fmt!r} failed after training: {type(exc).__name__}: {words[:500]}; "
                    f"the trained model is saved in {checkpoint}: 'slimhub export {recipe.path} "
                    f"--checkpoint {checkpoint}' exports it again") from exc
    return result
