"""a3c.py's Gaussian policy, LSTM core and observation statistics: the math, the state rules, the round trip."""

import csv
import dataclasses
import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import a3c
from common import ObservationNorm, make_env
from tests.custom_envs import Countdown
from test_a3c_script import RUN_FILES, a3c as run_a3c


def make_model(env_id, **flags):
    args = dataclasses.replace(a3c.Args(), env_id=env_id, **flags)
    env = make_env(env_id, training=False)
    torch.manual_seed(0)
    return a3c.ActorCritic(env.observation_space, env.action_space, args), env


def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    mean, variance = torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([[0.25, 2.0], [1e-3, 9.0]])
    actions = torch.tensor([[0.0, 1.0], [2.1, -4.0]])
    log_prob, entropy = a3c.log_prob_and_entropy((mean, variance), actions, continuous=True)
    reference = torch.distributions.Normal(mean, variance.sqrt())
    torch.testing.assert_close(log_prob, reference.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, reference.entropy().sum(-1))
    # by hand for one dimension: H = 1/2 (log(2 pi sigma^2) + 1)
    by_hand = 0.5 * (np.log(2 * np.pi * 0.25) + 1) + 0.5 * (np.log(2 * np.pi * 2.0) + 1)
    assert entropy[0].item() == pytest.approx(by_hand)


def test_softmax_log_prob_and_entropy_match_torch_distributions():
    logits, actions = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, -3.0]]), torch.tensor([2, 0])
    log_prob, entropy = a3c.log_prob_and_entropy(logits, actions, continuous=False)
    reference = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(log_prob, reference.log_prob(actions))
    torch.testing.assert_close(entropy, reference.entropy())


def test_gaussian_policy_and_value_share_no_parameters():
    model, env = make_model("InvertedPendulum-v5")
    assert model.continuous
    policy_loss = model(torch.ones(1, 4))[0][0].sum()  # the mean only
    policy_loss.backward()
    assert all(p.grad is None for p in model.value_body.parameters()) and model.value.weight.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.body.parameters())
    assert model.body.trunk[0].out_features == 64 and model.value_body.trunk[0].out_features == 64


def test_state_independent_std_is_one_learned_sigma_for_every_state():
    model, env = make_model("HalfCheetah-v5", state_independent_std=True)
    (mean, variance), _, _ = model(torch.randn(2, 17))
    assert not torch.allclose(mean[0], mean[1])  # the mean depends on the state, the variance does not
    torch.testing.assert_close(variance, torch.ones(2, 6))  # log sigma starts at 0
    with torch.no_grad():
        model.log_std.copy_(torch.log(torch.tensor([0.5, 1, 1, 1, 1, 2.0])))
    (mean, variance), _, _ = model(torch.randn(3, 17))
    torch.testing.assert_close(variance[2], torch.tensor([0.25, 1, 1, 1, 1, 4.0]))
    # the entropy term reaches log sigma: dH/d(log sigma_i) = 1 per state and dimension
    _, entropy = a3c.log_prob_and_entropy((mean, variance), torch.zeros(3, 6), continuous=True)
    entropy.sum().backward()
    torch.testing.assert_close(model.log_std.grad, torch.full((6,), 3.0))
    assert not hasattr(model, "variance")
    model, _ = make_model("HalfCheetah-v5", state_independent_std=True, log_std_init=-0.5)  # --log-std-init
    torch.testing.assert_close(model(torch.randn(2, 17))[0][1], torch.full((2, 6), float(np.exp(-1.0))))
    # a checkpoint of the other head does not load silently
    other, _ = make_model("HalfCheetah-v5")
    args = dataclasses.replace(a3c.Args(), env_id="HalfCheetah-v5", state_independent_std=True)
    with pytest.raises(a3c.UsageError, match="state-independent-std"):
        a3c.build_model(args, {"model": other.state_dict()})


def test_gaussian_actions_are_clipped_only_on_the_way_to_the_environment():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action = torch.tensor([3.0, -0.5])
    np.testing.assert_allclose(a3c.env_action(action, space), [1.0, -0.5])
    assert action.tolist() == [3.0, -0.5]  # the sample the loss sees is untouched


@pytest.mark.parametrize("env_id, cells",
                         [("CartPole-v1", 128), ("InvertedPendulum-v5", 128), ("PongNoFrameskip-v4", 256)])
def test_lstm_sizes_follow_the_paper(env_id, cells):
    model, _ = make_model(env_id, lstm=True)
    assert model.body.lstm.hidden_size == cells


def test_lstm_state_carried_step_by_step_equals_one_pass_over_the_segment():
    model, env = make_model("CartPole-v1", lstm=True)
    observations = torch.randn(6, 4)
    state, step_logits = None, []
    with torch.no_grad():  # acting: one step at a time, carrying the state
        for obs in observations:
            logits, _, state = model(obs.unsqueeze(0), state)
            step_logits.append(logits)
    segment_logits, _, segment_state = model(observations, None)  # the learning pass from the segment start
    torch.testing.assert_close(segment_logits, torch.cat(step_logits))
    torch.testing.assert_close(segment_state, state)
    # the state matters: the same observation after different histories gives different outputs
    assert not torch.allclose(model(observations[:1], state)[0], model(observations[:1], None)[0])


def test_lstm_state_carried_into_the_next_segment_carries_no_graph():
    model, env = make_model("CartPole-v1", lstm=True)
    with torch.no_grad():  # how the worker acts: the carried state is detached at the segment boundary
        _, _, state = model(torch.randn(5, 4), None)
    assert not state[0].requires_grad and not state[1].requires_grad
    _, values, _ = model(torch.randn(5, 4), state)
    values.sum().backward()  # backpropagation stops at the boundary instead of raising or leaking


def record_states(model):
    """The list that, from now on, gets the LSTM state of each call of model (None: zeros)."""
    states_seen, forward = [], model.forward

    def recording_forward(obs, state=None):
        states_seen.append(state)
        return forward(obs, state)

    model.forward = recording_forward
    return states_seen


def test_evaluation_resets_the_lstm_state_at_every_episode_start():
    model, env = make_model("CartPole-v1", lstm=True)
    states_seen = record_states(model)
    a3c.evaluate(model, env, num_episodes=3, greedy=False, seed=0)
    starts = [i for i, state in enumerate(states_seen) if state is None]
    assert len(starts) == 3 and starts[0] == 0  # a zero state at each of the three episode starts
    assert len(states_seen) > 3  # and the carried state everywhere else


class LivesLost(gym.Wrapper):
    """Countdown (tests.custom_envs) that reports a lost life at its steps `lost_at`, as the Atari wrapper does."""

    def __init__(self, env, lost_at):
        super().__init__(env)
        self.lost_at = lost_at

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, "life_lost": self.env.unwrapped.t in self.lost_at}


def test_evaluation_restarts_the_lstm_state_at_a_lost_life_as_training_does():
    env = LivesLost(Countdown(terminal_at=6), lost_at=(2, 4))
    model = a3c.ActorCritic(env.observation_space, env.action_space, a3c.Args(lstm=True))
    states_seen = record_states(model)
    a3c.evaluate(model, env, num_episodes=1, greedy=True, seed=0)
    # the states in which steps 1-6 were chosen: zeros at the start and after the lives lost at steps 2 and 4
    assert [state is None for state in states_seen] == [True, False, True, False, True, False]


def test_observation_norm_standardises_with_all_observations_seen():
    norm = ObservationNorm((2,))
    torch.testing.assert_close(norm(torch.tensor([[3.0, -2.0]])), torch.tensor([[3.0, -2.0]]))  # identity at first
    observations = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    norm.moments += ObservationNorm.moments_of(observations)
    # with the prior observation (mean 0, variance 1): count 4, mean [2.25, 7.5], E[x^2] [(1+1+9+25)/4, 300/4]
    mean = np.array([2.25, 7.5])
    std = np.sqrt(np.array([36 / 4, 301 / 4]) - mean**2)
    expected = np.clip((np.array([[4.0, 8.0]]) - mean) / std, -10, 10)
    torch.testing.assert_close(norm(torch.tensor([[4.0, 8.0]])), torch.tensor(expected, dtype=torch.float32))


def test_observation_statistics_travel_with_the_state_dict():
    model, env = make_model("InvertedPendulum-v5", normalize_obs=True)
    model.obs_norm.moments += ObservationNorm.moments_of(np.random.default_rng(0).normal(3.0, 2.0, (50, 4)))
    restored, _ = make_model("InvertedPendulum-v5", normalize_obs=True)
    restored.load_state_dict(model.state_dict())
    torch.testing.assert_close(restored.obs_norm.moments, model.obs_norm.moments)
    obs = torch.ones(1, 4)
    torch.testing.assert_close(restored(obs)[0][0], model(obs)[0][0])


# --- the script as a user runs it ------------------------------------------------------

@pytest.mark.slow
def test_mujoco_run_with_normalised_observations_round_trips_its_statistics(tmp_path):
    run_dir = tmp_path / "run"
    result = run_a3c("--env-id", "InvertedPendulum-v5", "--num-workers", "2", "--total-timesteps", "2000",
                 "--normalize-obs", "--eval-episodes", "3", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert RUN_FILES <= set(os.listdir(run_dir))
    config = json.load(open(run_dir / "config.json"))
    assert config["entropy_coef"] == a3c.PRESETS["box"]["entropy_coef"]
    assert config["sources"]["entropy_coef"] == "box preset"
    for name in ("model.pt", "checkpoint.pt"):
        saved = torch.load(run_dir / name, weights_only=True)
        count = saved["model"]["obs_norm.moments"][0, 0] - 1  # one per training observation, less the prior
        # Hogwild: two workers adding at the same instant may lose one segment's addition
        assert 0.9 * saved["global_step"] <= count <= saved["global_step"]
    # evaluating model.pt alone gives the very episodes of the final evaluation: same statistics, same seed
    replay = run_a3c("--eval-only", "--checkpoint", str(run_dir / "model.pt"), "--run-dir", str(tmp_path / "replay"))
    assert replay.returncode == 0, replay.stderr[-3000:]
    replayed = json.load(open(tmp_path / "replay" / "eval.json"))["returns"]
    assert replayed == json.load(open(run_dir / "eval.json"))["returns"]


@pytest.mark.slow
def test_pong_run_with_lstm(tmp_path):
    result = run_a3c("--env-id", "PongNoFrameskip-v4", "--lstm", "--num-workers", "2", "--total-timesteps", "400",
                 "--eval-episodes", "1", "--eval-max-steps", "100", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    model = torch.load(tmp_path / "model.pt", weights_only=True)["model"]
    assert model["body.lstm.weight_hh_l0"].shape == (4 * 256, 256)
    assert json.load(open(tmp_path / "eval.json"))["global_step"] >= 400


@pytest.mark.slow
def test_normalised_rewards_train_the_worker_but_the_logged_returns_stay_real(tmp_path):
    result = run_a3c("--env-id", "CartPole-v1", "--num-workers", "2", "--total-timesteps", "3000", "--normalize-reward",
                     "--log-interval", "0.2", "--eval-episodes", "2", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.load(open(tmp_path / "config.json"))["normalize_reward"] is True
    with open(tmp_path / "progress.csv") as f:
        returns = [float(row["episodic_return"]) for row in csv.DictReader(f) if row["episodic_return"]]
    # CartPole pays 1 per step: real returns are episode lengths, 8 or more; divided by the
    # return's running std (several units here) they would fall below 8
    assert returns and min(returns) >= 8
