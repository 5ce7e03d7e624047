"""Environment plumbing and network building blocks shared by the four scripts.

Only what is not the algorithm lives here: building a gymnasium environment for any id
(with the 2015 DQN preprocessing on Atari), the network trunks of the paper, the weight
initialisation, the flat parameter buffer that makes every Hogwild operation one
vectorised op, with the RMSProp update compiled into one pass over that buffer. Each
algorithm script keeps its own model heads, optimizer, worker loop and evaluation.
"""

import difflib
import importlib

import ale_py
import cv2
import gymnasium as gym
import numba
import numpy as np
import torch
import torch.nn as nn

gym.register_envs(ale_py)
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr: an error stays one line
cv2.setNumThreads(1)  # one thread per worker process, as for torch
ATARI_ENTRY_POINT = "ale_py.env:AtariEnv"
FRAME_SKIP = 4  # the Atari action repeat: one agent step is 4 emulator frames


class UsageError(Exception):
    """Bad input from the user: the scripts print the message and exit with status 2."""


# ---------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------


class AtariPreprocessing(gym.Wrapper):
    """The 2015 DQN preprocessing, driving the emulator directly.

    Action repeat 4 with a max over the last two frames, the emulator's own luminance
    screen reduced to 84x84 (see resize()), the last 4 frames stacked (oldest first), 1 to
    30 random no-op frames when a game starts, and FIRE when a game starts or a life is
    lost where the game needs it, in training and evaluation alike. For training, a lost
    life also ends the episode and rewards are clipped to [-1, 1]; the real return of the
    whole game is always reported in info["episode"] when the game ends.

    The skipped frames call ale.act() rather than env.step(): env.step() would copy a
    screen and build an info dict on each of the 4 frames, which costs more than the
    emulation itself.
    """

    def __init__(self, env, noop_max=30, frame_skip=FRAME_SKIP, life_loss_terminal=False, clip_rewards=False):
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

    def _act(self, action, frames=None):
        """Repeat `action` for `frames` emulator frames (the frame skip unless given), then push the
        max of the last two frames onto the stack. Returns the reward and the episode flags."""
        frames = frames or self.frame_skip
        reward = 0.0
        for i in range(frames):
            reward += self.ale.act(self.action_set[action])
            game_over = self.ale.game_over(with_truncation=False)
            if i >= frames - 2 or game_over:
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
        # After a lost life (training only) the game goes on: step() has already pressed FIRE.
        if not (self.life_loss_terminal and self.lives > 0 and not self.ale.game_over()):
            _, info = self.env.reset(seed=seed, options=options)
            self.screens[:2] = 0  # no screen of the last game may enter the first max
            # The DQN protocol: 1 to noop_max no-op FRAMES (not agent steps) before the agent acts.
            # Rewards of these frames, and of the FIRE below, still count in the game's return.
            noops = int(self.env.unwrapped.np_random.integers(1, self.noop_max + 1))
            self.game_return, self.game_length = self._act(0, noops)[0], 0
            self.game_return += self.start_life()
        self.lives = self.ale.lives()
        return self.frames.copy(), info

    def start_life(self):
        """What every new game and every lost life get, in training and evaluation alike: FIRE where
        the game waits for it (Breakout), then a stack of copies of the current frame. Returns FIRE's reward."""
        reward = self._act(1)[0] if self.fire_at_reset else 0.0
        self.frames[:-1] = self.frames[-1]
        return reward

    def step(self, action):
        reward, terminated, truncated = self._act(action)
        game_over = terminated or truncated
        info = {"lives": self.ale.lives(), "life_lost": False}
        if info["lives"] < self.lives and not game_over:
            # One protocol for a lost life: the same step presses FIRE and restarts the stack (the
            # LSTM agent restarts its state on info["life_lost"]). Training also ends its episode here.
            reward += self.start_life()
            info["life_lost"] = True
            terminated = self.life_loss_terminal
        self.game_return += reward
        self.game_length += 1
        if game_over:
            info["episode"] = {"r": self.game_return, "l": self.game_length}
        self.lives = info["lives"]
        if self.clip_rewards:
            reward = float(np.sign(reward))
        return self.frames.copy(), reward, terminated, truncated, info


def env_spec(env_id):
    """(id, spec) for a gymnasium id; "module:Env-v0" first imports the module that registers Env-v0."""
    try:
        if ":" in env_id:  # gym.make's syntax
            module, env_id = env_id.split(":", 1)
            importlib.import_module(module)
        return env_id, gym.spec(env_id)
    except (gym.error.Error, ModuleNotFoundError) as error:
        ids = list(gym.registry)
        close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unknown environment id {env_id!r} ({error}).{hint}") from None


def is_atari(env_id):
    return env_spec(env_id)[1].entry_point == ATARI_ENTRY_POINT


def env_family(env_id):
    """The key of a script's PRESETS: "atari", "box" (continuous actions: MuJoCo), "vector" (vector
    observations, Discrete actions: classic control), or None (another action space, which keeps the paper's
    values until the script refuses it). make_env refuses any other observations first."""
    if is_atari(env_id):
        return "atari"
    env = make_env(env_id, training=False)
    env.close()
    if isinstance(env.action_space, gym.spaces.Box):
        return "box"
    if isinstance(env.action_space, gym.spaces.Discrete):
        return "vector"
    return None


def frames_per_step(env_id):
    """Emulator frames per agent step, for progress.csv's `frames`: the action repeat on Atari, else 1.
    The paper counts Atari training in frames; our global step counts agent steps."""
    return FRAME_SKIP if is_atari(env_id) else 1


def make_env(env_id, training, max_episode_steps=None, video_dir=None):
    """Build an environment for any gymnasium id.

    training=True: Atari ends the episode on a lost life and clips rewards (the DQN
    practice). training=False (evaluation): whole games, real rewards, and an optional
    cap on episode length so that a policy stuck repeating one action still ends.
    """
    env_id, _ = env_spec(env_id)
    atari = is_atari(env_id)
    # ALE/*-v5 skips frames itself; our wrapper does the skipping (with the max over two
    # frames), so the env must step one frame at a time. Sticky actions stay on for v5.
    kwargs = {"frameskip": 1} if atari else {}
    try:
        env = gym.make(env_id, render_mode="rgb_array" if video_dir else None, **kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise UsageError(f"{env_id} needs a package that is not installed: {error}") from None
    if atari:
        env = AtariPreprocessing(env, life_loss_terminal=training, clip_rewards=training)
    elif isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1:
        env = gym.wrappers.RecordEpisodeStatistics(gym.wrappers.DtypeObservation(env, np.float32))
    else:  # the image trunk takes the Atari preprocessing's 4 x 84 x 84 stacks only, not any picture
        space = env.observation_space
        env.close()
        kind = f"observations of shape {space.shape}" if isinstance(space, gym.spaces.Box) else (
            f"a {type(space).__name__} observation space")
        raise UsageError(f"{env_id} has {kind}; the scripts take vector observations (a 1-D Box) and Atari "
                         "games (whose frames the DQN preprocessing turns into 4 x 84 x 84 stacks)")
    if max_episode_steps:
        env = gym.wrappers.TimeLimit(env, max_episode_steps)
    if video_dir:
        env = gym.wrappers.RecordVideo(env, video_dir, episode_trigger=lambda episode: True, disable_logger=True)
    return env


class NormalizeReward(gym.wrappers.NormalizeReward):
    """gymnasium's NormalizeReward (each reward divided by a running std of the discounted return), but a reward
    that is not finite passes through untouched and stays out of the statistics: in gymnasium's, one NaN makes
    every later reward NaN, and the worker could only skip its updates until the run stops."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if np.isfinite(reward):  # the update that sees a NaN skips it (and counts it), as without this wrapper
            self.discounted_reward = self.discounted_reward * self.gamma * (1 - terminated) + float(reward)
            self.return_rms.update(self.discounted_reward)
            reward = reward / np.sqrt(self.return_rms.var + self.epsilon)
        return obs, reward, terminated, truncated, info


# ---------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------


def layer_init(layer, std=2**0.5, bias=0.0):
    """Orthogonal weights with gain std and constant biases (the usual A2C/PPO choice)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class ScaleUint8(nn.Module):
    """Frames arrive as uint8 (4x smaller to store and send); the network sees [0, 1]."""

    def forward(self, x):
        return x * (1 / 255)  # uint8 times a float is float32: one op, where .float() / 255 is two


class StandardizeFrames(nn.Module):
    """(frame / 255 - mean frame) / std, with the mean frame and one std measured on random play
    by fit(); before fit() it is frame / 255, as ScaleUint8.

    Atari frames barely change: on Pong each pixel's std over random play is 0.005 on the [0, 1]
    scale, so the ball and the paddles, all the agent needs to see, are a 1% ripple on a constant
    frame, and the network's features differ between states by about 1% of their size at the
    start. Centred and scaled, the moving objects are of order 1.

    mean and scale are parameters that are never trained (requires_grad=False): so they live in
    theta's flat buffer and reach every worker with each sync, and travel in model.pt.
    """

    def __init__(self, shape):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1 / 255), requires_grad=False)
        self.offset = nn.Parameter(torch.zeros(shape), requires_grad=False)

    @torch.no_grad()
    def fit(self, frames):
        pixels = frames.double() / 255
        mean = pixels.mean(0)
        std = (pixels - mean).std()  # one number over every pixel and frame: static pixels stay 0
        self.scale.fill_(1 / (255 * std))
        self.offset.copy_(mean / std)
        return self

    def forward(self, x):
        return x * self.scale - self.offset  # uint8 times a float is float32


def atari_trunk(network="small", standardize_frames=False):
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
    scale = StandardizeFrames((4, 84, 84)) if standardize_frames else ScaleUint8()
    trunk = nn.Sequential(scale, *layers, nn.Flatten(), layer_init(nn.Linear(flat, hidden)), nn.ReLU())
    return trunk, hidden


def random_play_frames(env, num_steps, seed):
    """Observations of uniformly random play, episodes restarted as they end: data to start a network on."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames = []
    for _ in range(num_steps):
        frames.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
    return torch.from_numpy(np.stack(frames))


@torch.no_grad()
def center_biases(trunk, observations):
    """Start every hidden unit alive: set each layer's bias, first to last, to minus the median of
    the unit's pre-activation over `observations` (and over positions for a filter), so that each
    unit is on for half of them.

    Atari frames barely change from one to the next, so with zero biases a unit of the paper's
    network is either on for every frame or off for every frame, and a unit that is off gets no
    gradient and never comes back (docs: Atari settings).
    """
    hidden = observations
    for layer in trunk:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            pre_activation = layer(hidden).transpose(0, 1).reshape(layer.bias.numel(), -1)
            layer.bias.sub_(pre_activation.median(dim=1).values)
        hidden = layer(hidden)
    return trunk


def start_on_random_play(trunk, env, seed, standardize_frames, center_init):
    """The data-dependent start of an Atari trunk, from 600 frames of random play: fit its
    StandardizeFrames (--standardize-frames), then centre its biases (--center-init)."""
    if not (standardize_frames or center_init) or len(env.observation_space.shape) != 3:
        return
    frames = random_play_frames(env, 600, seed)
    if standardize_frames:
        trunk[0].fit(frames)
    if center_init:
        center_biases(trunk, frames)


def mlp_trunk(in_features, hidden_sizes=(64, 64), activation="tanh"):
    """MLP for vector observations, tanh or ReLU after each layer. Returns (trunk, out_features)."""
    layers, width = [], in_features
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(width, size)), nn.Tanh() if activation == "tanh" else nn.ReLU()]
        width = size
    return nn.Sequential(*layers), width


def make_trunk(observation_space, network="small", hidden_sizes=(64, 64), standardize_frames=False, activation="tanh"):
    if len(observation_space.shape) == 3:
        return atari_trunk(network, standardize_frames)
    return mlp_trunk(int(np.prod(observation_space.shape)), hidden_sizes, activation)


class ObservationNorm(nn.Module):
    """(obs - mean) / std over every observation seen in training so far, clipped to [-10, 10].

    The statistics are a buffer, so they travel in the state_dict (model.pt, checkpoint.pt)
    and an evaluation sees what training saw. moments = [count, sum, sum of squares] per
    feature, in float64; it starts as one observation with mean 0 and variance 1, so an
    untrained normaliser is the identity. Workers add their observations' moments in place.
    """

    def __init__(self, shape):
        super().__init__()
        prior = torch.stack([torch.ones(shape), torch.zeros(shape), torch.ones(shape)])  # count, sum, sum of squares
        self.register_buffer("moments", prior.double())

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


@numba.njit(fastmath={"contract"}, error_model="numpy", cache=True)
def _rmsprop_pass(params, grad, square_avg, alpha, one_minus_alpha, eps, minus_lr):
    for i in range(params.size):
        g = grad[i]
        # Written in the order whose multiply-add the compiler fuses as torch's addcmul_ does: bit-identical results.
        square_avg[i] = one_minus_alpha * g * g + square_avg[i] * alpha
        params[i] = params[i] + minus_lr * g * (np.float32(1) / np.sqrt(square_avg[i] + eps))


def rmsprop_update(params, grad, square_avg, alpha, eps, lr):
    """square_avg <- alpha * square_avg + (1 - alpha) * grad^2, then params <- params - lr * grad /
    sqrt(square_avg + eps), in place on float32 buffers, element by element in one pass.

    It computes, to the bit, what these torch ops do in five passes over the buffers
    (tests/test_optimizers.py checks it):
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        params.addcmul_(grad, (square_avg + eps).rsqrt(), value=-lr)
    For the Atari network (680k parameters, 2.7 MB a buffer) it is a third of their time:
    each element is read and written once instead of streaming the buffers through the
    cache five times (docs/results.md, Speed). Compiled on first use, cached beside this file.
    """
    f32 = np.float32  # the scalars rounded to float32 as torch rounds them
    _rmsprop_pass(params.numpy(), grad.numpy(), square_avg.numpy(), f32(alpha), f32(1 - alpha), f32(eps), f32(-lr))
