"""One protocol for seeds and frames in all four scripts: --seed fixes the initial weights and, with
one worker, the whole run; seeds of neighbouring runs never overlap; progress.csv counts frames."""

import csv
import os
import subprocess
import sys

import pytest
import torch

import a3c
from conftest import MODULES, ROOT



@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_neighbouring_seeds_share_no_worker_or_evaluation_seed(module):
    # seed + rank gave run 1's worker 1 the seed of run 2's worker 0; restarts and the evaluation
    # draw from the same pool, so none of them may collide either.
    seeds = [module.derive_seed(seed, rank, restarts) for seed in range(1, 11) for rank in range(16)
             for restarts in range(3)]
    seeds += [module.derive_seed(seed) for seed in range(1, 11)]
    assert len(set(seeds)) == len(seeds) == 10 * 16 * 3 + 10
    assert module.derive_seed(1, 1, 0) == module.derive_seed(1, 1, 0)  # a function of its inputs only


def train_one_worker(script, run_dir, seed):
    flags = ["--env-id", "CartPole-v1", "--num-workers", "1", "--total-timesteps", "1500", "--seed", str(seed),
             "--eval-interval", "1000000000", "--eval-episodes", "1", "--run-dir", str(run_dir)]
    if script != "a3c.py":
        flags += ["--target-update-interval", "500"]
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), *flags], capture_output=True, text=True,
                            timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_one_worker_runs_with_one_seed_end_with_bit_identical_weights(module, tmp_path):
    first, again, other = (train_one_worker(module.SCRIPT, tmp_path / name, seed)
                           for name, seed in (("a", 1), ("b", 1), ("c", 2)))
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)


def new_progress(module, run_dir, args, global_step):
    """The script's Progress as train() makes it, every value from the defaults, at 0 seconds."""
    return module.Progress(str(run_dir), args, dict.fromkeys(vars(args), "default"), global_step, 0.0)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_progress_counts_frames_and_a_resumed_file_keeps_its_header(module, tmp_path):
    pong = module.Args(env_id="PongNoFrameskip-v4", total_timesteps=100)  # an Atari id: 4 frames per agent step
    progress = new_progress(module, tmp_path, pong, 0)
    progress.row(global_step=10, seconds=1.0)
    progress.close()
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["frames"] == "40" and rows[0]["global_step"] == "10"
    # a run begun before a column existed appends under its own header, never a shifted row
    with open(tmp_path / "progress.csv", "w") as f:
        f.write("global_step,seconds\n5,0.5\n")
    progress = new_progress(module, tmp_path, pong, 5)
    progress.row(global_step=20, seconds=2.0)
    progress.close()
    with open(tmp_path / "progress.csv") as f:
        assert f.read().splitlines() == ["global_step,seconds", "5,0.5", "20,2"]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_a_periodic_evaluation_is_logged_with_the_step_of_the_weights_it_evaluated(module, tmp_path):
    # the evaluator copied the weights at step 300; training went on to 900 while it played
    args = module.Args(env_id="CartPole-v1", total_timesteps=1000, log_interval=0.0)
    progress = new_progress(module, tmp_path, args, 0)
    progress.log(step=100, seconds=0.5)  # the workers' first steps: they start the clock of sps, no row yet
    progress.record(2, "eval", (300, [10.0, 30.0]))  # rank 2: the evaluator of a 2-worker run
    progress.log(step=900, seconds=1.0)
    progress.log(step=950, seconds=1.5)  # no evaluation since: empty cells
    progress.close()
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert (rows[0]["global_step"], rows[0]["eval_global_step"], rows[0]["eval_return_mean"]) == ("900", "300", "20")
    assert rows[1]["global_step"] == "950" and rows[1]["eval_global_step"] == rows[1]["eval_return_mean"] == ""


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_center_init_sets_the_biases_of_a_new_atari_model_only(module):
    def trunk_biases(model):
        return torch.cat([layer.bias for layer in model.trunk if hasattr(layer, "bias")])

    def model(args, ckpt=None):
        torch.manual_seed(0)
        built = module.build_model(args, ckpt)
        return built.body if module is a3c else built

    plain = model(module.Args(env_id="PongNoFrameskip-v4"))
    centred = model(module.Args(env_id="PongNoFrameskip-v4", center_init=True))
    assert torch.all(trunk_biases(plain) == 0) and (trunk_biases(centred) != 0).float().mean() > 0.5
    torch.testing.assert_close(trunk_biases(model(module.Args(env_id="PongNoFrameskip-v4", center_init=True))),
                               trunk_biases(centred), rtol=0, atol=0)  # seeded: the same frames, the same biases
    checkpoint = {"model": module.build_model(module.Args(env_id="PongNoFrameskip-v4")).state_dict()}
    resumed = model(module.Args(env_id="PongNoFrameskip-v4", center_init=True), checkpoint)
    assert torch.all(trunk_biases(resumed) == 0)  # a checkpoint's weights are never re-initialised
