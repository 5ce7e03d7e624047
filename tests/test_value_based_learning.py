"""The value-based scripts learn CartPole-v1 with 2 workers and a fixed seed; scores read from eval.json."""

import json
import os
import subprocess
import sys

import pytest

import async_nstep_q as nq
import async_one_step_q as oq
import async_sarsa as sarsa
from conftest import LEARNING_SEED, ROOT, evaluation_means

# The CartPole commands of docs/presets.md: no tuning flag, the vector preset's budget and schedules, evaluations
# every 50k steps (the final one at the preset's budget). Each bar rests on the test's own command run many times
# (benchmarks/learning_tests.py; benchmarks/results/learning_tests/, docs/results.md): seed 1, as here, 10 times alone
# on the 2 cores and 5 times beside a busy process (a noisy CI machine), and seeds 2-11 once each. Of those 25 runs:
# - n-step Q, its preset with rewards scaled, 256-unit layers, lr 5e-3 and 300k steps
#   (benchmarks/results/learning_tests_nstep_preset_300k/): an evaluation of 500 in all 25 and a final one of
#   255.8-500 on seed 1 alone (10 runs; 350.7-500 in 5 under load), 492.8-500 on seeds 2-11. Its final policy can
#   swing (so did the preset's before, with a final 500 in 25 runs but 192.2 in a CI run), so its final bar is far
#   above the untrained one (about 9);
# - one-step Q, its preset with rewards scaled and lr 2e-3
#   (benchmarks/results/learning_tests_normalize_reward_one_step_q/): a best of 499.4-500 in all 25 and a final of
#   363.8-500 on seed 1 (15 runs), 336.7-500 on seeds 2-11: its final policy can sag late (before, with lr 1e-3 and
#   real rewards: a best of 499.7-500 and a final of 455.2-500);
# - Sarsa, its preset with rewards scaled (benchmarks/results/learning_tests_normalize_reward_sarsa/): a best of
#   496.2-500 and a final of 460-500 on seed 1 (15 runs); on seeds 2-11 a best of 472.6-500 (seed 5 below 475) and a
#   final of 424.2-500. Its policy hovers at 430-500 rather than holding 500 (before it scaled rewards: a best of
#   498.8-500 and a final of 498.1-500 in 25 runs), so its test asks for the preset's goal, an evaluation of 400.
# n-step Q and one-step Q ask for an evaluation of 475; the one-step methods' final bar is 300.
COMMON = ["--env-id", "CartPole-v1", "--num-workers", "2", "--seed", LEARNING_SEED, "--eval-interval", "50000"]

# Learning runs: the full suite only, and one at a time (README's command runs the suite on two pytest-xdist
# workers; every learning test's pass rate was measured alone and beside one busy process, not beside another
# learning run).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("learning")]


@pytest.mark.parametrize("module, best, final", [
    (nq, 475, 100),
    (oq, 475, 300),
    (sarsa, 400, 300),
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
