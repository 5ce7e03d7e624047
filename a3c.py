"""A3C: asynchronous advantage actor-critic (Mnih et al. 2016, Algorithm S3). Docs and results: docs/a3c.md

    python a3c.py --env-id CartPole-v1                           # the vector preset: 20-40 s on 2 cores
    python a3c.py --env-id PongNoFrameskip-v4                    # the Atari preset, one worker per core
    python a3c.py --resume runs/<run>/checkpoint.pt              # continue an interrupted run
    python a3c.py --eval-only --checkpoint runs/<run>/model.pt   # evaluate, write eval.json

First the hyperparameters (Args, and PRESETS per family of environments); then, above the ruled line, what the
child processes run: the model, the shared optimizer, what the processes share, the worker, the evaluator, and
child() around both. Below it, the main process: the command line, the run directory, supervision of the
children, checkpoints and logs.
"""

import csv
import dataclasses
import importlib.metadata
import json
import os
import shutil
import signal
import sys
import time
import traceback
from collections import Counter, namedtuple
from dataclasses import dataclass
from multiprocessing import connection
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from common import (NormalizeReward, ObservationNorm, UsageError, env_family, flatten_parameters, frames_per_step,
                    is_atari, layer_init, make_env, make_trunk, rmsprop_update, start_on_random_play)

SCRIPT = "a3c.py"
SKIPS_IN_A_ROW_TO_STOP = 100  # a worker whose updates are all non-finite this many times stops the run


@dataclass
class Args:
    """A3C with Hogwild workers and shared RMSProp. Atari ids get the DQN preprocessing."""

    env_id: str = "PongNoFrameskip-v4"  # gymnasium id; Atari ids (`ALE/Pong-v5` too) get the DQN preprocessing
    num_workers: int = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    """actor-learner processes; the default is one per CPU core this process may use"""
    total_timesteps: int = 10_000_000  # T_max: env.step calls summed over all workers (one Atari step = 4 frames)
    seed: int = 1  # fixes the initial weights; each worker's and the evaluation's seeds derive from it
    learning_rate: float = 7e-4  # initial RMSProp rate, annealed linearly to 0 at T_max (the paper's authors' value)
    gamma: float = 0.99  # discount
    t_max: int = 5  # steps per worker segment before an update (Algorithm S3)
    gae_lambda: float = 1.0  # lambda of the lambda-return the advantages and value targets use (1: Algorithm S3's)
    entropy_coef: float = 0.01  # beta, the entropy bonus weight (Section 4; Supplement 9 used 1e-4 for Box actions)
    value_coef: float = 0.5  # weight of the value loss (R - V)^2; the paper does not state it
    optimizer: Literal["shared_rmsprop", "rmsprop", "momentum_sgd"] = "shared_rmsprop"
    """Supplement 7's optimizers: RMSProp with statistics shared by all workers or kept per worker, or momentum SGD
    with a momentum vector per worker; all step the shared parameters without locks"""
    rms_alpha: float = 0.99  # RMSProp decay of the squared-gradient average
    rms_eps: float = 0.1  # RMSProp epsilon, inside the square root
    momentum: float = 0.9  # momentum_sgd: m <- momentum * m + (1 - momentum) * grad (the paper does not state it)
    max_grad_norm: float = 40.0  # clip each worker's gradient to this global norm
    clip_per_network: bool = False  # Box: clip the policy's and the value network's gradients each on its own
    center_init: bool = False  # start hidden biases at minus their median on random play (images; not in the paper)
    standardize_frames: bool = False  # (frame - mean) / std measured on random play, not frame / 255 (not in the paper)
    network: str = "small"  # Atari trunk: `small` (the paper's 16-32-256 net) or `nature` (the 2015 DQN net)
    hidden_sizes: tuple[int, ...] = (64, 64)  # MLP trunk for vector observations (two with Box actions)
    activation: Literal["tanh", "relu"] = "tanh"  # after each layer of the MLP trunk
    lstm: bool = False  # A3C LSTM: an LSTM after the trunk, 256 cells on images, 128 on vectors (Supplements 8-9)
    state_independent_std: bool = False  # Box: one learned log std per action dimension (not in the paper)
    log_std_init: float = 0.0  # with --state-independent-std: the log std's starting value
    normalize_obs: bool = False  # standardise vector observations with running statistics of all workers
    normalize_reward: bool = False  # divide training rewards by a running std of the discounted return
    run_dir: str | None = None  # where the run writes everything (default runs/<env>__<exp-name>__<seed>__<time>)
    exp_name: str = SCRIPT[:-3]  # the experiment's name: in the default run directory and the W&B run's name
    eval_interval: int = 250_000  # evaluate every this many global steps, in a separate process
    eval_episodes: int = 10  # episodes per evaluation (whole games with real rewards on Atari)
    eval_greedy: bool = False  # act greedily in evaluation instead of sampling (a greedy policy can get stuck)
    eval_max_steps: int = 27_000  # cap on an evaluation episode in agent steps (27,000 = 30 minutes of Atari)
    stop_at_eval_return: float | None = None
    """end the run (checkpoint, final evaluation, exit 0) at the first periodic evaluation whose mean reaches this"""
    log_interval: float = 5.0  # seconds between rows of progress.csv
    checkpoint_interval: float = 300.0  # seconds between checkpoints
    max_worker_restarts: int = 3  # restart a failed worker (or the evaluator) this many times in all, then exit 1
    eval_only: bool = False  # evaluate --checkpoint, write eval.json and exit
    checkpoint: str | None = None  # model.pt or checkpoint.pt for --eval-only
    resume: str | None = None  # checkpoint.pt of a run to continue; flags not given again keep the run's values
    capture_video: bool = False  # record the final evaluation's episodes under <run-dir>/videos
    track: bool = False  # log to Weights & Biases too (pip install wandb; WANDB_MODE=offline needs no network)
    wandb_project_name: str = "async-rl"  # the W&B project, with --track
    wandb_entity: str | None = None  # the W&B team or user, with --track (default: your account's default)


# What each family of environments (common.env_family) changes in Args' defaults, the paper's Atari values; a flag
# given always wins. atari: the Pong screening in docs/atari.md (the paper's values did not learn Pong in 2.7M
# steps). vector (Discrete actions) and box (MuJoCo): budgets and schedules that fit these tasks, docs/presets.md.
PRESETS = {
    "atari": dict(learning_rate=2e-4, rms_eps=1e-5, entropy_coef=0.003, standardize_frames=True, center_init=True),
    "vector": dict(total_timesteps=100_000, learning_rate=7e-3, entropy_coef=0.0, normalize_reward=True,
                   eval_interval=10_000),
    "box": dict(total_timesteps=1_000_000, learning_rate=3e-4, rms_eps=1e-10, max_grad_norm=0.5, entropy_coef=0.0,
                state_independent_std=True, normalize_obs=True, normalize_reward=True, eval_greedy=True,
                eval_interval=50_000),
}


class Body(nn.Module):
    """An encoder, then with --lstm an LSTM whose state (h, c) the caller carries between calls."""

    def __init__(self, observation_space, args):
        super().__init__()
        self.trunk, width = make_trunk(observation_space, args.network, args.hidden_sizes, args.standardize_frames,
                                       args.activation)
        self.lstm = nn.LSTM(width, 256 if len(observation_space.shape) == 3 else 128) if args.lstm else None
        self.width = self.lstm.hidden_size if args.lstm else width

    def forward(self, obs, state):
        """obs: consecutive observations of one episode, (T, ...); state None means zeros."""
        hidden = self.trunk(obs)
        if self.lstm is None:
            return hidden, None
        hidden, state = self.lstm(hidden.unsqueeze(1), state)  # a sequence of T steps, batch of 1
        return hidden.squeeze(1), state


class ActorCritic(nn.Module):
    """pi(a|s; theta) and V(s; theta_v). Discrete actions: a softmax policy and a linear value sharing all other
    layers (Section 4). Box actions: a Gaussian policy, its mean from a linear layer and its variance from softplus
    of another (or, with --state-independent-std, from a parameter vector), and a value network sharing no
    parameters with it (Supplement 9; on the tanh MLP trunk, not the paper's 200 ReLUs: docs/a3c.md)."""

    def __init__(self, observation_space, action_space, args):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        self.state_independent_std = args.state_independent_std
        self.obs_norm = ObservationNorm(observation_space.shape) if args.normalize_obs else nn.Identity()
        self.body = Body(observation_space, args)
        if self.continuous:
            self.value_body = Body(observation_space, args)
            self.mean = layer_init(nn.Linear(self.body.width, action_space.shape[0]), std=0.01)
            if args.state_independent_std:  # log sigma starts at --log-std-init (the softplus head: variance 0.69)
                self.log_std = nn.Parameter(torch.full((action_space.shape[0],), args.log_std_init))
            else:
                self.variance = layer_init(nn.Linear(self.body.width, action_space.shape[0]), std=0.01)
        else:
            self.policy = layer_init(nn.Linear(self.body.width, action_space.n), std=0.01)  # near-uniform start
        self.value = layer_init(nn.Linear(self.body.width, 1), std=1.0)

    def forward(self, obs, state=None):
        """Policy (logits, or Gaussian mean and variance), V(s) and the next LSTM state."""
        obs = self.obs_norm(obs)
        if not self.continuous:
            hidden, state = self.body(obs, state)
            return self.policy(hidden), self.value(hidden).squeeze(-1), state
        policy_state, value_state = state or (None, None)
        hidden, policy_state = self.body(obs, policy_state)
        value_hidden, value_state = self.value_body(obs, value_state)
        mean = self.mean(hidden)
        variance = ((2 * self.log_std).exp().expand_as(mean) if self.state_independent_std
                    else F.softplus(self.variance(hidden)))
        return (mean, variance), self.value(value_hidden).squeeze(-1), (policy_state, value_state)


def sample_action(policy, continuous, greedy=False, generator=None):
    """a ~ pi(.|s) for each state: softmax or Gaussian; the most likely action when greedy."""
    if continuous:
        mean, variance = policy
        return mean if greedy else torch.normal(mean, variance.sqrt(), generator=generator)
    if greedy:
        return policy.argmax(-1)
    # Gumbel-max: argmax(logits + Gumbel noise) is a sample of softmax(logits), with a quarter of
    # torch.multinomial's cost for one state (it runs at every step); -log(Exp(1)) is Gumbel(0, 1).
    return (policy - torch.empty_like(policy).exponential_(generator=generator).log_()).argmax(-1)


def log_prob_and_entropy(policy, actions, continuous):
    """log pi(a_i|s_i) of the actions taken and the entropy H(pi(s_i)), per state."""
    if continuous:  # a diagonal Gaussian; H = 1/2 (log(2 pi sigma^2) + 1) per action dimension
        mean, variance = policy
        log_2pi_variance = torch.log(2 * torch.pi * variance)
        log_prob = -0.5 * ((actions - mean).pow(2) / variance + log_2pi_variance).sum(-1)
        return log_prob, 0.5 * (log_2pi_variance + 1).sum(-1)
    log_probs = F.log_softmax(policy, dim=-1)
    return log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1), -(log_probs.exp() * log_probs).sum(-1)


def env_action(action, action_space):
    """Gaussian samples are clipped to the bounds only on their way to the env: the loss uses the sample itself."""
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(action.numpy(), action_space.low, action_space.high)
    return action.item()


class SharedRMSprop:
    """Non-centred RMSProp (Section 4, Supplement 7): g <- alpha * g + (1 - alpha) * grad^2;
    theta <- theta - lr * grad / sqrt(g + eps). One g shared by all workers (--optimizer shared_rmsprop, the
    paper's choice); with one row per worker (rmsprop) each keeps its own g, still stepping the shared theta."""

    def __init__(self, params, alpha=0.99, eps=0.1, per_worker=False, num_workers=1):
        self.params, self.alpha, self.eps, self.per_worker = params, alpha, eps, per_worker
        # In shared memory before any worker starts: state made lazily on a worker's first step (as torch.optim
        # does) would be private to it, and checkpoint.pt could not keep it.
        self.state = torch.zeros(num_workers if per_worker else 1, params.numel()).share_memory_()

    def step(self, grad, lr, rank):
        # The worker's gradient is read here, never aliased into the shared model: since PyTorch 2, zero_grad()
        # sets .grad to None, which silently breaks the old trick of pointing the shared .grad at the local one.
        square_avg = self.state[rank if self.per_worker else 0]
        rmsprop_update(self.params, grad, square_avg, self.alpha, self.eps, lr)  # both lines above, in one pass


class MomentumSGD:
    """Supplement 7's momentum SGD (--optimizer momentum_sgd): each worker keeps its own m <- momentum * m +
    (1 - momentum) * grad and steps the shared theta <- theta - lr * m; m in shared memory, a row per worker."""

    def __init__(self, params, momentum, num_workers):
        self.params, self.momentum = params, momentum
        self.state = torch.zeros(num_workers, params.numel()).share_memory_()

    def step(self, grad, lr, rank):
        self.state[rank].mul_(self.momentum).add_(grad, alpha=1 - self.momentum)
        self.params.add_(self.state[rank], alpha=-lr)


class Shared:
    """What the processes share, in shared memory, read and written without locks (Hogwild): a process killed
    while holding a lock would leave the others waiting forever. params: theta and theta_v in one flat buffer
    (the main process's model is a view of it); optimizer: SharedRMSprop or MomentumSGD, with its statistics;
    obs_moments: with --normalize-obs, the sums behind the observation statistics; step_counts: T as one counter per
    worker, each written by its worker alone, on top of steps_before; stop: set by the main process."""

    def __init__(self, model, args, ctx):
        self.params = flatten_parameters(model)[0].share_memory_()
        per_worker = args.optimizer != "shared_rmsprop"  # statistics kept per worker, or one set for all
        self.optimizer = (MomentumSGD(self.params, args.momentum, args.num_workers) if args.optimizer == "momentum_sgd"
                          else SharedRMSprop(self.params, args.rms_alpha, args.rms_eps, per_worker, args.num_workers))
        self.obs_moments = model.obs_norm.moments.share_memory_() if args.normalize_obs else None
        self.step_counts = torch.zeros(args.num_workers, dtype=torch.int64).share_memory_()
        self.steps_before = 0  # T when this process started: the steps of the run it resumes
        self.stop = ctx.RawValue("b", False)

    def global_step(self):
        return self.steps_before + int(self.step_counts.sum())

    def state_dict(self):
        """What checkpoint.pt keeps besides the model's weights: T and the optimizer's statistics."""
        return {"global_step": self.global_step(), "optimizer_state": self.optimizer.state.clone()}

    def load_state_dict(self, state):
        """Set before the children start (they get a copy of steps_before)."""
        self.optimizer.state.copy_(state["optimizer_state"])
        self.steps_before = state["global_step"]

    def running(self, total_timesteps=float("inf")):
        """Until T >= T_max or the main process says stop, or dies without saying it: never train as an orphan."""
        return self.global_step() < total_timesteps and not self.stop.value and mp.parent_process().is_alive()

    def sync(self, model, params):
        """theta' <- theta, and the observation statistics, which stay fixed within a segment like theta'."""
        params.copy_(self.params)
        if self.obs_moments is not None:
            model.obs_norm.moments.copy_(self.obs_moments)


def lambda_returns(rewards, terminated, values, gamma, lam):
    """Algorithm S3's n-step returns when lam = 1: R = 0 at a terminal state, else V(s_t); then R <- r_i + gamma * R
    backwards. A truncated episode (time limit) is not terminal: it bootstraps from V like a cut segment. With
    lam < 1, R <- r_i + gamma * ((1 - lam) V(s_i+1) + lam R): R - V(s_i) is then the generalised advantage
    estimate (Schulman et al. 2016; not in the paper). values: V(s_t_start), ..., V(s_t)."""
    returns = np.empty(len(rewards), np.float32)
    R = next_value = 0.0 if terminated else values[-1]
    for i in reversed(range(len(rewards))):
        R = rewards[i] + gamma * ((1 - lam) * next_value + lam * R)
        returns[i], next_value = R, values[i]
    return returns


def actor_critic_loss(log_probs, entropy, returns, values, value_coef, entropy_coef):
    """Algorithm S3's accumulated gradients as one loss over a segment; returns (loss, policy, value parts). Its
    gradient is -sum_i [grad log pi(a_i|s_i) (R_i - V(s_i)) + beta grad H(pi(s_i))] for the policy, the
    advantage held constant (detached), plus value_coef * grad sum_i (R_i - V(s_i))^2 for the value."""
    advantages = returns - values
    policy_loss = -(log_probs * advantages.detach()).sum()
    value_loss = advantages.pow(2).sum()
    return policy_loss + value_coef * value_loss - entropy_coef * entropy.sum(), policy_loss, value_loss


Segment = namedtuple("Segment", "observations start_state actions rewards terminated")


def play(env, model, obs, state, t_max, messages):
    """Algorithm S3's inner loop from s_t_start = obs and the LSTM state: act with pi(a_t|s_t; theta') until
    terminal or t - t_start == t_max. Returns the segment, its observations ending with s_t (to bootstrap from),
    and the observation and LSTM state the next segment starts from."""
    start_state, observations, actions, rewards = state, [obs], [], []
    for _ in range(t_max):
        with torch.no_grad():  # not inference_mode: the LSTM state is reused under autograd
            policy, _, state = model(torch.from_numpy(obs).unsqueeze(0), state)
        actions.append(sample_action(policy, model.continuous)[0])
        obs, reward, terminated, truncated, info = env.step(env_action(actions[-1], env.action_space))
        observations.append(obs)
        rewards.append(reward)
        if "episode" in info:  # a whole game ended (not just a life): its real return and length
            messages.send(("episode", (float(info["episode"]["r"]), int(info["episode"]["l"]))))
        if terminated or truncated:
            obs, state = env.reset()[0], None  # a new episode starts from a zero LSTM state
            break
    return Segment(np.stack(observations), start_state, torch.stack(actions), rewards, terminated), obs, state


def segment_loss(model, segment, args):
    """R from V(s_t) (or 0) back to t_start, then the loss; one batched forward over the segment. The LSTM
    restarts from the segment's first state, which carries no graph: backpropagation through time stops there."""
    policy, values, _ = model(torch.from_numpy(segment.observations), segment.start_state)
    returns = lambda_returns(segment.rewards, segment.terminated, values.tolist(), args.gamma, args.gae_lambda)
    policy = policy[:-1] if not model.continuous else (policy[0][:-1], policy[1][:-1])
    log_probs, entropy = log_prob_and_entropy(policy, segment.actions, model.continuous)
    loss, policy_loss, value_loss = actor_critic_loss(log_probs, entropy, torch.from_numpy(returns), values[:-1],
                                                      args.value_coef, args.entropy_coef)
    return loss, {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.mean().item()}


def apply_gradient(loss, grads, optimizer, lr, max_grad_norm, rank, parts=(slice(None),)):
    """Backpropagate the loss into the worker's flat gradient buffer, clip it, and apply it. Returns False (and
    applies nothing) when the gradient is not finite: one NaN in the shared parameters would poison every worker.
    parts: the pieces of the buffer clipped each to max_grad_norm (the whole of it, or with --clip-per-network
    the policy's and the value network's)."""
    grads.zero_()  # explicit: zero_grad() would set .grad to None and break the flat views
    loss.backward()
    norms = [grads[part].norm().item() for part in parts]
    if not np.all(np.isfinite(norms)):
        return False
    for part, norm in zip(parts, norms, strict=True):
        if norm > max_grad_norm:
            grads[part] *= max_grad_norm / norm
    optimizer.step(grads, lr, rank)  # Algorithm S3: asynchronous update of theta using the gradient
    return True


def learning_rate_at(args, global_step):
    """The learning rate at global step T: the initial rate annealed linearly to 0 at T_max."""
    return args.learning_rate * max(0.0, 1.0 - global_step / args.total_timesteps)

def worker(rank, seed, args, shared, messages):
    """One actor-learner of Algorithm S3, as a process; `seed` is derive_seed(args.seed, rank, restarts).
    Sends its episodes and loss statistics on `messages` (child() lists the messages)."""
    torch.manual_seed(seed)
    env = make_env(args.env_id, training=True)
    if args.normalize_reward:  # wraps the episode statistics: the returns logged stay real
        env = NormalizeReward(env, gamma=args.gamma)
    model = ActorCritic(env.observation_space, env.action_space, args)  # theta', theta_v'
    params, grads = flatten_parameters(model)
    value = torch.cat([torch.full((p.numel(),), name.startswith("value")) for name, p in model.named_parameters()])
    parts = (~value, value) if args.clip_per_network else (slice(None),)  # what apply_gradient clips on its own
    obs, state = env.reset(seed=seed)[0], None  # the LSTM state (None: zeros), carried across segments
    stats, last_report, skips_in_a_row = Counter(), 0, 0
    while shared.running(args.total_timesteps):  # repeat ... until T > T_max
        shared.sync(model, params)  # synchronise theta' = theta, theta_v' = theta_v
        segment, obs, state = play(env, model, obs, state, args.t_max, messages)  # t_start = t; act
        if args.normalize_obs:  # Hogwild again: a lost addition only nudges a running mean
            shared.obs_moments.add_(ObservationNorm.moments_of(segment.observations[:-1]))
        loss, losses = segment_loss(model, segment, args)  # R; accumulate d theta, d theta_v
        shared.step_counts[rank] += len(segment.rewards)  # T <- T + 1 for each step (docs/a3c.md)
        step = shared.global_step()
        lr = learning_rate_at(args, step)
        applied = apply_gradient(loss, grads, shared.optimizer, lr, args.max_grad_norm, rank, parts)  # async update
        stats.update(losses if applied else {"skipped_updates": 1}, updates=int(applied))  # skipped: counted
        skips_in_a_row = 0 if applied else skips_in_a_row + 1
        if skips_in_a_row == SKIPS_IN_A_ROW_TO_STOP:  # the run has diverged: a restart cannot help
            raise FloatingPointError(f"{skips_in_a_row} updates in a row had a non-finite loss or gradient")
        if time.time() - last_report > 2.0:
            messages.send(("losses", dict(stats)))
            stats, last_report = Counter(), time.time()
    if mp.parent_process().is_alive():  # the last statistics, unless nobody is left to read them
        messages.send(("losses", dict(stats)))
    env.close()


def evaluate(model, env, num_episodes, greedy, seed):
    """Play whole episodes with real rewards; sample from the policy unless greedy."""
    generator = torch.Generator().manual_seed(seed)
    returns = []
    for episode in range(num_episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        episode_return, done, state = 0.0, False, None
        while not done:
            with torch.inference_mode():
                policy, _, state = model(torch.from_numpy(obs).unsqueeze(0), state)
            action = sample_action(policy, model.continuous, greedy, generator)[0]
            obs, reward, terminated, truncated, info = env.step(env_action(action, env.action_space))
            episode_return += reward
            done = terminated or truncated
            if info.get("life_lost"):  # as in training, where a lost life ends the episode: a zero LSTM state
                state = None
        returns.append(episode_return)
    return returns


def derive_seed(seed, *key):
    """The seed of one part of a run: key (rank, restarts) for a worker, () for the evaluation. SeedSequence
    hashes them, so runs with neighbouring seeds share no stream (with seed + rank, run 1's worker 1 would be
    run 2's worker 0)."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])


def child(target, messages, *args):
    """What every child process runs: target(*args, messages), deaf to Ctrl-C (the main process handles it and
    stops its children), with one BLAS thread (N processes x M threads would oversubscribe the cores). A child
    sends (kind, payload) on `messages`, its own pipe to the main process:
        ("episode", (return, length))  a whole game ended (the real, unclipped return);
        ("losses", Counter)            sums of the loss statistics over "updates" applied updates, and the count
                                       of "skipped_updates" (non-finite);
        ("eval", (step, returns))      an evaluation of the weights of global step `step`;
        ("error" or "diverged", traceback)  sent here if target raises (diverged: FloatingPointError); exit 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        target(*args, messages)
    except Exception as error:
        try:
            messages.send(("diverged" if isinstance(error, FloatingPointError) else "error", traceback.format_exc()))
        except OSError:  # the main process is gone
            pass
        sys.exit(1)


def evaluator(args, shared, messages):
    """Evaluate the shared model every eval_interval global steps, in its own process, on its own env."""
    env = make_env(args.env_id, training=False, max_episode_steps=args.eval_max_steps)
    model = ActorCritic(env.observation_space, env.action_space, args)
    params, _ = flatten_parameters(model)
    next_eval = (shared.global_step() // args.eval_interval + 1) * args.eval_interval
    while shared.running():
        if (step := shared.global_step()) < next_eval:
            time.sleep(0.05)
            continue
        shared.sync(model, params)
        returns = evaluate(model, env, args.eval_episodes, args.eval_greedy, derive_seed(args.seed))
        messages.send(("eval", (step, returns)))  # the step of the weights evaluated
        next_eval = (step // args.eval_interval + 1) * args.eval_interval


# =====================================================================================================================
# The main process: the command line, run directory, supervision of the processes, checkpoints, logs
# =====================================================================================================================


def parse_args():
    """Flags not given come from the env family's preset or, with --resume or --eval-only, from the checkpoint.
    Returns args, the checkpoint (or None) and where each value came from. --help shows the values that will run."""
    argv, fields = sys.argv[1:], [f.name for f in dataclasses.fields(Args)]
    args = tyro.cli(Args, args=[token for token in argv if token not in ("-h", "--help")])  # which env, which run
    given = {token[2:].split("=")[0].replace("-", "_").removeprefix("no_") for token in argv if token.startswith("--")}
    if args.eval_only and not args.checkpoint:
        raise UsageError("--eval-only needs --checkpoint PATH (a model.pt or checkpoint.pt)")
    path = args.resume or (args.checkpoint if args.eval_only else None)
    ckpt = load_checkpoint(path) if path else None
    if ckpt is None:
        family = env_family(args.env_id)
        changed, source = PRESETS.get(family, {}), f"{family} preset"
        origin = f"{args.env_id} (the {family} family)" if family else f"{args.env_id} (in no family)"
    else:  # everything from the checkpoint but what says which run this is
        changed = {k: v for k, v in ckpt["args"].items() if k in fields} | dict(
            run_dir=os.path.dirname(os.path.abspath(path)) if args.resume else None, resume=args.resume,
            eval_only=args.eval_only, checkpoint=args.checkpoint, capture_video=False)
        source, origin = "checkpoint", f"the run in {path}"
    args = tyro.cli(Args, args=argv, default=dataclasses.replace(Args(), **changed),
                    description=describe(origin, source, changed))
    unchanged = "default" if ckpt is None else "checkpoint"
    sources = {name: "command line" if name in given else source if name in changed else unchanged
               for name in fields}
    if ckpt is not None and args.resume and "optimizer_state" not in ckpt:
        raise UsageError(f"{path} holds weights only; resume from the run's checkpoint.pt")
    if ckpt is not None and args.env_id != ckpt["args"]["env_id"]:
        raise UsageError(f"{path} is for {ckpt['args']['env_id']}, not {args.env_id}")
    if ckpt is not None and args.activation != ckpt["args"].get("activation", "tanh"):  # same shapes, other net
        raise UsageError(f"{path} was trained with --activation {ckpt['args'].get('activation', 'tanh')}")
    if args.resume:  # the optimizer's statistics fit only the run's optimizer and, kept per worker, worker count
        written = (ckpt["args"]["optimizer"], len(ckpt["optimizer_state"]))
        if written != (args.optimizer, 1 if args.optimizer == "shared_rmsprop" else args.num_workers):
            raise UsageError(f"{path} holds {written[0]} statistics for {written[1]} worker(s): resume with the "
                             "--optimizer and --num-workers it was trained with")
    if args.track:  # the optional dependency, checked before anything is written
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError("--track logs to Weights & Biases, which is not installed: pip install wandb==0.31.0, "
                             "or leave out --track") from None
    for name in ("num_workers", "total_timesteps", "t_max", "eval_interval", "eval_episodes", "eval_max_steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.max_worker_restarts < 0:
        raise UsageError(f"--max-worker-restarts must be 0 or more, got {args.max_worker_restarts}")
    if args.normalize_obs and is_atari(args.env_id):
        set_by = "" if sources["normalize_obs"] == "command line" else f" (set by the {sources['normalize_obs']})"
        raise UsageError(f"--normalize-obs{set_by} is for vector observations; {args.env_id} has images")
    if not 0 <= args.gae_lambda <= 1:
        raise UsageError(f"--gae-lambda must be between 0 and 1, got {args.gae_lambda}")
    if "log_std_init" in given and not args.state_independent_std:
        raise UsageError("--log-std-init sets the log std of --state-independent-std, which this run does not use")
    if not 0 <= args.seed < 2**63:  # SeedSequence takes no negative seed, torch.manual_seed nothing from 2**63 up
        raise UsageError(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    if not (np.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning-rate must be a positive number, got {args.learning_rate}")
    return args, ckpt, sources


def describe(origin, source, changed):
    """--help's text: the defaults it shows are the values that will run; which of them the preset (or the
    checkpoint) set, and every family's preset."""
    def flag(name, value):
        switch = f"--{'no-' if value is False else ''}{name.replace('_', '-')}"
        typed = " ".join(map(str, value)) if isinstance(value, tuple) else value  # a tuple as typed: --flag 1 2
        return switch if isinstance(value, bool) else f"{switch} {typed}"
    shown = {name: value for name, value in changed.items()  # what differs from the defaults, but which run it is
             if getattr(Args(), name) != value and name not in ("run_dir", "resume", "eval_only", "checkpoint")}
    lines = [Args.__doc__, "", f"The defaults below are the values that will run for {origin}" + (
        f"; these come from the {source}:" if shown else ": the script's own defaults.")]
    lines += [f"  {flag(name, value)}" for name, value in shown.items()]
    lines += ["", "The script's own defaults are the paper's values where it states them. What each family's preset "
              "changes (a flag given always wins; --no-<flag> turns a switch off):"]
    lines += [f"  {family}: " + (" ".join(flag(k, v) for k, v in preset.items()) or "nothing, the paper's values")
              for family, preset in PRESETS.items()]
    return "\n".join(lines + ["", "Add --env-id ID (or --resume PATH) to --help to see another env's values."])


def load_checkpoint(path):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise UsageError(f"cannot read checkpoint {path}: {error.strerror}") from None
    except Exception:  # torch's own message would suggest weights_only=False, which runs any code the file holds
        raise UsageError(f"cannot read checkpoint {path}: it is not a model.pt or checkpoint.pt of {SCRIPT}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise UsageError(f"{path} is not a checkpoint or model file written by this project")
    if ckpt.get("script") != SCRIPT:
        raise UsageError(f"{path} was written by {ckpt.get('script')}, not {SCRIPT}")
    return ckpt


def build_model(args, ckpt=None):
    """The model for args.env_id: with the checkpoint's weights if one is given, else seeded and initialised."""
    env = make_env(args.env_id, training=False)
    if not isinstance(env.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise UsageError(f"{args.env_id} has a {type(env.action_space).__name__} action space; "
                         "a3c.py supports Discrete and Box action spaces")
    model = ActorCritic(env.observation_space, env.action_space, args)
    if args.clip_per_network and not model.continuous:
        raise UsageError("--clip-per-network is for Box actions, whose policy and value networks share no "
                         f"parameters; {args.env_id} has Discrete actions")
    if ckpt is None:  # a checkpoint's weights are never re-initialised
        start_on_random_play(model.body.trunk, env, args.seed, args.standardize_frames, args.center_init)
    env.close()
    try:
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
    except RuntimeError as error:
        raise UsageError(f"the checkpoint does not fit this network ({str(error).splitlines()[1].strip()}); pass "
                         "the --network / --hidden-sizes / --state-independent-std it was trained with") from None
    return model


def make_run_dir(args, sources):
    """The run's own directory, with config.json; sets args.run_dir. --eval-only gets one of its own too: it
    never writes into the training run it evaluates."""
    kind = "eval__" if args.eval_only else ""
    args.run_dir = args.run_dir or (f"runs/{args.env_id.replace('/', '_')}__{args.exp_name}__{kind}{args.seed}__"
                                    f"{int(time.time())}")
    held = any(os.path.exists(os.path.join(args.run_dir, name)) for name in ("progress.csv", "eval.json"))
    if held and not args.resume:  # never mix two runs' data, nor replace a run's results
        resume = "" if args.eval_only else f"continue it with --resume {args.run_dir}/checkpoint.pt, or "
        raise UsageError(f"{args.run_dir} already holds a run: {resume}choose another --run-dir")
    versions = {name: importlib.metadata.version(name) for name in ("torch", "gymnasium", "ale_py", "mujoco")}
    try:
        os.makedirs(args.run_dir, exist_ok=True)
        with open(os.path.join(args.run_dir, "config.json"), "w") as f:
            json.dump({**dataclasses.asdict(args), "sources": sources,
                       "versions": {"python": sys.version.split()[0], **versions}}, f, indent=2)
    except OSError as error:
        raise UsageError(f"cannot write the run directory {args.run_dir}: {error.strerror}") from None
    return args.run_dir


def remove_run_files(run_dir):
    """What a run writes before its first update (config.json, progress.csv, the TensorBoard file), and the
    directory if nothing else is in it: a run interrupted then leaves nothing that looks like a run."""
    for name in os.listdir(run_dir):
        if name in ("config.json", "progress.csv") or name.startswith("events.out.tfevents"):
            os.remove(os.path.join(run_dir, name))
        elif name == "wandb":  # --track's offline files
            shutil.rmtree(os.path.join(run_dir, name))
    if not os.listdir(run_dir):
        os.rmdir(run_dir)


class RunFailed(Exception):
    """A process failed and could not be restarted: checkpoint.pt is saved and the script exits 1."""


class RunDiverged(RunFailed):
    """A worker's updates stayed non-finite: the model may have gone bad, so the last periodic checkpoint stays."""


class Processes:
    """The workers and, as the last rank, the evaluator. Each sends its messages on its own pipe: a process
    killed while writing can corrupt only its own pipe, and holds no lock that another could wait on."""

    def __init__(self, args, shared, ctx):
        self.args, self.shared, self.ctx, self.restarts, self.errors = args, shared, ctx, 0, {}
        self.names = [f"worker {rank}" for rank in range(args.num_workers)] + ["the evaluator"]
        started = [self.start(rank) for rank in range(args.num_workers + 1)]
        self.processes, self.pipes = [process for process, _ in started], [pipe for _, pipe in started]

    def start(self, rank):
        receiver, sender = self.ctx.Pipe(duplex=False)
        if rank < self.args.num_workers:  # a restarted worker gets a new seed: it does not replay its predecessor
            seed = derive_seed(self.args.seed, rank, self.restarts)
            process = self.ctx.Process(target=child, args=(worker, sender, rank, seed, self.args, self.shared),
                                       daemon=True)
        else:
            process = self.ctx.Process(target=child, args=(evaluator, sender, self.args, self.shared), daemon=True)
        # Ctrl-C goes to every process of the terminal's group: a child still importing torch would die of it,
        # traceback and all. An ignored signal stays ignored in the child, so it starts deaf to Ctrl-C.
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        process.start()
        signal.signal(signal.SIGINT, handler)
        sender.close()  # the child holds the only writer: its death closes the pipe
        return process, receiver

    def receive(self, timeout):
        """(rank, kind, payload) of every message waiting, after up to `timeout` s for one; then restarts the
        processes that died, up to --max-worker-restarts times in all, or raises RunFailed."""
        dead = [rank for rank, process in enumerate(self.processes) if process.exitcode not in (None, 0)]
        messages = []  # read after looking for the dead: what a process sent before it died is in its pipe now
        for pipe in connection.wait([pipe for pipe in self.pipes if not pipe.closed], timeout):
            try:
                while pipe.poll():
                    messages.append((self.pipes.index(pipe), *pipe.recv()))
            except (EOFError, OSError):  # its process has exited: nothing more will come
                pipe.close()
        self.errors |= {rank: (kind, trace) for rank, kind, trace in messages if kind in ("error", "diverged")}
        for rank in dead:
            kind, trace = self.errors.pop(rank, (None, None))
            exitcode = self.processes[rank].exitcode
            cause = (f"failed: {trace.strip().splitlines()[-1]}" if trace else f"exited with code {exitcode}"
                     if exitcode > 0 else f"was killed by {signal.Signals(-exitcode).name}")
            if kind == "diverged":
                raise RunDiverged(f"{self.names[rank]} stopped the run: {cause}")
            if self.restarts == self.args.max_worker_restarts:
                raise RunFailed(f"{self.names[rank]} {cause}, after {self.restarts} restarts (--max-worker-restarts "
                                f"{self.restarts})" + (f"\n{trace.rstrip()}" if trace else ""))
            self.restarts += 1
            tqdm.write(f"{SCRIPT}: warning: {self.names[rank]} {cause}; restarted it from the shared model "
                       f"(restart {self.restarts} of {self.args.max_worker_restarts})", file=sys.stderr)
            self.processes[rank], self.pipes[rank] = self.start(rank)
        return messages

    def finished(self):
        return all(process.exitcode == 0 for process in self.processes[:-1])  # every worker reached T_max

    def stop(self):
        """Workers get 5 s to finish their segment, the evaluator (maybe mid-game) 0.5 s; then they are killed."""
        self.shared.stop.value = True
        deadline = time.time() + 5
        for process in self.processes:
            process.join(timeout=max(0.0, deadline - time.time()) if process is not self.processes[-1] else 0.5)
            if process.is_alive():
                process.kill()
                process.join()


class Progress:
    """progress.csv, TensorBoard and the progress bar: what the processes sent, a row per --log-interval and per
    evaluation (logged at the step of the weights it evaluated), each over an interval in which the workers stepped."""

    COLUMNS = {  # progress.csv column: TensorBoard key (CleanRL's names)
        "global_step": None, "frames": "charts/frames", "seconds": None, "sps": "charts/SPS",
        "episodic_return": "charts/episodic_return", "eval_return_mean": "eval/return_mean",
        "eval_return_std": "eval/return_std", "eval_global_step": None, "learning_rate": "charts/learning_rate",
        "episodic_length": "charts/episodic_length", "policy_loss": "losses/policy_loss",
        "value_loss": "losses/value_loss", "entropy": "losses/entropy", "skipped_updates": "losses/skipped_updates"}

    def __init__(self, run_dir, args, sources, global_step, seconds, max_entropy=None, wandb_id=None):
        path, columns = os.path.join(run_dir, "progress.csv"), list(self.COLUMNS)
        if os.path.exists(path):  # a resumed run appends under the header its file has
            with open(path) as f:
                columns = next(csv.reader(f), None) or columns
        self.file = open(path, "a", newline="")
        self.csv = csv.DictWriter(self.file, columns, extrasaction="ignore")
        if self.file.tell() == 0:
            self.csv.writeheader()
        self.args, self.frames_per_step = args, frames_per_step(args.env_id)  # frames = steps x the frame skip
        self.wandb = None
        if args.track:  # before the writer: W&B then mirrors the TensorBoard scalars under the same keys
            import wandb
            wandb.tensorboard.patch(root_logdir=run_dir, save=False)
            self.wandb = wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, dir=run_dir,
                                    name=f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}", id=wandb_id,
                                    resume="allow", config=dataclasses.asdict(args), save_code=True)  # resumed: same id
        self.writer = SummaryWriter(run_dir)
        self.writer.add_text("hyperparameters", "| flag | value | from |\n|---|---|---|\n" + "\n".join(
            f"| --{name.replace('_', '-')} | {value} | {sources[name]} |" for name, value in vars(args).items()))
        # One speed on the bar, the sps that progress.csv logs: tqdm's own rate (step/s) is left out of the format.
        self.bar = tqdm(total=args.total_timesteps, initial=min(global_step, args.total_timesteps), unit="step",
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self.episodes, self.losses, self.evaluation, self.skipped, self.reached = [], Counter(), None, 0, False
        self.last_seconds, self.last_step, self.sps, self.clock = seconds, global_step, None, None
        self.max_entropy, self.low_entropy_since = max_entropy, None  # for watch_entropy()
        self.first_return = self.last_return = None  # training returns: the first row's and the latest

    def record(self, rank, kind, payload):
        """Keep a message for the next row: an episode's (return, length), loss sums, an evaluation (step, returns)."""
        if kind == "episode":
            self.episodes.append(payload)
        elif kind == "losses":
            self.losses.update(payload)
        elif kind == "eval":
            self.evaluation, (step, returns) = payload, payload
            target = self.args.stop_at_eval_return
            self.reached = target is not None and np.mean(returns) >= target
            reached = f"; reached --stop-at-eval-return {target}" if self.reached else ""
            tqdm.write(f"{SCRIPT}: evaluation of step {step}: {np.mean(returns):.2f} +- {np.std(returns):.2f} over "
                       f"{len(returns)} episodes{reached}")

    def log(self, step, seconds, force=False):
        """A row of what came in since the last, once the workers have stepped since it and --log-interval has
        passed or an evaluation came in."""
        self.bar.update(min(step, self.bar.total) - self.bar.n)
        if self.clock is None and step > self.last_step and not force:
            # The workers' first steps start the clock of sps: their start-up (each imports torch) is no speed.
            self.clock, self.last_seconds, self.last_step = (seconds, step), seconds, step
            return
        due = seconds - self.last_seconds >= self.args.log_interval or self.evaluation is not None
        if not force and (step == self.last_step or not due):
            return
        # sps over at least --log-interval since it was last measured; a row soon after another (an evaluation,
        # or the last row, while the workers stop) shows the speed measured before it.
        since, at_step = self.clock or (self.last_seconds, self.last_step)
        if step > at_step and (seconds - since >= self.args.log_interval or self.sps is None):
            self.sps, self.clock = (step - at_step) / (seconds - since), (seconds, step)
        updates, self.skipped = self.losses.pop("updates", 0), self.skipped + self.losses.pop("skipped_updates", 0)
        losses = {key: sum_ / updates for key, sum_ in self.losses.items() if updates}
        returns, lengths = zip(*self.episodes, strict=True) if self.episodes else (None, None)
        evaluated_at, evaluation = self.evaluation or (None, None)
        self.row(global_step=step, seconds=seconds, sps=self.sps,
                 episodic_return=returns and np.mean(returns), episodic_length=lengths and np.mean(lengths),
                 eval_global_step=evaluated_at, eval_return_mean=evaluation and np.mean(evaluation),
                 eval_return_std=evaluation and np.std(evaluation),
                 learning_rate=learning_rate_at(self.args, step),
                 skipped_updates=self.skipped, **losses)
        if "entropy" in losses:
            self.watch_entropy(step, losses["entropy"], returns and np.mean(returns))
        self.episodes, self.losses, self.evaluation = [], Counter(), None
        self.last_seconds, self.last_step = seconds, step

    def last(self, step, seconds, final_returns=None):
        """The last row, whatever the time: with the final evaluation, or after an interruption or a failure."""
        if final_returns is not None:
            if self.evaluation is not None:  # a periodic one not written yet: its own row first
                self.log(step, seconds, force=True)
            self.evaluation = (step, final_returns)
        self.log(step, seconds, force=True)

    def watch_entropy(self, step, entropy, mean_return):
        """Warn once if, in the first half of training, the policy's entropy stays below a tenth of its maximum
        for T_max / 20 steps while its training returns (mean_return, this row's; None if no episode ended) are no
        better than in the first row by a tenth: it has all but stopped exploring before it learned, and without
        an entropy bonus it seldom starts again (Acrobot-v1, vector preset with --no-normalize-reward: 0.02 of 1.10
        from 15k steps on, -500 throughout). Brief dips, which recover (CartPole-v1 with 4-16 workers in its first
        2k steps), and a policy sure of what it learned (Acrobot-v1 with the vector preset) do not count."""
        if self.max_entropy is None:  # Box actions (a Gaussian has no maximum), or warned already
            return
        if mean_return is not None:
            self.first_return = mean_return if self.first_return is None else self.first_return
            self.last_return = mean_return
        learned = self.first_return is not None and (
            self.last_return > self.first_return + 0.1 * abs(self.first_return))
        low = entropy < 0.1 * self.max_entropy and step < self.args.total_timesteps / 2 and not learned
        self.low_entropy_since = (step if self.low_entropy_since is None else self.low_entropy_since) if low else None
        if low and step - self.low_entropy_since >= self.args.total_timesteps / 20:
            tqdm.write(f"{SCRIPT}: warning: the policy's entropy has stayed below a tenth of its maximum "
                       f"({entropy:.3g} of {self.max_entropy:.3g}) since step {self.low_entropy_since}: it has all "
                       f"but stopped exploring. A larger --entropy-coef (now {self.args.entropy_coef}) keeps it "
                       "exploring", file=sys.stderr)
            self.max_entropy = None  # once

    def row(self, **values):
        """Write one row; a value that is None (not known yet) is an empty cell."""
        values = {key: value for key, value in values.items() if value is not None}
        values["frames"] = values["global_step"] * self.frames_per_step
        self.csv.writerow({key: f"{value:.6g}" if isinstance(value, float) else value for key, value in values.items()})
        self.file.flush()
        for key, value in values.items():
            if self.COLUMNS[key]:  # an evaluation at the step of the weights it evaluated
                step = values["eval_global_step"] if key.startswith("eval_") else values["global_step"]
                self.writer.add_scalar(self.COLUMNS[key], value, step)
        self.bar.set_postfix({key: f"{values[key]:.4g}" for key in ("sps", "episodic_return", "eval_return_mean")
                              if key in values})

    def close(self, exit_code=0):
        self.bar.close()  # closed already where a line was printed after it: a no-op then
        self.writer.close()
        if self.wandb is not None:  # after the writer, whose last scalars it syncs; a failed run is marked so
            import wandb
            self.wandb.finish(exit_code=exit_code)
            wandb.tensorboard.unpatch()  # a later writer in this process is not W&B's
        self.file.close()


def save_atomic(obj, path):
    """Write to a temporary file, flush it to disk, then rename: a crash never leaves half a file."""
    with open(f"{path}.tmp", "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f"{path}.tmp", path)


def record_signals():
    """SIGINT and SIGTERM from now on only recorded, in the list returned; train()'s loop notices them within
    0.2 s. Raising from the handler could interrupt TensorBoard's writer while it holds a lock."""
    received = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    return received


def train(args, ckpt, sources):
    torch.manual_seed(args.seed)  # the initial weights: two runs with one seed start from the same theta
    model = build_model(args, ckpt)  # first: bad input must not touch the run directory
    received = record_signals()  # from here on, Ctrl-C ends the run with its checkpoint
    run_dir = make_run_dir(args, sources)
    print(f"{SCRIPT}: resuming {run_dir} at step {ckpt['global_step']}" if ckpt else f"{SCRIPT}: writing to {run_dir}",
          flush=True)
    # A server process imports this script once and forks every child from there: a child starts without importing
    # torch again (spawn's cost), and is never forked from this process, whose torch thread pools make fork unsafe.
    ctx = mp.get_context("forkserver")
    shared = Shared(model, args, ctx)
    if ckpt is not None:  # the model's own state (observation statistics included) came with build_model
        shared.load_state_dict(ckpt)
    start = time.time() - (ckpt["seconds"] if ckpt else 0.0)

    def checkpoint(name):  # checkpoint.pt: all a resume needs; model.pt: the weights
        state = {"script": SCRIPT, "args": dataclasses.asdict(args), "global_step": shared.global_step(),
                 "seconds": time.time() - start, "model": model.state_dict()}
        if name == "checkpoint.pt":
            state |= shared.state_dict() | {"wandb_id": progress.wandb and progress.wandb.id}
        save_atomic(state, os.path.join(run_dir, name))

    max_entropy = None if model.continuous else float(np.log(model.policy.out_features))  # a uniform policy's
    progress = Progress(run_dir, args, sources, shared.global_step(), time.time() - start, max_entropy,
                        (ckpt or {}).get("wandb_id"))
    processes, last_checkpoint, failure = Processes(args, shared, ctx), time.time(), None
    try:
        while not received and not processes.finished() and not progress.reached:
            for message in processes.receive(timeout=0.2):  # and restarts the dead
                progress.record(*message)
            progress.log(shared.global_step(), time.time() - start)
            if time.time() - last_checkpoint >= args.checkpoint_interval:
                checkpoint("checkpoint.pt")
                last_checkpoint = time.time()
    except RunFailed as error:
        failure = error
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break the cleanup
            signal.signal(signum, signal.SIG_IGN)
        processes.stop()
    step, seconds = shared.global_step(), time.time() - start
    progress.bar.close()  # first: on a terminal, a line printed below an open bar is glued to it
    if failure is not None or received:
        code = 1 if failure else 128 + received[0]  # 130 for SIGINT, 143 for SIGTERM
        progress.last(step, seconds)
        progress.close(code)
        if isinstance(failure, RunDiverged):  # the model may have gone bad: keep the last periodic checkpoint instead
            outcome = f"{failure}\nthe last good checkpoint (if one was written) is in {run_dir}"
        elif received and ckpt is None and step == 0:  # nothing learned: leave nothing that looks like a run
            remove_run_files(run_dir)
            outcome = f"interrupted before the first update: nothing to save, removed what it wrote in {run_dir}"
        else:
            checkpoint("checkpoint.pt")
            outcome = (f"{failure}\ncheckpoint saved in {run_dir}; continue with --resume" if failure else
                       f"interrupted at step {step}; checkpoint saved in {run_dir}")
        print(f"{SCRIPT}: {outcome}", file=sys.stderr)
        return code
    checkpoint("checkpoint.pt")
    checkpoint("model.pt")
    progress.last(step, seconds, final_evaluation(args, model, run_dir, step)["returns"])
    progress.close()
    return 0


def final_evaluation(args, model, run_dir, global_step):
    """Evaluate `model` (recording videos with --capture-video) and write eval.json."""
    video_dir = os.path.join(run_dir, "videos") if args.capture_video else None
    env = make_env(args.env_id, training=False, max_episode_steps=args.eval_max_steps, video_dir=video_dir)
    returns = evaluate(model, env, args.eval_episodes, args.eval_greedy, derive_seed(args.seed))
    env.close()
    result = {"env_id": args.env_id, "global_step": global_step, "returns": returns,
              "mean": float(np.mean(returns)), "std": float(np.std(returns)), "greedy": args.eval_greedy}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"eval mean {result['mean']:.2f} +- {result['std']:.2f} over {len(returns)} episodes; wrote {f.name}")
    return result


def main():
    torch.set_num_threads(1)
    args, ckpt, sources = parse_args()
    if not args.eval_only:
        return train(args, ckpt, sources)
    model = build_model(args, ckpt)
    final_evaluation(args, model, make_run_dir(args, sources), ckpt["global_step"])  # a directory of its own
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as error:
        print(f"{SCRIPT}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save
        sys.exit(130)
