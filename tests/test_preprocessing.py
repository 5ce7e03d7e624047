"""common.py's Atari preprocessing against a scripted emulator, and make_env on the real ones."""

import gymnasium as gym
import numpy as np
import pytest

from common import AtariPreprocessing, UsageError, make_env


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


def test_reset_does_noops_then_fire_and_fills_the_stack():
    env, ale = scripted()
    obs, _ = env.reset(seed=0)
    # one no-op step (frames 1-4) and one FIRE step (frames 5-8): newest frame is max(7, 8) = 8
    assert ale.frame == 8
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert np.all(obs[:, 40:, 40:] == 8)  # all four slots start as the first frame


def test_step_takes_max_of_last_two_frames_and_stacks_oldest_first():
    env, ale = scripted()
    env.reset(seed=0)
    obs1, *_ = env.step(2)  # frames 9..12: max(11, 12) = 12, sprite from odd frame 11
    obs2, *_ = env.step(2)  # frames 13..16
    assert ale.frame == 16
    assert obs2[-1, 60, 60] == 16 and obs2[-2, 60, 60] == 12 and obs2[0, 60, 60] == 8
    # the sprite exists only on odd frames: without the max it would vanish from every observation
    assert obs1[-1, 0, 0] == 255 and obs2[-1, 0, 0] == 255
    np.testing.assert_array_equal(obs2[-2], obs1[-1])
    obs1[:] = 0  # observations are copies: changing one must not change the next
    obs3, *_ = env.step(2)
    assert obs3[-2, 60, 60] == 16


def test_training_clips_rewards_and_ends_on_life_loss_but_reports_whole_game_return():
    env, ale = scripted(rewards={10: 4.0, 14: -2.0, 18: 7.0}, lives_lost_at=(15,), game_length=24,
                        life_loss_terminal=True, clip_rewards=True)
    env.reset(seed=0)
    _, r1, term1, _, _ = env.step(0)  # frames 9-12
    _, r2, term2, _, info2 = env.step(0)  # frames 13-16, life lost at 15
    assert (r1, r2) == (1.0, -1.0) and not term1 and term2 and "episode" not in info2
    env.reset()  # only a life was lost: the game goes on with a FIRE step (frames 17-20, reward 7)
    assert ale.frame == 20
    rewards, info = [], {}
    while "episode" not in info:
        _, reward, terminated, _, info = env.step(0)
        rewards.append(reward)
    assert terminated
    assert info["episode"]["r"] == pytest.approx(4.0 - 2.0 + 7.0)  # real, unclipped, whole game


def test_evaluation_env_plays_whole_game_with_real_rewards():
    env, ale = scripted(rewards={10: 4.0}, lives_lost_at=(15,), game_length=32)
    env.reset(seed=0)
    rewards, terminated = [], False
    while not terminated:
        _, reward, terminated, _, info = env.step(0)
        rewards.append(reward)
    assert ale.frame == 32 and sum(rewards) == 4.0 and info["episode"]["r"] == 4.0


def test_noop_starts_are_random_and_seeded():
    starts = {scripted(noop_max=30)[0].reset(seed=seed)[0][-1, 50, 50] for seed in range(20)}
    assert len(starts) > 5  # different numbers of no-ops give different first frames
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


def test_make_env_vector_observations_are_float32():
    env = make_env("CartPole-v1", training=True)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (4,)


def test_make_env_unknown_id_suggests_close_ids():
    with pytest.raises(UsageError, match="CartPole-v1"):
        make_env("CartPole-v7", training=True)
    with pytest.raises(UsageError, match="PongNoFrameskip-v4"):
        make_env("PongNoFrameskip-v3x", training=True)


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
