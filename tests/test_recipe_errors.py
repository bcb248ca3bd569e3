"""Each recipe in tests/bad_recipes/ fails with one error naming the key path, the file and
the line marked ``# <- error``, plus the fragments its ``# expect:`` header lists."""
import os

import pytest

from slimhub.recipe import RecipeError, load_recipe

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bad_recipes")
BAD = sorted(f for f in os.listdir(HERE) if f.endswith(".yaml") and not f.startswith("_"))


def expectation(name):
    """(key path, file, line, other fragments) from a bad recipe's header and marker."""
    with open(os.path.join(HERE, name)) as f:
        header = f.readline()
    assert header.startswith("# expect: "), f"{name} needs a '# expect:' header"
    fragments = [p.strip() for p in header[len("# expect: "):].split(" | ")]
    where = [p[1:] for p in fragments if p.startswith("@")]
    fragments = [p for p in fragments if not p.startswith("@")]
    target = os.path.join(HERE, where[0] if where else name)
    with open(target) as f:
        lines = [i + 1 for i, text in enumerate(f) if "# <- error" in text]
    assert len(lines) == 1, f"{target} needs exactly one '# <- error' marker"
    return fragments[0], target, lines[0], fragments[1:]


def test_every_error_kind_has_a_bad_recipe():
    kinds = {"unknown_key", "unknown_strategy_key", "pruned_flops_out_of_range", "bits_zero",
             "negative_epochs", "wrong_type", "qat_before_prune_ends", "prune_windows_overlap",
             "missing_teacher_file", "unknown_model", "missing_data_folder",
             # found only by building the recipe and trying it on one sample
             "pruned_flops_unreachable", "distill_student_tap_missing", "prune_input_shape_channels",
             "prune_include_matches_nothing", "too_few_classes", "int8_export_without_qat",
             "float_export_with_qat", "distill_ends_before_it_starts", "prune_ends_before_it_starts",
             "epochs_too_many", "learning_rate_inf"}
    assert kinds <= {f[:-5] for f in BAD}


@pytest.mark.parametrize("name", BAD)
def test_bad_recipe_error_names_key_file_and_line(name):
    key, file, line, fragments = expectation(name)
    with pytest.raises(RecipeError) as info:
        load_recipe(os.path.join(HERE, name))
    message = str(info.value)
    assert message.startswith(f"{file}:{line}: {key}: "), message
    assert info.value.key == key and info.value.origin.line == line
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_override_errors_name_the_override():
    path = os.path.join(HERE, "..", "..", "slimhub", "model_zoo", "recipes", "fashion_mnist",
                        "mobilenet_v1_baseline.yaml")
    with pytest.raises(RecipeError, match=r"--set trainer\.epocs=3: trainer\.epocs: unknown key in "
                                          r"trainer; did you mean 'epochs'\?"):
        load_recipe(path, ["trainer.epocs=3"])
    with pytest.raises(RecipeError, match=r"--set trainer\.epochs=0: trainer\.epochs: got 0; "
                                          r"allowed: an integer in \[1, 10000\]"):
        load_recipe(path, ["trainer.epochs=0"])
    with pytest.raises(RecipeError, match="must look like key.path=value"):
        load_recipe(path, ["trainer.epochs"])
