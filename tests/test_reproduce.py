"""scripts/reproduce.py: which rows wait for which, and concurrent rows sharing a results file."""
import importlib.util
import json
import multiprocessing
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "reproduce.py")


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reproduce():
    return load_script()


def test_rows_wait_for_the_checkpoints_they_start_from(reproduce):
    deps = reproduce.dependencies(["mobilenet_v1_baseline", "vgg11_qat_absmax", "resnet20_prune_sensitive50",
                                   "vgg11_distill", "mobilenet_v1_distill_qat", "resnet20_distill"])
    assert deps == {
        "mobilenet_v1_baseline": set(),
        "vgg11_qat_absmax": {"vgg11_baseline"},
        "resnet20_prune_sensitive50": {"resnet20_baseline"},
        "vgg11_distill": {"resnet20_baseline"},  # trained from scratch; the teacher's checkpoint
        "mobilenet_v1_distill_qat": {"mobilenet_v1_distill", "resnet20_baseline"},
        "resnet20_distill": {"resnet20_baseline"},
    }


def test_every_row_depends_only_on_rows_that_come_before_it(reproduce):
    order = list(reproduce.ROWS)
    for name, deps in reproduce.dependencies(order).items():
        assert all(order.index(d) < order.index(name) for d in deps), (name, deps)


def _write_rows(path, worker, barrier):
    module = load_script()
    barrier.wait()  # all writers start together
    for i in range(ROWS_EACH):
        module.update_results(path, f"w{worker}_{i}", {"top1": i})


ROWS_EACH = 40


def test_rows_written_at_the_same_time_are_all_kept(tmp_path):
    path = str(tmp_path / "results.json")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_write_rows, args=(path, w, barrier)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(w.exitcode == 0 for w in workers)
    with open(path) as f:
        assert json.load(f) == {f"w{w}_{i}": {"top1": i} for w in range(4) for i in range(ROWS_EACH)}


def test_wall_time_counts_overlapping_rows_once_and_skips_gaps(reproduce):
    rows = {"a": {"started": 0, "finished": 60}, "b": {"started": 30, "finished": 120},
            "c": {"started": 40, "finished": 50}, "d": {"started": 300, "finished": 360}}
    assert reproduce._wall_minutes(rows) == pytest.approx((120 + 60) / 60)
