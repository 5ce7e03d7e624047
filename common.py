"""Environment plumbing and network building blocks shared by the four scripts.

Only what is not the algorithm lives here: building a gymnasium environment for any id
(with the 2015 DQN preprocessing on Atari), the network trunks of the paper, the weight
initialisation, and the flat parameter buffer that makes every Hogwild operation one
vectorised op. Each algorithm script keeps its own model heads, optimizer, worker loop
and evaluation.
"""

import difflib
import importlib

import ale_py
import cv2
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

gym.register_envs(ale_py)
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr: an error stays one line
cv2.setNumThreads(1)  # one thread per worker process, as for torch


class UsageError(Exception):
    """Bad input from the user: the scripts print the message and exit with status 2."""


# ---------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------


class AtariPreprocessing(gym.Wrapper):
    """The 2015 DQN preprocessing, driving the emulator directly.

    Action repeat 4 with a max over the last two frames, the emulator's own luminance
    screen reduced to 84x84 (see resize()), the last 4 frames stacked (oldest first), up
    to 30 random no-ops at reset and FIRE at reset where the game needs it. For training,
    a lost life can end the episode and rewards can be clipped to [-1, 1]; the real return
    of the whole game is always reported in info["episode"] when the game ends.

    The skipped frames call ale.act() rather than env.step(): env.step() would copy a
    screen and build an info dict on each of the 4 frames, which costs more than the
    emulation itself.
    """

    def __init__(self, env, noop_max=30, frame_skip=4, life_loss_terminal=False, clip_rewards=False):
        super().__init__(env)
        self.ale = env.unwrapped.ale
        self.action_set = env.unwrapped._action_set
        self.noop_max, self.frame_skip = noop_max, frame_skip
        self.life_loss_terminal, self.clip_rewards = life_loss_terminal, clip_rewards
        self.fire_at_reset = env.unwrapped.get_action_meanings()[1:2] == ["FIRE"]
        height, width = self.ale.getScreenDims()
        self.screens = np.zeros((3, height, width), np.uint8)  # the last two raw frames, their max
        self.newest = 0  # which of screens[0] and screens[1] holds the last frame
        self.half = np.zeros((height // 2, width // 2), np.uint8)  # scratch for resize()
        self.frames = np.zeros((4, 84, 84), np.uint8)  # the stack the agent sees
        self.observation_space = gym.spaces.Box(0, 255, self.frames.shape, np.uint8)
        self.lives, self.game_return, self.game_length = 0, 0.0, 0

    def _act(self, action):
        """One agent step: action repeat, max over the last two frames, episode flags."""
        reward = 0.0
        for i in range(self.frame_skip):
            reward += self.ale.act(self.action_set[action])
            game_over = self.ale.game_over(with_truncation=False)
            if i >= self.frame_skip - 2 or game_over:
                self.newest ^= 1  # the two take turns: the older one is overwritten, nothing copied
                self.ale.getScreenGrayscale(self.screens[self.newest])
            if game_over:
                break
        # Max over the last two frames: some games draw sprites only on odd frames.
        np.maximum(self.screens[0], self.screens[1], out=self.screens[2])
        self.frames[:-1] = self.frames[1:]
        self.resize(self.screens[2], self.frames[-1])
        return reward, game_over, self.ale.game_truncated()

    def resize(self, screen, out):
        """Screen to 84x84 so that every pixel counts: an exact 2x2 average, then bilinear.

        One INTER_AREA resize gives nearly the same image in 5x the time (its path for
        non-integer ratios is slow: 130 us, more than a third of the emulator's 4 frames);
        one bilinear resize skips every fifth row, and a 1-pixel bullet can vanish.
        """
        cv2.resize(screen, self.half.shape[::-1], dst=self.half, interpolation=cv2.INTER_AREA)
        cv2.resize(self.half, (84, 84), dst=out, interpolation=cv2.INTER_LINEAR)

    def reset(self, *, seed=None, options=None):
        info = {}
        # After a lost life (training only) the game goes on from where it is; otherwise a new
        # game starts with random no-ops. Rewards of these steps still count in the game's return.
        if not (self.life_loss_terminal and self.lives > 0 and not self.ale.game_over()):
            _, info = self.env.reset(seed=seed, options=options)
            self.game_return, self.game_length = 0.0, 0
            for _ in range(self.env.unwrapped.np_random.integers(1, self.noop_max + 1)):
                self.game_return += self._act(0)[0]
        if self.fire_at_reset:
            self.game_return += self._act(1)[0]
        self.frames[:-1] = self.frames[-1]  # start the stack with copies of the first frame
        self.lives = self.ale.lives()
        return self.frames.copy(), info

    def step(self, action):
        reward, terminated, truncated = self._act(action)
        self.game_return += reward
        self.game_length += 1
        info = {"lives": self.ale.lives()}
        if terminated or truncated:
            info["episode"] = {"r": self.game_return, "l": self.game_length}
        elif self.life_loss_terminal and info["lives"] < self.lives:
            terminated = True
        self.lives = info["lives"]
        if self.clip_rewards:
            reward = float(np.sign(reward))
        return self.frames.copy(), reward, terminated, truncated, info


def make_env(env_id, training, max_episode_steps=None, video_dir=None):
    """Build an environment for any gymnasium id.

    training=True: Atari ends the episode on a lost life and clips rewards (the DQN
    practice). training=False (evaluation): whole games, real rewards, and an optional
    cap on episode length so that a policy stuck repeating one action still ends.
    """
    try:
        if ":" in env_id:  # "module:Env-v0": import the module that registers Env-v0 (gym.make's syntax)
            module, env_id = env_id.split(":", 1)
            importlib.import_module(module)
        spec = gym.spec(env_id)
    except (gym.error.Error, ModuleNotFoundError) as error:
        ids = list(gym.registry)
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown environment id {env_id!r} ({error}).{hint}") from None
    atari = spec.entry_point == "ale_py.env:AtariEnv"
    # ALE/*-v5 skips frames itself; our wrapper does the skipping (with the max over two
    # frames), so the env must step one frame at a time. Sticky actions stay on for v5.
    kwargs = {"frameskip": 1} if atari else {}
    try:
        env = gym.make(env_id, render_mode="rgb_array" if video_dir else None, **kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise UsageError(f"{env_id} needs a package that is not installed: {error}") from None
    if atari:
        env = AtariPreprocessing(env, life_loss_terminal=training, clip_rewards=training)
    elif isinstance(env.observation_space, gym.spaces.Box):
        env = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.DtypeObservation(env, np.float32))
    else:
        raise UsageError(f"{env_id} has a {type(env.observation_space).__name__} observation space; "
                         "only Box (vector or image) observations are supported")
    if max_episode_steps:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: True, disable_logger=True)
    return env


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------


def layer_init(layer, std=np.sqrt(2), bias=0.0):
    """Orthogonal weights with gain std and constant biases (the usual A2C/PPO choice)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class ScaleUint8(nn.Module):
    """Frames arrive as uint8 (4x smaller to store and send); the network sees [0, 1]."""

    def forward(self, x):
        return x * (1 / 255)  # uint8 times a float is float32: one op, where .float() / 255 is two


def atari_trunk(network="small"):
    """The paper's small network (the 2013 DQN one: 16 8x8/4, 32 4x4/2, FC 256, Supplement 8),
    or the 2015 Nature network used for the 57-game comparison. Returns (trunk, out_features)."""
    if network == "small":
        layers = [nn.Conv2d(4, 16, 8, stride=4), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2), nn.ReLU()]
        flat, hidden = 32 * 9 * 9, 256
    elif network == "nature":
        layers = [nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                  nn.Conv2d(64, 64, 3, stride=1), nn.ReLU()]
        flat, hidden = 64 * 7 * 7, 512
    else:
        raise UsageError(f"unknown network {network!r}; choose 'small' or 'nature'.")
    layers = [layer_init(layer) if isinstance(layer, nn.Conv2d) else layer for layer in layers]
    trunk = nn.Sequential(ScaleUint8(), *layers, nn.Flatten(), layer_init(nn.Linear(flat, hidden)), nn.ReLU())
    return trunk, hidden


def mlp_trunk(in_features, hidden_sizes=(64, 64)):
    """Tanh MLP for vector observations. Returns (trunk, out_features)."""
    layers, width = [], in_features
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(width, size)), nn.Tanh()]
        width = size
    return nn.Sequential(*layers), width


def make_trunk(observation_space, network="small", hidden_sizes=(64, 64)):
    if len(observation_space.shape) == 3:
        return atari_trunk(network)
    return mlp_trunk(int(np.prod(observation_space.shape)), hidden_sizes)


class ObservationNorm(nn.Module):
    """(obs - mean) / std over every observation seen in training so far, clipped to [-10, 10].

    The statistics are a buffer, so they travel in the state_dict (model.pt, checkpoint.pt)
    and an evaluation sees what training saw. moments = [count, sum, sum of squares] per
    feature, in float64; it starts as one observation with mean 0 and variance 1, so an
    untrained normaliser is the identity. Workers add their observations' moments in place.
    """

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("moments", torch.stack([torch.ones(shape), torch.zeros(shape), torch.ones(shape)]).double())

    @staticmethod
    def moments_of(observations):
        observations = torch.as_tensor(observations, dtype=torch.float64)
        return torch.stack([torch.full(observations.shape[1:], float(len(observations)), dtype=torch.float64),
                            observations.sum(0), observations.pow(2).sum(0)])

    def forward(self, obs):
        count, total, total_squares = self.moments
        mean = total / count
        std = (total_squares / count - mean.pow(2)).clamp(min=0).add(1e-8).sqrt()
        return ((obs - mean) / std).clamp(-10, 10).float()


def flatten_parameters(model, flat_params=None):
    """Make every parameter and its .grad a view into one flat buffer; return both buffers.

    With flat_params given (for example a target network's parameters in shared memory),
    the model is backed by that buffer instead of a copy of its own weights.

    Hogwild then needs one op per operation on the whole model: the sync theta' <- theta
    is one copy_, the gradient norm one norm, the shared RMSProp step a handful of ops,
    instead of one small op per tensor. Autograd accumulates into an existing .grad in
    place, so the views stay valid as long as the gradient is zeroed (never set to None).
    """
    params = list(model.parameters())
    if flat_params is None:
        flat_params = torch.cat([p.detach().reshape(-1) for p in params])
    flat_grads = torch.zeros_like(flat_params)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat_params[offset:offset + n].view_as(p)
        p.grad = flat_grads[offset:offset + n].view_as(p)
        offset += n
    return flat_params, flat_grads
