"""The value-based scripts learn CartPole-v1 with 2 workers and a fixed seed; scores read from eval.json."""

import json
import os
import subprocess
import sys

import pytest

import async_nstep_q as nq
import async_one_step_q as oq
import async_sarsa as sarsa
from conftest import ROOT, evaluation_means

# The CartPole commands of docs/presets.md: no tuning flag, the vector preset's budget and schedules.
# Hogwild runs differ even with one seed; the budgets leave room. Evaluations every 50k steps (the
# final one at the preset's budget): n-step Q's final policy swings (seed 1, eight runs: 500 at some
# evaluation in all, but a final 299.5 in one, and 192.2 in a CI run), so its test asks that some
# evaluation solved CartPole and that the final policy is still far above the untrained one (about 9).
# With the preset (seeds 1-5, docs/presets.md), seed 1 ended at 500 in all three scripts; one-step Q's
# seeds 4 and 5 ended at 195 and 227, Sarsa's seed 3 at 285: the one-step bar stays at 195.
COMMON = ["--env-id", "CartPole-v1", "--num-workers", "2", "--seed", "1", "--eval-interval", "50000"]


@pytest.mark.parametrize("module, best, final", [
    (nq, 475, 100),
    (oq, 195, 195),
    (sarsa, 195, 195),
], ids=lambda m: getattr(m, "SCRIPT", None))
def test_value_based_script_learns_cartpole_with_its_preset(tmp_path, module, best, final):
    result = subprocess.run([sys.executable, os.path.join(ROOT, module.SCRIPT), *COMMON, "--run-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.load(open(tmp_path / "eval.json"))
    assert evaluation["global_step"] >= module.PRESETS["vector"]["total_timesteps"] and len(evaluation["returns"]) == 10
    assert evaluation["mean"] >= final, evaluation
    evaluations = evaluation_means(tmp_path)
    assert max(evaluations) >= best, evaluations
