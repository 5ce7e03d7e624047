"""a3c.py learns: CartPole-v1, 2 workers, a fixed seed and step budget, score read from eval.json."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_a3c_solves_cartpole_with_two_workers(tmp_path):
    # The README's CartPole command with a budget of 100k steps (~12 s of training on 2 cores):
    # Hogwild makes runs differ even with one seed, so the budget leaves room for a slow run.
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "a3c.py"), "--env-id", "CartPole-v1", "--num-workers", "2",
         "--total-timesteps", "100000", "--learning-rate", "1e-2", "--entropy-coef", "0", "--seed", "1",
         "--eval-interval", "1000000", "--eval-episodes", "10", "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.load(open(tmp_path / "eval.json"))
    assert evaluation["global_step"] >= 100000
    assert len(evaluation["returns"]) == 10
    assert evaluation["mean"] >= 475, evaluation
