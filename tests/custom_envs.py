"""Environments built for the tests. A script reaches them as --env-id tests.custom_envs:<id>."""

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


class MultiDiscreteActions(gym.ActionWrapper):
    """CartPole behind a MultiDiscrete action space, which no script supports."""

    def __init__(self, env):
        super().__init__(env)
        self.action_space = gym.spaces.MultiDiscrete([2])

    def action(self, action):
        return int(action[0])


gym.register("CueMemory-v0", entry_point=CueMemory)
gym.register("CartPoleMultiDiscrete-v1",
             entry_point=lambda **kwargs: MultiDiscreteActions(gym.make("CartPole-v1", **kwargs)))
