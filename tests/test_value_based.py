"""The value-based scripts: their targets with hand-worked numbers, per-worker exploration,
the shared target network under concurrent workers, and each script as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import gymnasium as gym

import async_nstep_q as nq
import async_one_step_q as oq
import async_sarsa as sarsa
from common import make_env
from conftest import ROOT, VALUE_BASED, parsed
from test_segments import Recorder

CTX = mp.get_context("spawn")


def test_n_step_targets_bootstrap_from_the_max_of_the_target_network():
    # R = max(1, 8, 3) = 8; R = 3 + 0.5*8 = 7; R = 2 + 3.5 = 5.5; R = 1 + 2.75 = 3.75
    targets = nq.n_step_targets([1.0, 2.0, 3.0], terminated=False, next_q_target=np.array([1.0, 8.0, 3.0]), gamma=0.5)
    np.testing.assert_allclose(targets, [3.75, 5.5, 7.0])


def test_n_step_targets_terminal_ignores_the_target_network():
    targets = nq.n_step_targets([1.0, 2.0, 3.0], terminated=True, next_q_target=np.array([100.0, 8.0]), gamma=0.5)
    np.testing.assert_allclose(targets, [2.75, 3.5, 3.0])


def test_n_step_targets_truncation_bootstraps():
    # a time limit is passed as terminated=False: the target network's value still counts
    targets = nq.n_step_targets([0.0], terminated=False, next_q_target=np.array([-2.0, 5.0]), gamma=0.9)
    np.testing.assert_allclose(targets, [4.5])


def test_one_step_q_target_uses_the_max_over_next_actions():
    next_q = np.array([[1.0, 4.0], [2.0, -1.0], [0.5, 0.0]])
    targets = oq.one_step_targets([1.0, 0.0, 2.0], terminated=False, next_q_target=next_q, gamma=0.5)
    np.testing.assert_allclose(targets, [1.0 + 0.5 * 4.0, 0.5 * 2.0, 2.0 + 0.5 * 0.5])


def test_one_step_q_terminal_transition_has_no_bootstrap():
    next_q = np.array([[1.0, 4.0], [9.0, 9.0]])
    targets = oq.one_step_targets([1.0, 3.0], terminated=True, next_q_target=next_q, gamma=0.5)
    np.testing.assert_allclose(targets, [3.0, 3.0])  # the first still bootstraps: 1 + 0.5 * 4


def test_sarsa_target_uses_the_action_taken_next_not_the_max():
    next_q = np.array([[1.0, 4.0], [2.0, -1.0], [0.5, 0.0]])
    targets = sarsa.sarsa_targets([1.0, 0.0, 2.0], terminated=False, next_q_target=next_q, next_actions=[0, 1, 1],
                                  gamma=0.5)
    np.testing.assert_allclose(targets, [1.0 + 0.5 * 1.0, 0.5 * -1.0, 2.0 + 0.5 * 0.0])
    terminal = sarsa.sarsa_targets([1.0, 3.0], terminated=True, next_q_target=next_q[:2], next_actions=[1, 0],
                                   gamma=0.5)
    np.testing.assert_allclose(terminal, [1.0 + 0.5 * 4.0, 3.0])


@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_the_workers_final_epsilons_span_the_papers_distribution(script):
    def finals(n):
        return [script.epsilon_final_for(rank, n) for rank in range(n)]
    assert finals(1) == [0.1]
    assert finals(2) == [0.01, 0.5]  # never both at 0.5 (or both at 0.01)
    assert finals(3) == [0.01, 0.1, 0.5]
    assert finals(16) == [0.01] * 5 + [0.1] * 6 + [0.5] * 5
    many = np.array(finals(1000))  # the share of each value tends to the paper's probability
    for value, probability in zip((0.1, 0.01, 0.5), (0.4, 0.3, 0.3), strict=True):
        assert np.mean(many == value) == pytest.approx(probability, abs=1e-3)
    chosen = [script.epsilon_final_for(rank, 5, (0.01, 0.1)) for rank in range(5)]  # --epsilon-finals 0.01 0.1
    assert chosen == [0.01, 0.1, 0.01, 0.1, 0.01]


@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_act_is_greedy_with_probability_one_minus_epsilon_else_uniform(script):
    model = script.QNetwork(gym.spaces.Box(-1.0, 1.0, (1,), np.float32), 4, script.Args())
    with torch.no_grad():
        model.q.bias.copy_(torch.tensor([0.0, 0.0, 9.0, 0.0]))  # action 2 is the greedy one, whatever the state
        model.q.weight.zero_()
    obs, rng = np.zeros(1, np.float32), np.random.default_rng(0)
    assert {script.act(model, obs, 0.0, rng) for _ in range(50)} == {2}
    for epsilon, greedy_share in ((1.0, 0.25), (0.4, 0.6 + 0.4 / 4)):
        counts = np.bincount([script.act(model, obs, epsilon, rng) for _ in range(8000)], minlength=4) / 8000
        others = (1 - greedy_share) / 3
        np.testing.assert_allclose(counts, [others, others, greedy_share, others], atol=0.02)


@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_epsilon_anneals_linearly_from_one_then_stays(script):
    assert script.epsilon_at(0, 0.1, 1000) == 1.0
    assert script.epsilon_at(500, 0.1, 1000) == pytest.approx(0.55)
    assert script.epsilon_at(1000, 0.1, 1000) == pytest.approx(0.1)
    assert script.epsilon_at(5000, 0.01, 1000) == pytest.approx(0.01)


@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_a_refresh_cut_short_in_its_copy_is_left_to_the_next_try(script):
    # A copy that raises stands for a worker killed while copying: the boundary stays due for its successor.
    target_step = CTX.RawValue("q", 0)
    with pytest.raises(RuntimeError):
        script.refresh_target(torch.zeros(3), torch.ones(4), target_step, 1005, 1000)
    assert target_step.value == 0
    target_params = torch.zeros(3)
    assert script.refresh_target(target_params, torch.ones(3), target_step, 1010, 1000)
    assert target_step.value == 1000 and torch.equal(target_params, torch.ones(3))


@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_the_target_network_refreshes_at_the_next_boundary_of_a_new_interval(script):
    # 3,000 steps with I_target 100, resumed with 1,000: refreshes are due at 4,000, 5,000, ...
    shared_params, target_params, target_step = torch.ones(3), torch.zeros(3), CTX.RawValue("q", 3000)
    assert not script.refresh_target(target_params, shared_params, target_step, 3999, 1000)
    assert script.refresh_target(target_params, shared_params, target_step, 4003, 1000)
    assert target_step.value == 4000 and torch.equal(target_params, shared_params)
    assert not script.refresh_target(target_params, shared_params, target_step, 4999, 1000)
    # and with a shorter one (1,000 then 300): the next boundary of 300 after step 4,000
    assert not script.refresh_target(target_params, shared_params, target_step, 4150, 300)
    assert script.refresh_target(target_params, shared_params, target_step, 4205, 300) and target_step.value == 4200


def draws_of_default_rng(seed, count):
    """The actions of an all-random epsilon-greedy policy (one uniform draw, then the action) that draws from
    np.random.default_rng(seed), the stream env.reset(seed=seed) gives the env: what exploration must not be."""
    rng = np.random.default_rng(seed)
    return [(rng.random(), int(rng.integers(2)))[1] for _ in range(count)]


@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_the_evaluation_explores_with_a_stream_apart_from_the_envs(script):
    env = Recorder(make_env("CartPole-v1", training=False))
    model = script.QNetwork(env.observation_space, 2, script.Args())
    script.evaluate(model, env, num_episodes=3, epsilon=1.0, seed=12345)
    assert len(env.actions) >= 30
    assert env.actions != draws_of_default_rng(12345, len(env.actions))  # equal, action for action, before the fix


@pytest.mark.slow
@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_a_worker_explores_with_a_stream_apart_from_its_envs(script, tmp_path):
    record = tmp_path / "record.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, script.SCRIPT), "--env-id",
                             "tests.custom_envs:RecordedCartPole-v1", "--num-workers", "1", "--total-timesteps", "200",
                             "--eval-episodes", "1", "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=180, cwd=ROOT, env={**os.environ,
                                                                                       "RECORD_TO": str(record)})
    assert result.returncode == 0, result.stderr[-2000:]
    seen, seed = json.load(open(record)), script.derive_seed(1, 0, 0)  # the first worker's seed, no restart
    # its env was reset with that seed: CartPole's first state is the first draws of default_rng(seed)
    np.testing.assert_allclose(seen["first_observation"], np.random.default_rng(seed).uniform(-0.05, 0.05, 4))
    first_episode = seen["actions"][:seen["first_episode_length"]]  # (Sarsa then drops the a' it drew at the end)
    assert first_episode != draws_of_default_rng(seed, len(first_episode))  # epsilon is 1 at the start


@pytest.mark.slow
@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_a_run_resumed_with_a_longer_target_interval_still_refreshes_its_target(script, tmp_path):
    def run(*flags):
        result = subprocess.run([sys.executable, os.path.join(ROOT, script.SCRIPT), *flags], capture_output=True,
                                text=True, timeout=180, cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        return torch.load(tmp_path / "checkpoint.pt", weights_only=True)

    before = run("--env-id", "CartPole-v1", "--num-workers", "1", "--total-timesteps", "3000", "--eval-episodes", "1",
                 "--target-update-interval", "100", "--run-dir", str(tmp_path))
    after = run("--resume", str(tmp_path / "checkpoint.pt"), "--total-timesteps", "8000",
                "--target-update-interval", "1000")
    assert before["target_step"] == before["global_step"] // 100 * 100 >= 3000
    assert after["target_step"] == 8000 and not torch.equal(after["target_params"], before["target_params"])


@pytest.mark.parametrize("script", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_each_familys_preset_is_the_default_and_a_given_flag_wins(script, monkeypatch):
    preset = script.PRESETS["vector"]
    args, sources = parsed(script, monkeypatch, "--env-id", "CartPole-v1")
    assert {name: getattr(args, name) for name in preset} == preset
    assert args.epsilon_anneal_steps < script.Args.epsilon_anneal_steps  # the preset changes the schedule
    assert {name for name, source in sources.items() if source == "vector preset"} == set(preset)
    args, sources = parsed(script, monkeypatch, "--env-id", "CartPole-v1", "--target-update-interval", "77")
    assert args.target_update_interval == 77 and sources["target_update_interval"] == "command line"
    assert args.learning_rate == preset["learning_rate"] and sources["learning_rate"] == "vector preset"
    atari = script.PRESETS["atari"]  # standardised frames, a short epsilon schedule, final epsilons (docs/atari.md)
    args, sources = parsed(script, monkeypatch, "--env-id", "PongNoFrameskip-v4")
    assert args == script.Args(num_workers=args.num_workers, **atari)
    assert args.standardize_frames and args.epsilon_anneal_steps < script.Args.epsilon_anneal_steps
    finals = {script.epsilon_final_for(rank, 2, args.epsilon_finals) for rank in range(2)}
    assert finals == {0.01, 0.1}  # not the paper's distribution, which gives 2 workers 0.01 and 0.5 (docs/atari.md)
    assert {name for name, source in sources.items() if source == "atari preset"} == set(atari)
    args, sources = parsed(script, monkeypatch, "--env-id", "PongNoFrameskip-v4", "--no-standardize-frames")
    assert not args.standardize_frames and sources["standardize_frames"] == "command line"


@pytest.mark.slow
@pytest.mark.parametrize("module", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_pong_run_writes_every_file_and_eval_only_works(tmp_path, module):  # resume: test_reliability.py
    script = os.path.join(ROOT, module.SCRIPT)
    run = subprocess.run([sys.executable, script, "--env-id", "PongNoFrameskip-v4", "--num-workers", "2",
                          "--total-timesteps", "600", "--target-update-interval", "200", "--eval-episodes", "1",
                          "--eval-max-steps", "150", "--run-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    files = set(os.listdir(tmp_path))
    assert {"config.json", "progress.csv", "checkpoint.pt", "model.pt", "eval.json"} <= files
    assert any(name.startswith("events.out.tfevents") for name in files)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # worker 0 alone refreshes theta^-, after its own segments: the other worker may take the run past a boundary
    # after worker 0's last check, which leaves that refresh to a resumed run (the one-worker test above is exact)
    assert checkpoint["target_step"] % 200 == 0 and checkpoint["target_step"] <= checkpoint["global_step"]
    assert checkpoint["global_step"] >= 600
    evaluation = json.load(open(tmp_path / "eval.json"))
    assert evaluation["env_id"] == "PongNoFrameskip-v4" and evaluation["global_step"] >= 600
    eval_only = subprocess.run([sys.executable, script, "--eval-only", "--checkpoint", str(tmp_path / "model.pt"),
                                "--eval-episodes", "1", "--eval-max-steps", "150", "--run-dir", str(tmp_path / "e")],
                               capture_output=True, text=True, timeout=120)
    assert eval_only.returncode == 0, eval_only.stderr[-3000:]
    replayed = json.load(open(tmp_path / "e" / "eval.json"))
    # the saved weights, the run's evaluation seed and episode cap: the very episode of the run's final evaluation
    assert replayed["global_step"] == evaluation["global_step"] and replayed["returns"] == evaluation["returns"]
