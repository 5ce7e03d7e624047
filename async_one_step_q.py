"""Asynchronous one-step Q-learning (Mnih et al. 2016, Algorithm 1). Docs and results: docs/value_based.md

    python async_one_step_q.py --env-id CartPole-v1                           # the vector preset
    python async_one_step_q.py --env-id PongNoFrameskip-v4                    # the paper's values, all cores
    python async_one_step_q.py --resume runs/<run>/checkpoint.pt              # continue an interrupted run
    python async_one_step_q.py --eval-only --checkpoint runs/<run>/model.pt   # evaluate, write eval.json

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
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from common import (NormalizeReward, UsageError, env_family, flatten_parameters, frames_per_step, layer_init, make_env,
                    make_trunk, rmsprop_update, start_on_random_play)

SCRIPT = "async_one_step_q.py"
SKIPS_IN_A_ROW_TO_STOP = 100  # a worker whose updates are all non-finite this many times stops the run


@dataclass
class Args:
    """Async one-step Q-learning with Hogwild workers and shared RMSProp. Atari ids get the DQN preprocessing."""

    env_id: str = "PongNoFrameskip-v4"  # gymnasium id; Atari ids (`ALE/Pong-v5` too) get the DQN preprocessing
    num_workers: int = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    """actor-learner processes; the default is one per CPU core this process may use"""
    total_timesteps: int = 10_000_000  # T_max: env.step calls summed over all workers (one Atari step = 4 frames)
    seed: int = 1  # fixes the initial weights; each worker's and the evaluation's seeds derive from it
    learning_rate: float = 7e-4  # initial RMSProp rate, annealed linearly to 0 at T_max (the paper's authors' value)
    gamma: float = 0.99  # discount
    t_max: int = 5  # I_AsyncUpdate: steps whose gradients a worker accumulates before an update (Algorithm 1)
    target_update_interval: int = 10_000  # I_target: refresh theta^- every this many global steps (40,000 frames)
    epsilon_anneal_steps: int = 1_000_000  # anneal each worker's epsilon from 1 over this many global steps
    epsilon_finals: tuple[float, ...] = ()  # the workers' final epsilons, in turn (none: the paper's distribution)
    optimizer: Literal["shared_rmsprop", "rmsprop", "momentum_sgd"] = "shared_rmsprop"
    """Supplement 7's optimizers: RMSProp with statistics shared by all workers or kept per worker, or momentum SGD
    with a momentum vector per worker; all step the shared parameters without locks"""
    rms_alpha: float = 0.99  # RMSProp decay of the squared-gradient average
    rms_eps: float = 0.1  # RMSProp epsilon, inside the square root
    momentum: float = 0.9  # momentum_sgd: m <- momentum * m + (1 - momentum) * grad (the paper does not state it)
    max_grad_norm: float = 40.0  # clip each worker's gradient to this global norm
    center_init: bool = False  # start hidden biases at minus their median on random play (images; not in the paper)
    standardize_frames: bool = False  # (frame - mean) / std measured on random play, not frame / 255 (not in the paper)
    network: str = "small"  # Atari trunk: `small` (the paper's 16-32-256 net) or `nature` (the 2015 DQN net)
    hidden_sizes: tuple[int, ...] = (64, 64)  # MLP trunk for vector observations
    activation: Literal["tanh", "relu"] = "tanh"  # after each layer of the MLP trunk
    normalize_reward: bool = False  # divide training rewards by a running std of the discounted return
    run_dir: str | None = None  # where the run writes everything (default runs/<env>__<exp-name>__<seed>__<time>)
    exp_name: str = SCRIPT[:-3]  # the experiment's name: in the default run directory and the W&B run's name
    eval_interval: int = 250_000  # evaluate every this many global steps, in a separate process
    eval_episodes: int = 10  # episodes per evaluation (whole games with real rewards on Atari)
    eval_epsilon: float = 0.05  # epsilon of the epsilon-greedy evaluation policy (a small one, as in DQN's)
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
# given always wins. atari: the n-step Q Pong screening in docs/atari.md (standardised frames and epsilon annealed
# over 250k steps, not 1M, mattered most). vector (Discrete actions): a budget and schedules that fit classic
# control, where epsilon annealed over 4M frames would still act at random at the end, and 20-step segments (with
# the paper's 5, 1-3 of 5 CartPole seeds ended below 400 in 250k-300k steps), with rewards scaled (without, Acrobot
# stayed near -440); docs/presets.md.
PRESETS = {
    "atari": dict(learning_rate=2e-4, rms_eps=1e-5, epsilon_anneal_steps=250_000, epsilon_finals=(0.01, 0.1),
                  standardize_frames=True, center_init=True),
    "vector": dict(total_timesteps=300_000, learning_rate=2e-3, t_max=20, target_update_interval=500,
                   epsilon_anneal_steps=20_000, normalize_reward=True, eval_interval=10_000),
}


class QNetwork(nn.Module):
    """Q(s, .; theta): one linear output per action on the trunk (Supplement 8)."""

    def __init__(self, observation_space, num_actions, args):
        super().__init__()
        self.trunk, width = make_trunk(observation_space, args.network, args.hidden_sizes, args.standardize_frames,
                                       args.activation)
        self.q = layer_init(nn.Linear(width, num_actions), std=1.0)

    def forward(self, obs):
        return self.q(self.trunk(obs))


def act(model, obs, epsilon, rng):
    """Epsilon-greedy with respect to Q(s, .): a random action with probability epsilon."""
    if rng.random() < epsilon:
        return int(rng.integers(model.q.out_features))
    with torch.inference_mode():
        return model(torch.from_numpy(obs).unsqueeze(0)).argmax().item()


EPSILON_FINALS, EPSILON_PROBABILITIES = (0.01, 0.1, 0.5), (0.3, 0.4, 0.3)  # Supplement 8


def epsilon_final_for(rank, num_workers, chosen=()):
    """Each worker explores differently: worker `rank` of N takes the (rank + 1/2) / N quantile of the
    paper's distribution of final epsilons, so that the N workers span it (16 workers: 5 at 0.01, 6 at 0.1,
    5 at 0.5; 2 workers: 0.01 and 0.5). The paper draws each worker's at random, which with few workers can
    leave them all at 0.5 or all at 0.01; docs/presets.md. `chosen` (--epsilon-finals; the Atari preset's 0.01 0.1,
    docs/atari.md) replaces the distribution: worker `rank` takes chosen[rank mod its length]."""
    if chosen:
        return chosen[rank % len(chosen)]
    quantile = (rank + 0.5) / num_workers
    return EPSILON_FINALS[int(np.searchsorted(np.cumsum(EPSILON_PROBABILITIES), quantile, side="right"))]


def exploration_rng(seed):
    """The epsilon-greedy draws of a worker or an evaluation given `seed`, a stream of their own: env.reset(seed=seed)
    draws from np.random.default_rng(seed), and sharing it would tie the exploration to the initial states
    (CartPole's first state is that stream's first four draws)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def epsilon_at(global_step, epsilon_final, anneal_steps):
    """Linear from 1 to epsilon_final over the first anneal_steps global steps, then constant."""
    return epsilon_final + (1.0 - epsilon_final) * max(0.0, 1.0 - global_step / anneal_steps)


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
    while holding a lock would leave the others waiting forever. params: theta in one flat buffer (the main
    process's model is a view of it); target_params: theta^-; target_step: the global step of the interval
    boundary at which theta^- was last refreshed (refresh_target); optimizer: SharedRMSprop or MomentumSGD, with
    its statistics; step_counts: T as one counter per worker, each written by its worker alone, on top of
    steps_before; stop: set at the end."""

    def __init__(self, model, args, ctx):
        self.params = flatten_parameters(model)[0].share_memory_()
        self.target_params, self.target_step = self.params.clone().share_memory_(), ctx.RawValue("q", 0)
        per_worker = args.optimizer != "shared_rmsprop"  # statistics kept per worker, or one set for all
        self.optimizer = (MomentumSGD(self.params, args.momentum, args.num_workers) if args.optimizer == "momentum_sgd"
                          else SharedRMSprop(self.params, args.rms_alpha, args.rms_eps, per_worker, args.num_workers))
        self.step_counts = torch.zeros(args.num_workers, dtype=torch.int64).share_memory_()
        self.steps_before = 0  # T when this process started: the steps of the run it resumes
        self.stop = ctx.RawValue("b", False)

    def global_step(self):
        return self.steps_before + int(self.step_counts.sum())

    def state_dict(self):
        """What checkpoint.pt keeps besides the model's weights: T, the optimizer's statistics and theta^-."""
        return {"global_step": self.global_step(), "optimizer_state": self.optimizer.state.clone(),
                "target_params": self.target_params.clone(), "target_step": self.target_step.value}

    def load_state_dict(self, state):
        """Set before the children start (they get a copy of steps_before)."""
        self.optimizer.state.copy_(state["optimizer_state"])
        self.target_params.copy_(state["target_params"])
        self.steps_before, self.target_step.value = state["global_step"], state["target_step"]

    def running(self, total_timesteps=float("inf")):
        """Until T >= T_max or the main process says stop, or dies without saying it: never train as an orphan."""
        return self.global_step() < total_timesteps and not self.stop.value and mp.parent_process().is_alive()

    def sync(self, model, params):
        """theta' <- theta."""
        params.copy_(self.params)


def refresh_target(target_params, shared_params, target_step, global_step, interval):
    """theta^- <- theta once per `interval` global steps. Worker 0 alone calls it, after each of its segments: with
    one writer, target_step needs no lock (Shared). It holds the boundary last crossed, as a step (not a count of
    intervals), so that a run resumed with another interval refreshes at its next boundary, and is written after the
    copy, so that a worker killed while copying leaves the refresh to the worker restarted in its place. True if it
    copied."""
    due = global_step // interval * interval
    if due <= target_step.value:
        return False
    target_params.copy_(shared_params)
    target_step.value = due
    return True


def one_step_targets(rewards, terminated, next_q_target, gamma):
    """Algorithm 1: y = r for a terminal s', else r + gamma * max_a' Q(s', a'; theta^-). next_q_target holds
    Q(s', .; theta^-) for each transition; only a segment's last can end the episode (a truncated one bootstraps)."""
    targets = np.asarray(rewards, np.float32) + gamma * next_q_target.max(axis=1)
    if terminated:
        targets[-1] = rewards[-1]
    return targets


Segment = namedtuple("Segment", "observations actions rewards terminated")


def play(env, model, obs, epsilon, rng, t_max, messages):
    """Algorithm 1's inner loop from s = obs: act epsilon-greedily on Q(s, .; theta') until terminal or for
    I_AsyncUpdate steps. Returns the segment, its observations ending with the last s', and the next one's start."""
    observations, actions, rewards = [obs], [], []
    for _ in range(t_max):
        actions.append(act(model, obs, epsilon, rng))
        obs, reward, terminated, truncated, info = env.step(actions[-1])
        observations.append(obs)
        rewards.append(reward)
        if "episode" in info:  # a whole game ended (not just a life): its real return and length
            messages.send(("episode", (float(info["episode"]["r"]), int(info["episode"]["l"]))))
        if terminated or truncated:
            obs = env.reset()[0]
            break
    return Segment(np.stack(observations), actions, rewards, terminated), obs


def segment_loss(model, target_net, segment, gamma):
    """y for every transition; Algorithm 1 accumulates d(y - Q(s, a; theta))^2 / d theta over the segment."""
    with torch.inference_mode():  # Q(s', .; theta^-) for every transition's next state
        next_q_target = target_net(torch.from_numpy(segment.observations[1:])).numpy()
    targets = torch.from_numpy(one_step_targets(segment.rewards, segment.terminated, next_q_target, gamma))
    q_taken = model(torch.from_numpy(segment.observations[:-1]))[torch.arange(len(segment.actions)), segment.actions]
    loss = (targets - q_taken).pow(2).sum()
    return loss, {"td_loss": loss.item() / len(segment.rewards), "q_values": q_taken.mean().item()}


def apply_gradient(loss, grads, optimizer, lr, max_grad_norm, rank):
    """Backpropagate the loss into the worker's flat gradient buffer, clip it, and apply it. Returns False (and
    applies nothing) when the gradient is not finite: one NaN in the shared parameters would poison every worker."""
    grads.zero_()  # explicit: zero_grad() would set .grad to None and break the flat views
    loss.backward()
    grad_norm = grads.norm().item()
    if not np.isfinite(grad_norm):
        return False
    if grad_norm > max_grad_norm:
        grads.mul_(max_grad_norm / grad_norm)
    optimizer.step(grads, lr, rank)  # asynchronous update of theta using the gradient
    return True


def learning_rate_at(args, global_step):
    """The learning rate at global step T: the initial rate annealed linearly to 0 at T_max."""
    return args.learning_rate * max(0.0, 1.0 - global_step / args.total_timesteps)

def worker(rank, seed, args, shared, messages):
    """One actor-learner of Algorithm 1, as a process; `seed` is derive_seed(args.seed, rank, restarts).
    Sends its episodes, loss statistics and epsilon on `messages` (child() lists the messages)."""
    torch.manual_seed(seed)
    rng, epsilon_final = exploration_rng(seed), epsilon_final_for(rank, args.num_workers, args.epsilon_finals)
    env = make_env(args.env_id, training=True)
    if args.normalize_reward:  # wraps the episode statistics: the returns logged stay real
        env = NormalizeReward(env, gamma=args.gamma)
    model = QNetwork(env.observation_space, env.action_space.n, args)  # theta'
    params, grads = flatten_parameters(model)
    target_net = QNetwork(env.observation_space, env.action_space.n, args)
    flatten_parameters(target_net, shared.target_params)  # reads the shared theta^- in place, no copy
    obs, stats, last_report, skips_in_a_row = env.reset(seed=seed)[0], Counter(), 0, 0
    while shared.running(args.total_timesteps):  # repeat ... until T > T_max
        shared.sync(model, params)  # theta' <- theta: the theta this segment's gradients are taken at
        epsilon = epsilon_at(shared.global_step(), epsilon_final, args.epsilon_anneal_steps)
        segment, obs = play(env, model, obs, epsilon, rng, args.t_max, messages)  # act, accumulate
        loss, losses = segment_loss(model, target_net, segment, args.gamma)  # y; accumulate d theta
        shared.step_counts[rank] += len(segment.rewards)  # T <- T + 1 for each step (docs/value_based.md)
        step = shared.global_step()
        lr = learning_rate_at(args, step)
        applied = apply_gradient(loss, grads, shared.optimizer, lr, args.max_grad_norm, rank)  # async update
        stats.update(losses if applied else {"skipped_updates": 1}, updates=int(applied))  # skipped: counted
        skips_in_a_row = 0 if applied else skips_in_a_row + 1
        if skips_in_a_row == SKIPS_IN_A_ROW_TO_STOP:  # the run has diverged: a restart cannot help
            raise FloatingPointError(f"{skips_in_a_row} updates in a row had a non-finite loss or gradient")
        if rank == 0:  # if T mod I_target == 0: theta^- <- theta (one writer: refresh_target)
            refresh_target(shared.target_params, shared.params, shared.target_step, step, args.target_update_interval)
        if time.time() - last_report > 2.0:
            messages.send(("losses", dict(stats)))
            messages.send(("epsilon", epsilon))
            stats, last_report = Counter(), time.time()
    if mp.parent_process().is_alive():  # the last statistics, unless nobody is left to read them
        messages.send(("losses", dict(stats)))
    env.close()


def evaluate(model, env, num_episodes, epsilon, seed):
    """Play whole episodes with real rewards, epsilon-greedy with a small epsilon."""
    rng = exploration_rng(seed)
    returns = []
    for episode in range(num_episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        episode_return, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(model, obs, epsilon, rng))
            episode_return += reward
            done = terminated or truncated
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
        ("epsilon", value)             the worker's exploration epsilon now;
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
    model = QNetwork(env.observation_space, env.action_space.n, args)
    params, _ = flatten_parameters(model)
    next_eval = (shared.global_step() // args.eval_interval + 1) * args.eval_interval
    while shared.running():
        if (step := shared.global_step()) < next_eval:
            time.sleep(0.05)
            continue
        shared.sync(model, params)
        returns = evaluate(model, env, args.eval_episodes, args.eval_epsilon, derive_seed(args.seed))
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
    for name in ("num_workers", "total_timesteps", "t_max", "target_update_interval", "epsilon_anneal_steps",
                 "eval_interval", "eval_episodes", "eval_max_steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.max_worker_restarts < 0:
        raise UsageError(f"--max-worker-restarts must be 0 or more, got {args.max_worker_restarts}")
    if not 0 <= args.seed < 2**63:  # SeedSequence takes no negative seed, torch.manual_seed nothing from 2**63 up
        raise UsageError(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    if not (np.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning-rate must be a positive number, got {args.learning_rate}")
    if not 0.0 <= args.eval_epsilon <= 1.0:
        raise UsageError(f"--eval-epsilon must be between 0 and 1, got {args.eval_epsilon}")
    if not all(0.0 <= epsilon <= 1.0 for epsilon in args.epsilon_finals):
        raise UsageError(f"--epsilon-finals must each be between 0 and 1, got {str(args.epsilon_finals)[1:-1]}")
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
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise UsageError(f"{args.env_id} has a {type(env.action_space).__name__} action space; "
                         f"{SCRIPT} supports Discrete action spaces only; for continuous control use a3c.py")
    model = QNetwork(env.observation_space, env.action_space.n, args)
    if ckpt is None:  # a checkpoint's weights are never re-initialised
        start_on_random_play(model.trunk, env, args.seed, args.standardize_frames, args.center_init)
    env.close()
    try:
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
    except RuntimeError as error:
        raise UsageError(f"the checkpoint does not fit this network ({str(error).splitlines()[1].strip()}); pass "
                         "the --network / --hidden-sizes it was trained with") from None
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
        "episodic_length": "charts/episodic_length", "td_loss": "losses/td_loss", "q_values": "losses/q_values",
        "epsilon": "charts/epsilon", "skipped_updates": "losses/skipped_updates"}

    def __init__(self, run_dir, args, sources, global_step, seconds, wandb_id=None):
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
        self.last_seconds, self.last_step, self.sps, self.clock, self.epsilons = seconds, global_step, None, None, {}

    def record(self, rank, kind, payload):
        """Keep a message for the next row: an episode's (return, length), loss sums, an evaluation (step, returns), a
        worker's epsilon."""
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
        elif kind == "epsilon":  # each worker's own schedule
            self.epsilons[rank] = payload

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
        returns, lengths = zip(*self.episodes, strict=True) if self.episodes else (None, None)
        evaluated_at, evaluation = self.evaluation or (None, None)
        for rank, epsilon in self.epsilons.items():
            self.writer.add_scalar(f"charts/epsilon_worker_{rank}", epsilon, step)
        self.row(global_step=step, seconds=seconds, sps=self.sps,
                 episodic_return=returns and np.mean(returns), episodic_length=lengths and np.mean(lengths),
                 eval_global_step=evaluated_at, eval_return_mean=evaluation and np.mean(evaluation),
                 eval_return_std=evaluation and np.std(evaluation),
                 learning_rate=learning_rate_at(self.args, step),
                 epsilon=np.mean(list(self.epsilons.values())) if self.epsilons else None, skipped_updates=self.skipped,
                 **{key: sum_ / updates for key, sum_ in self.losses.items() if updates})
        self.episodes, self.losses, self.evaluation = [], Counter(), None
        self.last_seconds, self.last_step = seconds, step

    def last(self, step, seconds, final_returns=None):
        """The last row, whatever the time: with the final evaluation, or after an interruption or a failure."""
        if final_returns is not None:
            if self.evaluation is not None:  # a periodic one not written yet: its own row first
                self.log(step, seconds, force=True)
            self.evaluation = (step, final_returns)
        self.log(step, seconds, force=True)

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
    if ckpt is not None:  # the model's weights came with build_model
        shared.load_state_dict(ckpt)
    start = time.time() - (ckpt["seconds"] if ckpt else 0.0)

    def checkpoint(name):  # checkpoint.pt: all a resume needs; model.pt: the weights
        state = {"script": SCRIPT, "args": dataclasses.asdict(args), "global_step": shared.global_step(),
                 "seconds": time.time() - start, "model": model.state_dict()}
        if name == "checkpoint.pt":
            state |= shared.state_dict() | {"wandb_id": progress.wandb and progress.wandb.id}
        save_atomic(state, os.path.join(run_dir, name))

    progress = Progress(run_dir, args, sources, shared.global_step(), time.time() - start, (ckpt or {}).get("wandb_id"))
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
    returns = evaluate(model, env, args.eval_episodes, args.eval_epsilon, derive_seed(args.seed))
    env.close()
    result = {"env_id": args.env_id, "global_step": global_step, "returns": returns,
              "mean": float(np.mean(returns)), "std": float(np.std(returns)), "epsilon": args.eval_epsilon}
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
