"""a3c.py learns: 2 workers, a fixed seed and step budget, score read from eval.json.

Hogwild makes runs differ even with one seed. Each bar rests on the test's own command run many times
(benchmarks/learning_tests.py; benchmarks/results/learning_tests/, docs/results.md): seed 1, as here, 10 times alone on
the 2 cores and 5 times beside a busy process (a noisy CI machine), and seeds 2-11 once each (LEARNING_TEST_SEED)."""

import json
import os
import subprocess
import sys

import pytest

import a3c
from conftest import LEARNING_SEED, ROOT, evaluation_means

# Learning runs: the full suite only, and one at a time (README's command runs the suite on two pytest-xdist
# workers; every learning test's pass rate was measured alone and beside one busy process, not beside another
# learning run).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("learning")]


def train(run_dir, env_id, total_timesteps, *flags):
    """Run a3c.py as a user does and return its final evaluation."""
    flags = ("--eval-episodes", "10", "--run-dir", str(run_dir), *flags)  # a repeated flag: the last one wins
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "a3c.py"), "--env-id", env_id, "--num-workers", "2",
         "--total-timesteps", str(total_timesteps), "--seed", LEARNING_SEED, "--eval-interval", "1000000000",
         *flags],
        capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.load(open(run_dir / "eval.json"))
    assert evaluation["global_step"] >= total_timesteps
    return evaluation


def test_a3c_solves_cartpole_with_two_workers_and_its_preset(tmp_path):
    # The quick start, `a3c.py --env-id CartPole-v1` (the vector preset: 100k steps, lr 7e-3, no entropy bonus,
    # --normalize-reward), evaluated every 10k steps. Measured (benchmarks/results/learning_tests_normalize_reward/):
    # 25 of 25 runs had an evaluation of 500; the final one was 500 in 19, and 399.3-492.4 in five and 213.8 in one
    # (seed 1 under load): a policy that solved CartPole can sag or collapse late, as it did without
    # --normalize-reward too (178.5 once in 25 runs, 164.4 in a CI run). So some evaluation must reach 475, and the
    # final policy must stay far above a random one (22).
    evaluation = train(tmp_path, "CartPole-v1", a3c.PRESETS["vector"]["total_timesteps"], "--eval-interval", "10000")
    assert evaluation["mean"] >= 100, evaluation
    evaluations = evaluation_means(tmp_path)
    assert max(evaluations) >= 475, evaluations


SOFTPLUS_VARIANCE = ("--no-state-independent-std", "--entropy-coef", "3e-4", "--learning-rate", "1e-3")


@pytest.mark.parametrize("flags", [(), SOFTPLUS_VARIANCE], ids=["box-preset", "softplus-variance"])
def test_gaussian_a3c_learns_to_follow_a_target(tmp_path, flags):
    # tests/custom_envs.py: reward -(a - x)^2 for an observed x ~ U(-1, 1). The untrained mean action scores
    # about -1/3 (-0.359 with a learning rate of 1e-7). Measured at 10k steps, 25 runs of each (final evaluation):
    # - the box preset alone (a state-independent std, no entropy bonus, lr 3e-4): -0.0006 to -0.0015;
    # - the paper's softplus variance (entropy 3e-4, lr 1e-3): -0.00003 to -0.0003
    #   (benchmarks/results/learning_tests_softplus_lr1e-3/). With lr 3e-3 it failed CI once at -4.32: its mean ran
    #   past the action bound of 2, where every sample is clipped alike and no gradient brings it back (greedy
    #   play then scores -E[(2 - x)^2] = -4.33); 25 runs had a -0.0152 too (benchmarks/results/ci_failures/).
    # The bar, a tenth of the untrained score (twice lr 3e-3's -0.0152), fails a mean head that does not learn a = x.
    # InvertedPendulum (docs/presets.md) would take minutes.
    evaluation = train(tmp_path, "tests.custom_envs:FollowTarget-v0", 10_000, "--eval-episodes", "100", *flags)
    assert evaluation["mean"] >= -0.03, evaluation["mean"]


def test_lstm_remembers_a_cue_where_the_feed_forward_agent_cannot(tmp_path):
    # tests/custom_envs.py: the decision step looks the same whatever the cue three steps
    # earlier, so only memory beats an expected return of 0 (100 greedy episodes: +-0.1).
    # Measured at 30k steps, 25 runs of each: the LSTM agent ended at 1.0 in all; the feed-forward one between -0.18
    # and 0.16 (-0.04 in all 15 of seed 1: it fixes the initial weights). At 15k, seed 1's LSTM ended at -0.04 twice.
    flags = ("--learning-rate", "3e-3", "--eval-episodes", "100", "--eval-greedy")
    lstm = train(tmp_path / "lstm", "tests.custom_envs:CueMemory-v0", 30_000, "--lstm", *flags)
    feed_forward = train(tmp_path / "ff", "tests.custom_envs:CueMemory-v0", 30_000, *flags)
    assert lstm["mean"] >= 0.9, lstm["mean"]
    assert feed_forward["mean"] <= 0.5, feed_forward["mean"]
