"""common.py: the Atari preprocessing against a scripted emulator, make_env on the real ones, and the network
building blocks (flat parameters, the trunk's initialisation and frame standardisation)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from common import (AtariPreprocessing, NormalizeReward, ScaleUint8, StandardizeFrames, UsageError, center_biases,
                    flatten_parameters, make_env, make_trunk, random_play_frames)
from conftest import MODULES


class ScriptedALE:
    """Frame k shows the value k everywhere, and a 'sprite' of 255 in its top-left corner on odd k only."""

    def __init__(self, rewards, lives_lost_at=(), game_length=1000):
        self.frame, self.rewards, self.lives_lost_at, self.game_length = 0, rewards, lives_lost_at, game_length

    def getScreenDims(self):
        return 210, 160

    def getScreenGrayscale(self, out):
        out[:] = self.frame
        if self.frame % 2:
            out[:20, :20] = 255

    def act(self, action):
        self.frame += 1
        return self.rewards.get(self.frame, 0.0)

    def lives(self):
        return 3 - sum(self.frame >= f for f in self.lives_lost_at)

    def game_over(self, with_truncation=True):
        return self.frame >= self.game_length

    def game_truncated(self):
        return False

    def reset_game(self):
        self.frame = 0


class ScriptedAtari(gym.Env):
    observation_space = gym.spaces.Box(0, 255, (210, 160), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, ale):
        self.ale, self._action_set = ale, [0, 1, 2]

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT"]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.ale.reset_game()
        return np.zeros((210, 160), np.uint8), {}


def scripted(noop_max=1, **kwargs):
    ale = ScriptedALE(kwargs.pop("rewards", {}), kwargs.pop("lives_lost_at", ()), kwargs.pop("game_length", 1000))
    return AtariPreprocessing(ScriptedAtari(ale), noop_max=noop_max, **kwargs), ale


def test_reset_does_noop_frames_then_fire_and_fills_the_stack():
    env, ale = scripted()
    obs, _ = env.reset(seed=0)
    # one no-op FRAME (frame 1), then one FIRE step (frames 2-5): the newest frame is max(4, 5) = 5
    assert ale.frame == 5
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert np.all(obs[:, 40:, 40:] == 5)  # all four slots start as the first frame


def test_step_takes_max_of_last_two_frames_and_stacks_oldest_first():
    env, ale = scripted()
    env.reset(seed=0)
    obs1, *_ = env.step(2)  # frames 6..9: max(8, 9) = 9, sprite from odd frame 9
    obs2, *_ = env.step(2)  # frames 10..13
    assert ale.frame == 13
    assert obs2[-1, 60, 60] == 13 and obs2[-2, 60, 60] == 9 and obs2[0, 60, 60] == 5
    # the sprite exists only on odd frames: without the max it would vanish from every observation
    obs4, *_ = env.step(2)  # frames 14..17
    assert obs1[-1, 0, 0] == 255 and obs4[-1, 0, 0] == 255
    np.testing.assert_array_equal(obs2[-2], obs1[-1])
    obs1[:] = 0  # observations are copies: changing one must not change the next
    obs5, *_ = env.step(2)
    assert obs5[-2, 60, 60] == 17


def test_training_clips_rewards_and_ends_on_life_loss_but_reports_whole_game_return():
    env, ale = scripted(rewards={7: 4.0, 11: -2.0, 20: 7.0}, lives_lost_at=(11,), game_length=28,
                        life_loss_terminal=True, clip_rewards=True)
    env.reset(seed=0)  # frames 1-5
    _, r1, term1, _, _ = env.step(0)  # frames 6-9
    obs2, r2, term2, _, info2 = env.step(0)  # frames 10-13, life lost at 11, then FIRE: frames 14-17
    assert (r1, r2) == (1.0, -1.0) and not term1 and term2 and info2["life_lost"] and "episode" not in info2
    assert ale.frame == 17
    obs, _ = env.reset()  # only a life was lost: the game goes on where step() left it
    assert ale.frame == 17
    np.testing.assert_array_equal(obs, obs2)
    rewards, info = [], {}
    while "episode" not in info:
        _, reward, terminated, _, info = env.step(0)
        rewards.append(reward)
    assert terminated and rewards[0] == 1.0  # frames 18-21 hold the 7
    assert info["episode"]["r"] == pytest.approx(4.0 - 2.0 + 7.0)  # real, unclipped, whole game


def test_evaluation_env_plays_whole_game_with_real_rewards():
    env, ale = scripted(rewards={7: 4.0}, lives_lost_at=(11,), game_length=32)
    env.reset(seed=0)
    rewards, lives_lost, terminated = [], 0, False
    while not terminated:
        _, reward, terminated, _, info = env.step(0)
        rewards.append(reward)
        lives_lost += info["life_lost"]
    assert ale.frame == 32 and sum(rewards) == 4.0 and info["episode"]["r"] == 4.0 and lives_lost == 1


def test_a_lost_life_is_handled_the_same_in_training_and_evaluation():
    """FIRE and a restarted frame stack after a lost life in both: the same actions give the same frames."""
    kwargs = dict(rewards={7: 4.0, 23: 1.0}, lives_lost_at=(11, 30), game_length=44)
    train_env, train_ale = scripted(life_loss_terminal=True, clip_rewards=True, **kwargs)
    eval_env, eval_ale = scripted(**kwargs)
    train_obs, eval_obs = train_env.reset(seed=0)[0], eval_env.reset(seed=0)[0]
    game_over, steps = False, 0
    while not game_over:
        np.testing.assert_array_equal(train_obs, eval_obs)
        action = [0, 2][steps % 2]
        train_obs, _, terminated, _, train_info = train_env.step(action)
        eval_obs, _, game_over, _, eval_info = eval_env.step(action)
        assert terminated == (eval_info["life_lost"] or game_over) and train_ale.frame == eval_ale.frame
        if terminated and not game_over:
            train_obs = train_env.reset()[0]
        steps += 1
    assert train_info["episode"] == eval_info["episode"]


def test_noop_starts_are_1_to_30_frames_random_and_seeded():
    noop_frames = []
    for seed in range(60):
        env, ale = scripted(noop_max=30)
        env.reset(seed=seed)
        noop_frames.append(ale.frame - 4)  # the FIRE step takes the last 4 frames
    assert min(noop_frames) >= 1 and max(noop_frames) <= 30 and len(set(noop_frames)) > 15
    env_a, _ = scripted(noop_max=30)
    env_b, _ = scripted(noop_max=30)
    assert env_a.reset(seed=3)[0][-1, 50, 50] == env_b.reset(seed=3)[0][-1, 50, 50]


@pytest.mark.parametrize("env_id", ["PongNoFrameskip-v4", "ALE/Pong-v5"])
def test_make_env_atari_shapes_and_frame_skip(env_id):
    env = make_env(env_id, training=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    frame = env.unwrapped.ale.getEpisodeFrameNumber()
    env.step(0)
    assert env.unwrapped.ale.getEpisodeFrameNumber() - frame == 4  # our repeat only, v5's own skip is off


def test_make_env_breakout_training_ends_on_life_loss_evaluation_does_not():
    train_env, eval_env = make_env("BreakoutNoFrameskip-v4", True), make_env("BreakoutNoFrameskip-v4", False)
    for env, expected_lives in ((train_env, 4), (eval_env, 0)):
        env.reset(seed=0)
        rng, terminated, truncated = np.random.default_rng(0), False, False
        while not (terminated or truncated):
            _, _, terminated, truncated, info = env.step(int(rng.integers(4)))
        assert info["lives"] == expected_lives


def test_breakout_evaluation_presses_fire_after_a_lost_life_as_training_does():
    """A policy that never presses FIRE still ends its games: before, the ball was never served
    again after the first lost life and evaluation sat until the 27,000-step cap."""
    train_env, eval_env = make_env("BreakoutNoFrameskip-v4", True), make_env("BreakoutNoFrameskip-v4", False)
    train_obs, eval_obs = train_env.reset(seed=5)[0], eval_env.reset(seed=5)[0]
    rng, steps, game_over = np.random.default_rng(0), 0, False
    while not game_over and steps < 3000:  # NOOP, RIGHT and LEFT only, never FIRE: the same frames in both envs
        np.testing.assert_array_equal(train_obs, eval_obs)
        action = int(rng.choice([0, 2, 3]))
        train_obs, _, terminated, _, _ = train_env.step(action)
        eval_obs, _, game_over, _, eval_info = eval_env.step(action)
        assert terminated == (eval_info["life_lost"] or game_over)
        if terminated and not game_over:
            train_obs = train_env.reset()[0]
        steps += 1
    assert eval_info["lives"] == 0 and steps < 3000


def test_make_env_vector_observations_are_float32():
    env = make_env("CartPole-v1", training=True)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (4,)


def test_make_env_unknown_id_suggests_close_ids():
    with pytest.raises(UsageError, match="CartPole-v1"):
        make_env("CartPole-v7", training=True)
    with pytest.raises(UsageError, match="PongNoFrameskip-v4"):
        make_env("PongNoFrameskip-v3x", training=True)


class Rewards(gym.Env):
    """Pays the given rewards in turn, one per step, never ending."""

    observation_space, action_space = gym.spaces.Box(-1.0, 1.0, (1,)), gym.spaces.Discrete(2)

    def __init__(self, rewards):
        self.rewards = iter(rewards)

    def reset(self, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), next(self.rewards), False, False, {}


def test_normalize_reward_keeps_a_nan_reward_out_of_its_statistics():
    # In gymnasium's wrapper one NaN poisons the running return for good; here it passes through (the update that
    # sees it is skipped) and the rewards after it are scaled as if it had never come.
    rewards = [1.0, 2.0, float("nan"), 3.0, -1.0]
    with_nan, without = NormalizeReward(Rewards(rewards)), NormalizeReward(Rewards(rewards[:2] + rewards[3:]))
    seen = [with_nan.step(0)[1] for _ in rewards]
    expected = [without.step(0)[1] for _ in range(4)]
    assert np.isnan(seen[2]) and np.all(np.isfinite(seen[:2] + seen[3:]))
    np.testing.assert_allclose(seen[:2] + seen[3:], expected)
    # and with finite rewards it is gymnasium's: R <- gamma R + r, each reward over sqrt(var(R) + eps)
    theirs = gym.wrappers.NormalizeReward(Rewards(rewards[:2] + rewards[3:]))
    np.testing.assert_array_equal(expected, [theirs.step(0)[1] for _ in range(4)])


def test_resize_keeps_every_single_pixel_visible():
    # A 1-pixel bullet anywhere on the screen must show in the observation. One bilinear
    # resize from 210x160 skips every fifth row and loses such pixels entirely (max 0).
    env, _ = scripted()
    screen, out = np.zeros((210, 160), np.uint8), np.zeros((84, 84), np.uint8)
    faintest = 255
    for row in range(210):
        for col in range(0, 160, 3):
            screen[row, col] = 255
            env.resize(screen, out)
            faintest = min(faintest, int(out.max()))
            screen[row, col] = 0
    assert faintest >= 10  # INTER_AREA's own worst case is 14 (255 spread over 2.5 x 1.9 pixels)
    screen[:] = 100
    env.resize(screen, out)
    assert np.all(out == 100)  # a flat screen stays flat: an average, not a sum


def units_ever_on(trunk, observations):
    """For each ReLU of the trunk: how many of its units (filters, for a conv layer) are on for some input."""
    counts, hidden = [], observations
    with torch.no_grad():
        for layer in trunk:
            hidden = layer(hidden)
            if isinstance(layer, torch.nn.ReLU):
                per_unit = hidden.transpose(0, 1).reshape(hidden.shape[1], -1)
                counts.append((int((per_unit > 0).any(1).sum()), per_unit.shape[0]))
    return counts


def test_center_biases_starts_every_unit_of_the_atari_network_alive_on_pong():
    env = make_env("PongNoFrameskip-v4", training=True)
    start_frames, held_out = random_play_frames(env, 600, seed=0), random_play_frames(env, 600, seed=1)
    torch.manual_seed(0)
    trunk, _ = make_trunk(env.observation_space)
    # With zero biases Pong's near-constant frames leave units off on every frame (measured on 3 init
    # seeds: 4 of 16 filters and 103-116 of 256 FC units); such a unit gets no gradient, ever.
    assert sum(total - alive for alive, total in units_ever_on(trunk, held_out)) > 50
    center_biases(trunk, start_frames)
    assert units_ever_on(trunk, held_out) == [(16, 16), (32, 32), (256, 256)]  # on frames it never saw


def test_standardize_frames_centres_and_scales_what_it_saw_and_is_frame_over_255_before():
    frames = torch.randint(0, 256, (50, 4, 84, 84), dtype=torch.uint8)
    frames[:, :, :40] = 87  # a static background, as in Pong
    standardize = StandardizeFrames((4, 84, 84))
    torch.testing.assert_close(standardize(frames), ScaleUint8()(frames))
    out = standardize.fit(frames)(frames)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.mean(0), torch.zeros(4, 84, 84), atol=1e-4, rtol=0)
    assert out.std().item() == pytest.approx(1.0, abs=1e-3)
    assert out[:, :, :40].abs().max() < 1e-5  # static pixels carry nothing, whatever their shade


def test_standardized_frames_reach_every_worker_and_are_never_trained():
    import a3c

    args = a3c.Args(env_id="PongNoFrameskip-v4", standardize_frames=True)
    shared = a3c.build_model(args)
    env = make_env(args.env_id, training=False)
    local = a3c.ActorCritic(env.observation_space, env.action_space, args)
    shared_params, _ = flatten_parameters(shared)
    params, grads = flatten_parameters(local)
    params.copy_(shared_params)  # a worker's sync, theta' <- theta
    torch.testing.assert_close(local.body.trunk[0].offset, shared.body.trunk[0].offset, rtol=0, atol=0)
    assert shared.body.trunk[0].scale.item() > 10 / 255  # fitted: Pong's frames vary far less than [0, 1]
    frames = random_play_frames(make_env(args.env_id, training=True), 8, seed=0)
    policy, values, _ = local(frames)
    statistics = torch.cat([local.body.trunk[0].scale.view(1), local.body.trunk[0].offset.view(-1)]).clone()
    assert a3c.apply_gradient(-policy.logsumexp(-1).sum() + values.pow(2).sum(), grads,
                              a3c.SharedRMSprop(params, eps=1e-5), lr=1e-2, max_grad_norm=40.0, rank=0)
    after = torch.cat([local.body.trunk[0].scale.view(1), local.body.trunk[0].offset.view(-1)])
    torch.testing.assert_close(after, statistics, rtol=0, atol=0)
    assert not torch.equal(params, shared_params)  # the trained weights did move


def test_flat_parameters_are_views_that_gradients_accumulate_into():
    model = torch.nn.Linear(3, 2)
    params, grads = flatten_parameters(model)
    assert params.numel() == 8
    params.fill_(0.5)
    assert torch.all(model.weight == 0.5) and torch.all(model.bias == 0.5)
    model(torch.ones(1, 3)).sum().backward()
    # d(sum W x + b)/dW = x = 1, /db = 1: the flat buffer holds the gradient, no copy needed.
    torch.testing.assert_close(grads, torch.ones(8))


@pytest.mark.parametrize("activation, function", [("tanh", torch.tanh), ("relu", torch.relu)], ids=["tanh", "relu"])
def test_every_script_builds_its_vector_trunk_with_the_activation_asked_for(activation, function):
    obs = torch.randn(6, 4)
    for module in MODULES:
        model = module.build_model(module.Args(env_id="CartPole-v1", hidden_sizes=(5, 3), activation=activation))
        trunk = getattr(model, "body", model).trunk  # a3c.py's Body holds it; the Q-network itself does
        expected = function(trunk[2](function(trunk[0](obs))))  # layer, activation, layer, activation
        torch.testing.assert_close(trunk(obs), expected, rtol=0, atol=0)
