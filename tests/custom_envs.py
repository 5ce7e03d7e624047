"""Environments built for the tests. A script reaches them as --env-id tests.custom_envs:<id>."""

import json
import os

import gymnasium as gym
import numpy as np


class CueMemory(gym.Env):
    """A cue (-1 or +1) shows at the first step only; `delay` blank steps later, the last one
    flagged "decide", the agent must push the side the cue showed: +1 if right, -1 if wrong.
    Without memory the decision step looks the same whatever the cue: the best expected
    return is 0. Episodes are delay + 1 steps, within one t_max = 5 segment for delay 3."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, delay=3, render_mode=None):
        self.delay, self.render_mode = delay, render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return np.array([2 * self.cue - 1, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t <= self.delay:
            return np.array([0, self.t == self.delay], np.float32), 0.0, False, False, {}
        return np.zeros(2, np.float32), 1.0 if action == self.cue else -1.0, True, False, {}


class FollowTarget(gym.Env):
    """A continuous-action bandit: observe a target x ~ U(-1, 1), act a in [-2, 2], receive
    -(a - x)^2, and the episode ends. The Gaussian policy's mean must learn a = x: a mean of 0
    (the untrained policy) scores -1/3 on average, the perfect mean 0."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = self.np_random.uniform(-1.0, 1.0, (1,)).astype(np.float32)
        return self.target.copy(), {}

    def step(self, action):
        return self.target.copy(), -float(np.sum((np.asarray(action) - self.target) ** 2)), True, False, {}


class MultiDiscreteActions(gym.ActionWrapper):
    """CartPole behind a MultiDiscrete action space, which no script supports."""

    def __init__(self, env):
        super().__init__(env)
        self.action_space = gym.spaces.MultiDiscrete([2])

    def action(self, action):
        return int(action[0])


class Faulty(gym.Wrapper):
    """CartPole with faults: raise after `crash_after` steps of this env, or make the reward NaN
    on every `nan_every`-th step (a bad sensor) and on every step after `nan_after` (divergence)."""

    def __init__(self, env, crash_after=None, nan_every=None, nan_after=None):
        super().__init__(env)
        self.crash_after, self.nan_every, self.nan_after, self.steps = crash_after, nan_every, nan_after, 0

    def step(self, action):
        self.steps += 1
        if self.crash_after and self.steps > self.crash_after:
            raise RuntimeError(f"the simulator crashed at step {self.steps}")
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (self.nan_every and self.steps % self.nan_every == 0) or (self.nan_after and self.steps > self.nan_after):
            reward = float("nan")
        return obs, reward, terminated, truncated, info


def faulty_cartpole(render_mode=None, **faults):
    return Faulty(gym.make("CartPole-v1", render_mode=render_mode), **faults)


gym.register("CrashingCartPole-v1", entry_point=faulty_cartpole, kwargs={"crash_after": 300})
gym.register("NanRewardCartPole-v1", entry_point=faulty_cartpole, kwargs={"nan_every": 50})
gym.register("DivergingCartPole-v1", entry_point=faulty_cartpole, kwargs={"nan_after": 300})
gym.register("CueMemory-v0", entry_point=CueMemory)
gym.register("FollowTarget-v0", entry_point=FollowTarget)
gym.register("CartPoleMultiDiscrete-v1",
             entry_point=lambda **kwargs: MultiDiscreteActions(gym.make("CartPole-v1", **kwargs)))


class Pictures(gym.Env):
    """96 x 96 RGB observations (as CarRacing's) with Box actions, or Discrete with discrete=True: an image env
    that is not Atari, which no script supports."""

    observation_space = gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)

    def __init__(self, discrete=False, render_mode=None):
        self.action_space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((96, 96, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((96, 96, 3), np.uint8), 0.0, False, False, {}


class Recorded(gym.Wrapper):
    """CartPole that writes its first observation, the actions taken and the first episode's length to the JSON
    file named by the environment variable RECORD_TO, once it has seen `steps` actions, unless another env wrote it
    first: a window on a worker's streams."""

    def __init__(self, env, steps=40):
        super().__init__(env)
        self.record, self.steps = {"first_observation": None, "actions": []}, steps

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.record["first_observation"] is None:
            self.record["first_observation"] = obs.tolist()
        return obs, info

    def step(self, action):
        self.record["actions"].append(int(action))
        if len(self.record["actions"]) == self.steps and os.environ.get("RECORD_TO"):
            try:  # the first env to get there writes: a run's first worker, before any evaluation
                with open(os.environ["RECORD_TO"], "x") as f:
                    json.dump(self.record, f)
            except FileExistsError:
                pass
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and "first_episode_length" not in self.record:
            self.record["first_episode_length"] = len(self.record["actions"])
        return obs, reward, terminated, truncated, info


gym.register("ImageBoxActions-v0", entry_point=Pictures)
gym.register("ImageDiscreteActions-v0", entry_point=Pictures, kwargs={"discrete": True})
gym.register("RecordedCartPole-v1", entry_point=lambda **kwargs: Recorded(gym.make("CartPole-v1", **kwargs)))


class Countdown(gym.Env):
    """A scripted episode: observation [t], reward t at step t (1, 2, 3, ...), whatever the action; terminated at
    step `terminal_at` if given (else it runs on: a TimeLimit truncates it). Four actions, all alike."""

    observation_space = gym.spaces.Box(0.0, 1e6, (1,), np.float32)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, terminal_at=None, render_mode=None):
        self.terminal_at, self.render_mode = terminal_at, render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), float(self.t), self.t == self.terminal_at, False, {}
