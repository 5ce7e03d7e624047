import csv
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import a3c  # noqa: E402
import async_nstep_q  # noqa: E402
import async_one_step_q  # noqa: E402
import async_sarsa  # noqa: E402

MODULES = (a3c, async_nstep_q, async_one_step_q, async_sarsa)  # the four scripts, imported
SCRIPTS = tuple(module.SCRIPT for module in MODULES)  # and their file names, as a user runs them
VALUE_BASED = MODULES[1:]


# The learning tests' seed: 1, as CI runs them; benchmarks/learning_tests.py --seeds sets others to measure the spread.
LEARNING_SEED = os.environ.get("LEARNING_TEST_SEED", "1")


def evaluation_means(run_dir):
    """The eval_return_mean of every evaluation a run logged in its progress.csv, final one included."""
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return [float(row["eval_return_mean"]) for row in csv.DictReader(f) if row["eval_return_mean"]]


def parsed(script, monkeypatch, *flags):
    """(args, sources) as `script` (an imported algorithm module) parses the command line `flags`."""
    monkeypatch.setattr(sys, "argv", [script.SCRIPT, *flags])
    args, _, sources = script.parse_args()
    return args, sources


def used_run_dir(parent):
    """parent/used, a run directory that already holds another run's progress.csv (not to be mixed into)."""
    (parent / "used").mkdir()
    (parent / "used" / "progress.csv").write_text("global_step\n")


def pytest_collection_modifyitems(items):
    """The learning tests first: README's command runs the suite on two pytest-xdist workers, and the learning
    tests, one at a time on one of them (their xdist_group), take longer than anything else; started first, the
    other worker meanwhile runs the rest instead of waiting at the end."""
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)  # stable: the rest keep their order
