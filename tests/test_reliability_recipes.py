"""``slimhub run --check`` makes every check ``slimhub run`` makes before training: each bad
recipe (tests/bad_recipes/ and the hostile files written here) is refused by both with the
same one line naming the file, line and key path, before anything trains or is written,
while recipes beside the bad ones pass both and train; a late failure (an export after
training) leaves the trained model in a checkpoint the error names. Data: a 16-image
Fashion-MNIST written here, so that nothing reads the real files."""
import functools
import json
import os
import struct
import textwrap
import time
import tracemalloc

import numpy as np
import paddle
import pytest

import slimhub
from slimhub.cli import main
from slimhub.model_zoo import create_model
from slimhub.recipe import list_recipes
from slimhub.prune.sensitivity import SENSITIVITY_FORMAT
from slimhub.recipe.source import MAX_FILE_BYTES, MAX_FILES, read_recipe_file
from test_recipe_errors import BAD as STATIC_BAD
from test_recipe_errors import HERE, expectation

MODEL = "model: {name: mobilenet_v1, args: {in_channels: 1, num_classes: 10, scale: 0.25}}\n"


# ------------------------------------------------------------------ tiny data
def write_idx(path, array):
    with open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module", autouse=True)
def tiny_fashion_mnist(tmp_path_factory):
    """16 training and 16 test images with labels 0..9 (a 9 among the first 8), found through $SLIMHUB_DATA."""
    folder = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(16, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(16) * 7 + 9) % 10)  # the first 8 hold 9
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMHUB_DATA", str(folder))
        yield folder


@pytest.fixture
def fits(monkeypatch):
    """Every ``Trainer.fit`` call (the calls still train)."""
    calls = []
    original = slimhub.Trainer.fit

    @functools.wraps(original)  # the recipe schema reads fit's signature
    def fit(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(slimhub.Trainer, "fit", fit)
    return calls


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs)


# -------------------------------------------------------------- hostile files
def bomb_text(levels=9):
    """A "billion laughs": each level lists its predecessor 9 times (9**levels values)."""
    lines = [MODEL.strip(), "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefghijklmnop", "bcdefghijklmnop"[:levels - 1]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def hostile(folder):
    """``{name: (path, overrides, key, file, line, fragments)}`` of files written in ``folder``."""
    cases = {}

    def add(name, content, key, line, fragments, overrides=(), where=None):
        path = folder / name
        raw = content if isinstance(content, bytes) else content.encode("utf-8")
        path.write_bytes(raw)
        if line == "size":  # where the file passes the size limit
            line = raw.count(b"\n", 0, MAX_FILE_BYTES) + 1
        cases[name] = (str(path), list(overrides), key, str(where or path), line, fragments)

    # values a..d hold 10, 91, 820 and 7381 values; e (line 6) would hold 66430
    add("alias_bomb.yaml", bomb_text(), "e", 6, ["holds more than 10000 values with its aliases expanded"])
    add("nested_brackets.yaml", MODEL + "trainer: {epochs: " + "[" * 3000 + "]" * 3000 + "}\n",
        "trainer.epochs[0][0]", 2, ["nested more than 64 levels deep"])
    add("nested_blocks.yaml", MODEL + "".join(f"{'  ' * i}k{i}:\n" for i in range(100)) + "  " * 100 + "x: 1\n",
        "k0.k1.k2.k3", 2 + 63, ["nested more than 64 levels deep"])
    add("not_utf8.yaml", (MODEL + "trainer:\n  epochs: 2   # caf\xe9\n").encode("latin-1"), "(recipe)", 3,
        ["not UTF-8 text: byte 0xe9 at column 20"])
    add("utf16.yaml", (MODEL + "trainer: {epochs: 2}\n").encode("utf-16"), "(recipe)", 1,
        ["not UTF-8 text: byte 0xff at column 1"])
    padding = "# padding to pass the size limit\n"
    add("oversize.yaml", MODEL + padding * (MAX_FILE_BYTES // len(padding) + 2), "(recipe)", "size",
        [f"the file passes {MAX_FILE_BYTES} bytes (1 MiB) at this line"])
    add("integer_of_5000_digits.yaml", MODEL + "trainer:\n  epochs: " + "9" * 5000 + "\n", "trainer.epochs", 3,
        ["cannot read this value", "Exceeds the limit (4300 digits)"])
    add("nul_character.yaml", MODEL + "trainer:\n  epochs: 2\x00\n", "(recipe)", 3,
        ["not valid YAML: unacceptable character #x0000"])
    add("recursive_alias.yaml", "model: &m {name: mobilenet_v1, args: {again: *m}}\n", "model.args.again", 1,
        ["alias *m repeats a value that contains it"])
    # an include "bomb": 40 includes of one base stop at the one that passes MAX_FILES files
    (folder / "_tiny_base.yaml").write_text("trainer: {batch_size: 8}\n")
    add("include_bomb.yaml", "include:\n" + "  - _tiny_base.yaml\n" * 40 + MODEL, f"include[{MAX_FILES - 1}]",
        2 + MAX_FILES - 1, [f"reads more than {MAX_FILES} files through include:"])
    # an include tree: each file includes the next one 4 times, so 1 + 4 + 16 + ... files
    for depth in range(4, 0, -1):
        nxt = f"_fan{depth + 1}.yaml" if depth < 4 else "_tiny_base.yaml"
        (folder / f"_fan{depth}.yaml").write_text("include:\n" + f"  - {nxt}\n" * 4)
    # (reads: this file, _fan1, _fan2, _fan3, _fan4 and its 4 bases, 3 more _fan4 + 12 bases,
    # the second _fan3, _fan4 + 4 bases, then the 33rd read is the second _fan4's second base)
    add("include_tree.yaml", "include: _fan1.yaml\n" + MODEL, "include[1]", 3,
        [f"reads more than {MAX_FILES} files"], where=folder / "_fan4.yaml")
    # a hostile base: the error names the base's file and line
    (folder / "_bomb_base.yaml").write_text(bomb_text())
    add("includes_a_bomb.yaml", "include: _bomb_base.yaml\n", "e", 6, ["holds more than 10000 values"],
        where=folder / "_bomb_base.yaml")
    (folder / "_not_utf8_base.yaml").write_bytes(b"trainer:\n  epochs: 2 # \xff\n")
    add("includes_not_utf8.yaml", "include: _not_utf8_base.yaml\n" + MODEL, "(recipe)", 2,
        ["not UTF-8 text: byte 0xff"], where=folder / "_not_utf8_base.yaml")
    # hostile overrides: the error names the override
    nested = "[&a [1, 1, 1, 1, 1, 1, 1, 1, 1], &b [" + ", ".join(["*a"] * 9) + "], &c [" + \
        ", ".join(["*b"] * 9) + "], &d [" + ", ".join(["*c"] * 9) + "], &e [" + ", ".join(["*d"] * 9) + "]]"
    add("override_alias_bomb.yaml", MODEL, "trainer.milestones[4]", None, ["holds more than 10000 values"],
        overrides=[f"trainer.milestones={nested}"], where=f"--set trainer.milestones={nested}"[:126] + "...")
    deep = "[" * 500 + "]" * 500
    add("override_nesting.yaml", MODEL, "trainer.epochs[0][0][0][0]", None, ["nested more than 64 levels"],
        overrides=[f"trainer.epochs={deep}"], where=f"--set trainer.epochs={deep}"[:126] + "...")
    # files on disk the recipe names
    run_dir = folder / "old_run"
    run_dir.mkdir()
    (run_dir / "last.pdckpt").write_bytes(b"not a checkpoint")
    add("resume_from_a_broken_checkpoint.yaml", MODEL + f"trainer:\n  save_dir: {run_dir}\n  resume: true\n",
        "trainer.resume", 4, [f"cannot resume from {run_dir / 'last.pdckpt'}", "delete it to start afresh"])
    add("sensitivity_cache_is_a_folder.yaml", MODEL + "strategies:\n  prune:\n    method: sensitive\n"
        f"    sensitivity_cache: {folder}\n", "strategies.prune.sensitivity_cache", 5, ["is a folder"])
    def sensitive(cache):
        return MODEL + f"strategies:\n  prune:\n    method: sensitive\n    sensitivity_cache: {cache}\n"
    (folder / "sensitivity_not_json.json").write_text("{not json\n")
    add("sensitivity_cache_not_json.yaml", sensitive(folder / "sensitivity_not_json.json"),
        "strategies.prune.sensitivity_cache", 5, ["cannot use the sensitivity file", "could not be read"])
    (folder / "sensitivity_l2.json").write_text(json.dumps(
        {"format": SENSITIVITY_FORMAT, "version": 1, "criterion": "l2_norm", "groups": {}}))
    add("sensitivity_cache_of_another_criterion.yaml", sensitive(folder / "sensitivity_l2.json"),
        "strategies.prune.sensitivity_cache", 5, ["scanned with criterion 'l2_norm', not 'l1_norm'"])
    (folder / "empty_images" / "train" / "cat").mkdir(parents=True)
    (folder / "empty_images" / "val").mkdir()
    add("empty_image_folder.yaml", MODEL.replace("in_channels: 1", "in_channels: 3") +
        f"data: {{dataset: image_folder, image_size: 32, root: {folder / 'empty_images'}}}\n", "data.root", 2,
        ["dataset 'image_folder' cannot be read: RuntimeError: Found 0 directories in subfolders of"])
    (folder / "not_a_tarball.tar.gz").write_text("not a tarball\n")
    add("cifar_archive_not_a_tarball.yaml", MODEL.replace("in_channels: 1", "in_channels: 3") +
        f"data: {{dataset: cifar10, archive: {folder / 'not_a_tarball.tar.gz'}}}\n", "data.archive", 2,
        ["dataset 'cifar10' cannot be read: ReadError: file could not be opened successfully"])
    (folder / "garbage.pdparams").write_bytes(bytes(range(256)) * 4)
    add("weights_not_a_state_dict.yaml", MODEL.replace("}}", f"}}, weights: {folder / 'garbage.pdparams'}}}"),
        "model.weights", 1, ["can not parse the file"])
    # model functions (the fixture puts this folder on sys.path)
    (folder / "hostile_models.py").write_text(textwrap.dedent("""\
        import paddle
        def sequential():
            return paddle.nn.Sequential(paddle.nn.Conv2D(1, 8, 3, padding=1), paddle.nn.ReLU(),
                                        paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(),
                                        paddle.nn.Linear(8, 10))
        def broken():
            raise RuntimeError("the model function crashed")
        """))
    add("model_function_fails.yaml", "model: {name: 'hostile_models:broken'}\n", "model.name", 1,
        ["building model 'hostile_models:broken' failed: RuntimeError: the model function crashed"])
    add("adapter_on_a_sequential_student.yaml", textwrap.dedent("""\
        model: {name: 'hostile_models:sequential'}
        data: {train_limit: 8, eval_limit: 8}
        strategies:
          distill:
            teacher: {name: resnet20, args: {in_channels: 1, num_classes: 10, scale: 0.25}}
            losses: [{type: l2, teacher: layer1, student: '0', adapter: true}]
        """), "strategies.distill.losses", 6, ["a paddle.nn.Sequential student would run them as one of its layers"])
    # a checkpoint of one epoch of pruning, resumed by recipes that differ from the one that wrote it
    trained = folder / "trained"
    base = MODEL + "data: {train_limit: 8, eval_limit: 8}\n" + \
        f"trainer:\n  epochs: 1\n  verbose: 0\n  save_dir: {trained}\n"
    (folder / "_pruning_run.yaml").write_text(base + "strategies: {prune: {pruned_flops: 0.2}}\n")
    slimhub.run_recipe(str(folder / "_pruning_run.yaml"))
    resume, checkpoint = base + "  resume: true\n", trained / "last.pdckpt"
    add("resume_with_other_settings.yaml", resume + "strategies: {prune: {pruned_flops: 0.3}}\n", "trainer.resume",
        7, [f"cannot resume from {checkpoint}: ValueError: PruneCallback: the checkpoint was trained with "
            "pruned_flops=0.2; this callback has pruned_flops=0.3"])
    add("resume_without_its_strategy.yaml", resume, "trainer.resume", 7,
        [f"cannot resume from {checkpoint}: ValueError: it holds the state of ['PruneCallback.0'], which no "
         "strategy of the recipe has"])
    add("resume_with_another_optimizer.yaml", resume + "  optimizer: {type: adam}\n"
        "strategies: {prune: {pruned_flops: 0.2}}\n", "trainer.resume", 7,
        [f"{checkpoint}: optimizer state 'velocity' of parameter 'conv1.0.weight'"])
    return cases


@pytest.fixture(scope="module")
def hostile_cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        yield hostile(folder)


def static_case(name):
    key, file, line, fragments = expectation(name)
    return os.path.join(HERE, name), [], key, file, line, fragments


HOSTILE = ["alias_bomb.yaml", "nested_brackets.yaml", "nested_blocks.yaml", "not_utf8.yaml", "utf16.yaml",
           "oversize.yaml", "integer_of_5000_digits.yaml", "nul_character.yaml", "recursive_alias.yaml",
           "include_bomb.yaml", "include_tree.yaml", "includes_a_bomb.yaml", "includes_not_utf8.yaml",
           "override_alias_bomb.yaml", "override_nesting.yaml", "resume_from_a_broken_checkpoint.yaml",
           "sensitivity_cache_is_a_folder.yaml", "empty_image_folder.yaml", "cifar_archive_not_a_tarball.yaml",
           "weights_not_a_state_dict.yaml", "model_function_fails.yaml", "adapter_on_a_sequential_student.yaml",
           "resume_with_other_settings.yaml", "resume_without_its_strategy.yaml",
           "resume_with_another_optimizer.yaml", "sensitivity_cache_not_json.yaml",
           "sensitivity_cache_of_another_criterion.yaml"]
FAMILIES = {
    "types and unknown keys": ["unknown_key", "unknown_strategy_key", "unknown_strategy_type", "unknown_optimizer",
                               "wrong_type", "duplicate_key", "bad_export_format", "unknown_model",
                               "strategies_not_a_mapping", "model_args_not_a_mapping", "boolean_epochs",
                               "null_model_name", "unknown_section", "bad_distill_loss", "pretrained_among_several",
                               "pretrained_tag_unknown"],
    "ranges": ["pruned_flops_out_of_range", "bits_zero", "bits_too_wide", "negative_epochs", "epochs_too_many",
               "epochs_float_exponent", "learning_rate_inf", "learning_rate_nan", "distill_temperature_inf",
               "model_argument_nan", "weight_decay_negative", "momentum_out_of_range", "seed_too_large",
               "num_workers_too_many", "image_size_too_large", "input_shape_too_large", "pruned_flops_unreachable",
               "pruned_flops_unreachable_in_two_windows"],
    "epoch windows": ["prune_windows_overlap", "qat_before_prune_ends", "strategy_never_runs",
                      "distill_ends_before_it_starts", "distill_ends_where_it_starts", "prune_ends_before_it_starts",
                      "prune_single_step_ends_before_start", "prune_steps_too_close", "prune_steps_without_end",
                      "prune_last_step_after_training", "two_qat_strategies"],
    "combinations": ["int8_export_without_qat", "float_export_with_qat", "qat_with_static_trainer",
                     "distill_with_static_trainer", "prune_with_static_trainer", "resume_without_save_dir",
                     "save_dir_under_a_file", "export_path_under_a_file", "drop_last_without_a_full_batch"],
    "layer names": ["distill_student_tap_missing", "distill_teacher_tap_missing", "prune_include_matches_nothing",
                    "prune_exclude_everything", "qat_skip_matches_nothing", "qat_skip_everything"],
    "model, data and teacher on one sample": ["model_does_not_fit_data", "prune_input_shape_channels",
                                              "too_few_classes", "teacher_does_not_fit_data",
                                              "distill_features_do_not_match", "adapter_on_a_sequential_student"],
    "files": ["missing_teacher_file", "missing_data_folder", "missing_image_folder", "missing_include",
              "missing_model_weights", "include_error_in_base", "include_not_a_path", "include_cycle",
              "resume_from_a_broken_checkpoint", "sensitivity_cache_is_a_folder", "empty_image_folder",
              "cifar_archive_not_a_tarball", "weights_not_a_state_dict", "model_function_fails",
              "sensitivity_cache_not_json", "sensitivity_cache_of_another_criterion"],
    "resuming": ["resume_with_other_settings", "resume_without_its_strategy", "resume_with_another_optimizer"],
    "YAML syntax and hostile files": ["not_yaml", "recipe_is_a_list", "python_tag", "undefined_alias",
                                      "two_documents", "impossible_date", "alias_bomb", "nested_brackets",
                                      "nested_blocks", "not_utf8", "utf16", "oversize", "integer_of_5000_digits",
                                      "nul_character", "recursive_alias", "include_bomb", "include_tree",
                                      "includes_a_bomb", "includes_not_utf8", "override_alias_bomb",
                                      "override_nesting"],
}


def test_every_bad_recipe_belongs_to_a_family(hostile_cases):
    assert sorted(hostile_cases) == sorted(HOSTILE)
    names = [n[:-5] for n in STATIC_BAD + HOSTILE]
    listed = [n for family in FAMILIES.values() for n in family]
    assert sorted(listed) == sorted(names) and len(set(listed)) == len(listed)
    assert len(names) >= 40


def cli(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", STATIC_BAD + HOSTILE)
def test_check_and_run_refuse_a_bad_recipe_alike_before_training(name, hostile_cases, tmp_path, monkeypatch,
                                                                 capsys, fits):
    path, overrides, key, file, line, fragments = \
        hostile_cases[name] if name in hostile_cases else static_case(name)
    monkeypatch.chdir(tmp_path)  # relative save_dir / export paths of the recipes land here
    sets = [arg for o in overrides for arg in ("--set", o)]
    recipes_before = files_under(os.path.dirname(path))
    check = cli(capsys, ["run", path, "--check", *sets])
    run = cli(capsys, ["run", path, *sets])
    where = f"{file}:{line}" if line is not None else file
    assert check[0] == 2 and run[0] == 2
    assert check[1] == "" and run[1] == ""  # nothing trained, no loss printed
    assert check[2] == run[2], (check[2], run[2])
    message = run[2]
    assert message.startswith(f"slimhub run: {where}: {key}: "), message
    assert message.endswith("\n") and "\n" not in message[:-1] and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert fits == []
    assert files_under(tmp_path) == [] and files_under(os.path.dirname(path)) == recipes_before


def test_recipes_beside_the_bad_ones_pass_the_check_and_train(tmp_path, monkeypatch, capsys, fits):
    """The largest reachable pruned_flops (pruned_flops_unreachable.yaml says 0.9105), a full
    batch with drop_last, and resuming with the recipe that wrote the checkpoint."""
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MODEL + "data: {train_limit: 8, eval_limit: 8}\n"
                      "trainer: {epochs: 1, batch_size: 8, drop_last: true, verbose: 0, save_dir: run}\n"
                      "strategies: {prune: {pruned_flops: 0.91}}\n")
    for sets in ([], ["--set", "trainer.resume=true", "--set", "trainer.epochs=2"]):
        code, out, err = cli(capsys, ["run", str(recipe), "--check", *sets])
        assert (code, err) == (0, "") and out.startswith(f"{recipe}: valid; ")
        code, out, err = cli(capsys, ["run", str(recipe), *sets])
        assert code == 0, err
    assert [trainer.epoch for trainer in fits] == [1, 2]


def test_an_alias_bomb_is_refused_fast_and_small(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb_text(levels=12))  # 9**12 values expanded
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(slimhub.recipe.RecipeError, match="holds more than 10000 values"):
        read_recipe_file(str(path))
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 5e6, (elapsed, peak)


# --------------------------------------------------------------- good recipes
def fake_image_folder(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            os.makedirs(os.path.join(root, split, cls))
            Image.fromarray(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)).save(
                os.path.join(root, split, cls, "0.png"))
    return root


def shipped_overrides(name, image_root):
    """What a shipped recipe needs from outside the package: no earlier runs' checkpoints
    (they start from ``runs/``), and for ImageNet a folder and no downloads."""
    config = slimhub.recipe.check_recipe(name)
    sets = ["model.weights=null"] if config["model"]["weights"] else []
    for strategy, spec in config["strategies"].items():
        if "teacher" in spec:
            sets.append(f"strategies.{strategy}.teacher.weights=null")
            if name.startswith("imagenet/"):
                sets.append(f"strategies.{strategy}.teacher.pretrained=false")
    if name.startswith("imagenet/"):
        sets += [f"data.root={image_root}", "data.image_size=32", "model.pretrained=false"]
    return sets


def test_every_shipped_recipe_passes_the_full_check(tmp_path, monkeypatch, capsys, fits):
    image_root = fake_image_folder(str(tmp_path / "imagenet"))
    monkeypatch.chdir(tmp_path)
    for name in list_recipes():
        sets = [arg for o in shipped_overrides(name, image_root) for arg in ("--set", o)]
        code, out, err = cli(capsys, ["run", name, "--check", *sets])
        assert code == 0, (name, err)
        assert out.startswith(f"{name}: valid; "), out
    assert fits == [] and files_under(tmp_path / "imagenet") == ["train/cat/0.png", "train/dog/0.png",
                                                                 "val/cat/0.png", "val/dog/0.png"]
    assert files_under(tmp_path) == ["imagenet/" + f for f in files_under(tmp_path / "imagenet")]


# --------------------------------------------------- a failure after training
def failing_export(*args, **kwargs):
    raise RuntimeError("the converter crashed")


@pytest.mark.parametrize("save_dir", [True, False], ids=["save_dir", "no_save_dir"])
def test_an_export_that_fails_after_training_leaves_the_trained_model(save_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MODEL + "data: {train_limit: 16, eval_limit: 16}\n" + textwrap.dedent(f"""\
        trainer: {{epochs: 1, batch_size: 16, verbose: 0, seed: 0{', save_dir: run' if save_dir else ''}}}
        strategies: {{prune: {{pruned_flops: 0.2}}}}
        export:
          path: out/model
          formats:
            - inference
        """))
    monkeypatch.setitem(slimhub.export.EXPORTERS, "inference", failing_export)
    code, out, err = cli(capsys, ["run", str(recipe)])
    checkpoint = os.path.join("run", "last.pdckpt") if save_dir else os.path.join("out", "model.pdckpt")
    assert code == 2
    assert err.startswith(f"slimhub run: {recipe}:8: export.formats[0]: exporting 'inference' failed after "
                          "training: RuntimeError: the converter crashed; the trained model is saved in "
                          f"{checkpoint}: 'slimhub export {recipe} --checkpoint {checkpoint}'"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert os.path.isfile(checkpoint)
    # the message's command exports the trained (pruned) model once the cause is gone
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, ["export", str(recipe), "--checkpoint", checkpoint])[0] == 0
    exported = paddle.jit.load("out/model")
    pruned = slimhub.flops(create_model("mobilenet_v1", in_channels=1, num_classes=10, scale=0.25), (1, 28, 28))
    assert sum(int(np.prod(p.shape)) for p in exported.parameters()) < pruned["params"]


# ----------------------------------------------------- the checks change nothing
def test_the_checks_keep_the_random_state(tmp_path):
    """Trying a distillation with an l2 adapter creates layers; the random state is put back,
    so a recipe trains the same whether or not it was checked."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(MODEL + "data: {train_limit: 16, eval_limit: 16}\n" + textwrap.dedent("""\
        strategies:
          distill:
            teacher: {name: resnet20, args: {in_channels: 1, num_classes: 10, scale: 0.25}}
            losses: [{type: l2, teacher: layer2, student: conv2_1, adapter: true}]
        """))
    from slimhub.recipe.preflight import check_distill
    loaded = slimhub.load_recipe(str(recipe))
    distill = loaded.callbacks[0]
    x = paddle.to_tensor(loaded.train_data[0][0][None])
    paddle.seed(5)
    expected = paddle.rand([4]).numpy()
    paddle.seed(5)
    check_distill(loaded.located, "distill", distill, loaded.network, x, "fashion_mnist")
    np.testing.assert_array_equal(paddle.rand([4]).numpy(), expected)
    assert not [n for n, _ in loaded.network.named_sublayers() if "adapter" in n]
