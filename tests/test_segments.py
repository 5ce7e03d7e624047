"""What goes into the math, in all four scripts: play() (one segment of the pseudocode's inner loop) on a scripted
episode that terminates, is truncated by a time limit or is cut at t_max, and each segment loss against the
formula worked through by hand (V aligned with its return, both coefficients, the bootstrap from theta^-)."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import a3c
import async_nstep_q as nq
import async_one_step_q as oq
import async_sarsa as sarsa
from tests.custom_envs import Countdown  # as the scripts import it: registered once

OBSERVATIONS, ACTIONS = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32), [0, 3, 1]  # s_0 .. s_3, a_0 .. a_2
REWARDS = [1.0, 2.0, 3.0]
SPACE, FOUR = Countdown.observation_space, Countdown.action_space


class Outbox:
    """Stands in for a worker's pipe: keeps what play() sends."""

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)


def episode(ends_at, terminal):
    """Countdown ending at step `ends_at`: terminated, or truncated by a time limit; with the episode statistics."""
    env = Countdown(terminal_at=ends_at) if terminal else gym.wrappers.TimeLimit(Countdown(), ends_at)
    return gym.wrappers.RecordEpisodeStatistics(env)


def play(script, env, obs, t_max):
    """One segment of `script`'s play(), acting at random; returns (segment, the next segment's first obs)."""
    outbox, rng = Outbox(), np.random.default_rng(0)
    if script is a3c:
        model = a3c.ActorCritic(SPACE, FOUR, a3c.Args())
        segment, obs, _ = a3c.play(env, model, obs, None, t_max, outbox)
    elif script is sarsa:
        segment, obs, _ = sarsa.play(env, sarsa.QNetwork(SPACE, 4, sarsa.Args()), obs, None, 1.0, rng, t_max, outbox)
    else:
        segment, obs = script.play(env, script.QNetwork(SPACE, 4, script.Args()), obs, 1.0, rng, t_max, outbox)
    return segment, obs, outbox.sent


@pytest.mark.parametrize("script", [a3c, nq, oq, sarsa], ids=lambda m: m.SCRIPT)
@pytest.mark.parametrize("terminal", [True, False], ids=["terminated", "truncated"])
def test_play_ends_a_segment_at_the_episodes_end_and_marks_only_a_termination_terminal(script, terminal):
    env = episode(3, terminal)
    segment, next_obs, sent = play(script, env, env.reset(seed=0)[0], t_max=5)
    assert segment.rewards == REWARDS and segment.observations.tolist() == OBSERVATIONS.tolist()  # s_3 kept
    assert segment.terminated is terminal  # a time limit is no terminal state: its last state is bootstrapped
    assert next_obs.tolist() == [0.0]  # the next segment starts a new episode
    assert sent == [("episode", (6.0, 3))]


@pytest.mark.parametrize("script", [a3c, nq, oq, sarsa], ids=lambda m: m.SCRIPT)
def test_play_cuts_a_segment_at_t_max_and_the_next_goes_on_from_where_it_stopped(script):
    env = episode(100, terminal=True)
    segment, next_obs, sent = play(script, env, env.reset(seed=0)[0], t_max=2)
    assert segment.rewards == [1.0, 2.0] and not segment.terminated and next_obs.tolist() == [2.0] and sent == []


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_a3c_segment_loss_is_the_actor_critic_loss_with_each_v_beside_its_return(lam):
    args = a3c.Args(gamma=0.5, value_coef=0.25, entropy_coef=0.1, gae_lambda=lam)
    torch.manual_seed(0)
    model = a3c.ActorCritic(SPACE, FOUR, args)
    for terminated in (False, True):
        segment = a3c.Segment(OBSERVATIONS, None, torch.tensor(ACTIONS), REWARDS, terminated)
        loss, stats = a3c.segment_loss(model, segment, args)
        with torch.no_grad():
            logits, values, _ = model(torch.from_numpy(OBSERVATIONS))
        V = values.tolist()[:3] + [0.0 if terminated else values[3].item()]  # V(s_3) = 0 at a terminal state
        R, returns = V[3], []  # Algorithm S3: R <- r_i + gamma R, from V(s_3) or 0
        for i in reversed(range(3)):  # lambda < 1 mixes in V(s_i+1): R - V(s_i) is then the GAE advantage
            R = REWARDS[i] + 0.5 * ((1 - lam) * V[i + 1] + lam * R)
            returns.insert(0, R)
        advantages = torch.tensor(returns) - values[:3]  # R_i - V(s_i): V of the state the return starts at
        log_probs = F.log_softmax(logits[:3], -1)
        taken = log_probs[torch.arange(3), torch.tensor(ACTIONS)]
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        expected = -(taken * advantages).sum() + 0.25 * advantages.pow(2).sum() - 0.1 * entropy.sum()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert stats["entropy"] == pytest.approx(entropy.mean().item(), rel=1e-5)
        assert stats["value_loss"] == pytest.approx(advantages.pow(2).sum().item(), rel=1e-5)


def q_networks(script):
    """theta and a theta^- that differ (so a bootstrap from the wrong one shows), the same for a run of the test."""
    torch.manual_seed(0)
    return script.QNetwork(SPACE, 4, script.Args()), script.QNetwork(SPACE, 4, script.Args())


def value_based_expected(script, model, target_net, terminated, next_actions):
    """sum_i (y_i - Q(s_i, a_i; theta))^2 with y_i worked out for the script's target, gamma 0.5."""
    with torch.no_grad():
        q_taken = model(torch.from_numpy(OBSERVATIONS[:3]))[torch.arange(3), torch.tensor(ACTIONS)]
        next_q = target_net(torch.from_numpy(OBSERVATIONS[1:]))  # Q(s_{i+1}, .; theta^-)
    if script is nq:  # every state gets the longest n-step return, from max_a Q(s_3, a; theta^-)
        R, targets = 0.0 if terminated else next_q[2].max().item(), []
        for reward in reversed(REWARDS):
            R = reward + 0.5 * R
            targets.insert(0, R)
    else:
        bootstrap = next_q.max(1).values if script is oq else next_q[torch.arange(3), torch.tensor(next_actions)]
        targets = [reward + 0.5 * bootstrap[i].item() for i, reward in enumerate(REWARDS)]
        if terminated:
            targets[2] = REWARDS[2]
    return (torch.tensor(targets) - q_taken).pow(2).sum().item()


@pytest.mark.parametrize("script", [nq, oq, sarsa], ids=lambda m: m.SCRIPT)
@pytest.mark.parametrize("terminated", [False, True], ids=["cut", "terminated"])
def test_value_based_segment_loss_bootstraps_from_the_target_network(script, terminated):
    model, target_net = q_networks(script)
    next_actions = [3, 1, 2]  # Sarsa's a_{i+1}: the action taken next
    fields = (OBSERVATIONS, ACTIONS, REWARDS, terminated) + ((next_actions,) if script is sarsa else ())
    loss, _ = script.segment_loss(model, target_net, script.Segment(*fields), 0.5)
    assert loss.item() == pytest.approx(value_based_expected(script, model, target_net, terminated, next_actions),
                                        rel=1e-5)
    if not (terminated and script is nq):  # (n-step Q's terminated segment bootstraps from nothing)
        # the check can fail: bootstrapping from theta itself gives another loss
        assert loss.item() != pytest.approx(value_based_expected(script, model, model, terminated, next_actions),
                                            rel=1e-3)


class Recorder(gym.Wrapper):
    """The actions an env was given."""

    def __init__(self, env):
        super().__init__(env)
        self.actions = []

    def step(self, action):
        self.actions.append(action)
        return self.env.step(action)


def test_sarsa_carries_a_prime_into_the_next_segment_and_takes_it():
    env = Recorder(episode(1000, terminal=True))
    model, rng, outbox = sarsa.QNetwork(SPACE, 4, sarsa.Args()), np.random.default_rng(0), Outbox()
    obs, action, carried, taken = env.reset(seed=0)[0], None, [], []
    for _ in range(6):
        segment, obs, next_action = sarsa.play(env, model, obs, action, 1.0, rng, 3, outbox)
        assert segment.next_actions == segment.actions[1:] + [next_action]  # a' of each transition: the next a
        if action is not None:
            carried.append((segment.actions[0], action))
        taken += segment.actions
        action = next_action
    assert len(carried) == 5 and all(first == chosen for first, chosen in carried)  # each starts with the last a'
    assert env.actions == taken  # and the env got the actions the segments hold, a' included: none drawn twice
