"""Asynchronous one-step Sarsa (Mnih et al. 2016, Algorithm 1 with the Sarsa target).

Docs, deviations from the paper and measured results: docs/value_based.md

    python async_sarsa.py                          # Pong, the paper's small network, all cores
    python async_sarsa.py --env-id CartPole-v1     # the vector preset (PRESETS below)
    python async_sarsa.py --resume runs/<run>/checkpoint.pt              # continue an interrupted run
    python async_sarsa.py --eval-only --checkpoint runs/<run>/model.pt   # evaluate, write eval.json

Hogwild: one Q-network lives in shared memory; each worker process keeps a local copy,
syncs it at the start of every segment of I_AsyncUpdate steps, acts epsilon-greedily with
its own final epsilon, computes Sarsa targets from a shared target network, and applies
the segment's accumulated gradient to the shared parameters with a shared-statistics
RMSProp, without locks.
"""

import csv
import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from multiprocessing import connection
from typing import Optional

import ale_py
import gymnasium as gym
import mujoco
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from common import (UsageError, env_family, flatten_parameters, frames_per_step, layer_init, make_env, make_trunk,
                    start_on_random_play)

SCRIPT = "async_sarsa.py"
SKIPS_IN_A_ROW_TO_STOP = 100  # a worker whose updates are all non-finite this many times stops the run


@dataclass
class Args:
    """Async one-step Sarsa with Hogwild workers and shared RMSProp. Atari ids get the DQN preprocessing."""

    env_id: str = "PongNoFrameskip-v4"
    """gymnasium id; Atari ids (`PongNoFrameskip-v4`, `ALE/Pong-v5`) get the Atari preprocessing"""
    num_workers: int = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    """actor-learner processes; the default is one per CPU core this process may use"""
    total_timesteps: int = 10_000_000
    """T_max: env.step calls summed over all workers (one Atari step = 4 frames)"""
    seed: int = 1
    """fixes the initial weights; each worker's and the evaluation's seeds are derived from it (derive_seed)"""
    learning_rate: float = 7e-4
    """initial RMSProp rate, annealed linearly to 0 at T_max (the value the authors told others)"""
    gamma: float = 0.99
    """discount"""
    t_max: int = 5
    """I_AsyncUpdate: steps whose gradients a worker accumulates before an update (Algorithm 1)"""
    target_update_interval: int = 10_000
    """I_target: refresh the shared target network every this many global steps (40,000 frames)"""
    epsilon_anneal_steps: int = 1_000_000
    """anneal each worker's epsilon from 1 to its final value over this many global steps (4M frames)"""
    rms_alpha: float = 0.99
    """RMSProp decay of the shared squared-gradient average"""
    rms_eps: float = 0.1
    """RMSProp epsilon, inside the square root"""
    max_grad_norm: float = 40.0
    """clip each worker's gradient to this global norm"""
    center_init: bool = False
    """start each hidden unit's bias at minus its median pre-activation on 600 frames of random play, so
    that no unit starts dead (images only; not in the paper)"""
    standardize_frames: bool = False
    """feed (frame - mean frame) / std, both measured on 600 frames of random play at the start, instead of
    frame / 255 (images only; not in the paper)"""
    network: str = "small"
    """Atari trunk: `small` (the paper's 16-32-256 net) or `nature` (the 2015 DQN net)"""
    hidden_sizes: tuple[int, ...] = (64, 64)
    """tanh MLP trunk for vector observations"""
    run_dir: Optional[str] = None
    """where the run writes everything (default runs/<env>__<script>__<seed>__<unix time>)"""
    eval_interval: int = 250_000
    """evaluate every this many global steps, in a separate process"""
    eval_episodes: int = 10
    """episodes per evaluation (whole games with real rewards on Atari)"""
    eval_epsilon: float = 0.05
    """epsilon of the epsilon-greedy evaluation policy (a small one, as in DQN's evaluations)"""
    eval_max_steps: int = 27_000
    """cap on an evaluation episode's length in agent steps (27,000 = 30 minutes of Atari)"""
    log_interval: float = 5.0
    """seconds between rows of progress.csv"""
    checkpoint_interval: float = 300.0
    """seconds between checkpoints"""
    max_worker_restarts: int = 3
    """restart a worker (or the evaluator) that raised or was killed, this many times in all; then stop (exit 1)"""
    eval_only: bool = False
    """evaluate --checkpoint, write eval.json and exit"""
    checkpoint: Optional[str] = None
    """model.pt or checkpoint.pt for --eval-only"""
    resume: Optional[str] = None
    """checkpoint.pt of a run to continue; flags not given again keep the run's values"""
    capture_video: bool = False
    """record the final evaluation's episodes under <run-dir>/videos"""



# What each family of environments (common.env_family) changes in Args' defaults, which are the paper's Atari
# values; a flag given on the command line always wins, and config.json records where each value came from.
# atari: the paper's values. vector (Discrete actions): a budget and schedules that fit classic control, where
# epsilon annealed over 4M frames would still act at random at the end, and 20-step segments (with the paper's 5,
# 1-3 of 5 CartPole seeds ended below 400 in 250k-300k steps); docs/presets.md.
PRESETS = {
    "atari": dict(),
    "vector": dict(total_timesteps=300_000, learning_rate=2e-3, t_max=20, target_update_interval=500,
                   epsilon_anneal_steps=20_000, eval_interval=10_000),
}
HELP = f"{Args.__doc__} Defaults that a family of environments changes (--no-<flag> turns a switch off): " + "; ".join(
    f"{family}: " + (" ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in preset.items())
                     or "the paper's values") for family, preset in PRESETS.items())

class QNetwork(nn.Module):
    """Q(s, .): one linear output per action on the trunk (Supplement 8)."""

    def __init__(self, observation_space, num_actions, args):
        super().__init__()
        self.trunk, width = make_trunk(observation_space, args.network, args.hidden_sizes, args.standardize_frames)
        self.q = layer_init(nn.Linear(width, num_actions), std=1.0)

    def forward(self, obs):
        return self.q(self.trunk(obs))


class SharedRMSprop:
    """Non-centred RMSProp whose statistics g are shared by all workers (Section 4, Supplement 7).

    g <- alpha * g + (1 - alpha) * grad^2;  theta <- theta - lr * grad / sqrt(g + eps)
    """

    def __init__(self, params, alpha=0.99, eps=0.1):
        self.params, self.alpha, self.eps = params, alpha, eps
        # Created up front and moved to shared memory before any worker starts: state made
        # lazily on a worker's first step (as torch.optim does) would be private to it.
        self.square_avg = torch.zeros_like(params).share_memory_()
        self.denominator = None

    def step(self, grad, lr):
        # The worker's gradient is read here, never aliased into the shared model: since
        # PyTorch 2 zero_grad() sets .grad to None, which silently breaks the old trick of
        # pointing the shared .grad at the local one. Hogwild: no lock, races are tolerated.
        if self.denominator is None:  # per-process scratch, not shared: saves a 3 MB allocation per step
            self.denominator = torch.empty_like(self.params)
        self.square_avg.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
        torch.add(self.square_avg, self.eps, out=self.denominator).rsqrt_()
        self.params.addcmul_(grad, self.denominator, value=-lr)


def sarsa_targets(rewards, terminated, next_q_target, next_actions, gamma):
    """Sarsa: y = r for a terminal s', else r + gamma * Q(s', a'; theta^-), a' the action taken in s'.

    next_q_target holds Q(s', .; theta^-) for each transition. Only the last transition of
    a segment can end the episode; a truncated one (time limit) still bootstraps.
    """
    next_q_taken = next_q_target[np.arange(len(rewards)), next_actions]
    targets = np.asarray(rewards, np.float32) + gamma * next_q_taken
    if terminated:
        targets[-1] = rewards[-1]
    return targets


def act(model, obs, epsilon, rng):
    """Epsilon-greedy with respect to Q(s, .): a random action with probability epsilon."""
    if rng.random() < epsilon:
        return int(rng.integers(model.q.out_features))
    with torch.inference_mode():
        return model(torch.from_numpy(obs).unsqueeze(0)).argmax().item()


EPSILON_FINALS, EPSILON_PROBABILITIES = (0.01, 0.1, 0.5), (0.3, 0.4, 0.3)  # Supplement 8


def epsilon_final_for(rank, num_workers):
    """Each worker explores differently: worker `rank` of N takes the (rank + 1/2) / N quantile of the
    paper's distribution of final epsilons, so that the N workers span it (16 workers: 5 at 0.01, 6 at 0.1,
    5 at 0.5; 2 workers: 0.01 and 0.5). The paper draws each worker's at random, which with few workers can
    leave them all at 0.5 or all at 0.01; docs/presets.md."""
    quantile = (rank + 0.5) / num_workers
    return EPSILON_FINALS[int(np.searchsorted(np.cumsum(EPSILON_PROBABILITIES), quantile, side="right"))]


def epsilon_at(global_step, epsilon_final, anneal_steps):
    """Linear from 1 to epsilon_final over the first anneal_steps global steps, then constant."""
    return epsilon_final + (1.0 - epsilon_final) * max(0.0, 1.0 - global_step / anneal_steps)


def refresh_target(target_params, shared_params, target_version, global_step, interval):
    """theta^- <- theta once per `interval` global steps, by the first worker to cross the boundary.

    target_version counts the refreshes done; the check is repeated under its lock so that
    two workers crossing the same boundary at once copy only once. The lock covers the check
    alone, not the copy: a worker killed while holding it would block the others forever.
    Returns True if it copied.
    """
    due = global_step // interval
    if due <= target_version.value:
        return False
    with target_version.get_lock():
        if due <= target_version.value:
            return False
        target_version.value = due
    target_params.copy_(shared_params)
    return True


def apply_gradient(loss, grads, optimizer, lr, max_grad_norm):
    """Backpropagate a segment's loss into the local flat gradient, clip it, apply it to theta.

    Returns False (and applies nothing) when the gradient is not finite: one NaN written
    into the shared parameters would poison every worker.
    """
    grads.zero_()  # explicit: zero_grad() would set .grad to None and break the flat views
    loss.backward()
    grad_norm = grads.norm().item()
    if not np.isfinite(grad_norm):
        return False
    if grad_norm > max_grad_norm:
        grads.mul_(max_grad_norm / grad_norm)
    optimizer.step(grads, lr)  # Algorithm S3: asynchronous update of theta using the gradient
    return True


def worker(rank, seed, args, shared_params, target_params, optimizer, step_counts, target_version, messages, stop):
    """One actor-learner (Algorithm 1, Sarsa target). Sends episodes, losses, epsilon and its last error on `messages`,
    its own pipe to the main process. `seed` is derive_seed(args.seed, rank, restarts)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C for all
    torch.set_num_threads(1)  # N workers x M BLAS threads would oversubscribe the cores
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        epsilon_final = epsilon_final_for(rank, args.num_workers)
        env = make_env(args.env_id, training=True)
        model = QNetwork(env.observation_space, env.action_space.n, args)
        params, grads = flatten_parameters(model)
        target_net = QNetwork(env.observation_space, env.action_space.n, args)
        flatten_parameters(target_net, target_params)  # reads the shared theta^- in place, no copy
        obs, _ = env.reset(seed=seed)
        # The global step T is the sum of one counter per worker, each written only by its own
        # worker: no lock, so no process can die holding one and leave the others waiting forever.
        steps_done = step_counts.numpy()
        stats, last_report, main_process, skips_in_a_row = Counter(), time.time(), mp.parent_process(), 0
        carried_action = None  # a' of the last segment's last transition: the first action of the next
        # If the main process dies without stopping us (SIGKILL), stop too: never train as an orphan.
        while steps_done.sum() < args.total_timesteps and not stop.value and main_process.is_alive():
            params.copy_(shared_params)  # theta' <- theta: the theta this segment's gradients are taken at
            epsilon = epsilon_at(steps_done.sum(), epsilon_final, args.epsilon_anneal_steps)
            observations, actions, rewards = [], [], []
            for _ in range(args.t_max):  # Algorithm 1: accumulate until terminal or I_AsyncUpdate steps
                action = carried_action if carried_action is not None else act(model, obs, epsilon, rng)
                carried_action = None
                next_obs, reward, terminated, truncated, info = env.step(action)
                observations.append(obs)
                actions.append(action)
                rewards.append(reward)
                obs = next_obs
                if "episode" in info:  # a whole game ended (not just a life): real return
                    episode = info["episode"]
                    messages.send(("episode", int(steps_done.sum()), float(episode["r"]), int(episode["l"])))
                if terminated or truncated:
                    obs, _ = env.reset()
                    break
            with torch.inference_mode():  # Q(s', .; theta^-) for every transition's next state
                next_q_target = target_net(torch.from_numpy(np.stack(observations[1:] + [next_obs]))).numpy()
            # Sarsa: a' of each transition is the action actually taken next; for the last one it is
            # chosen now and taken at the start of the next segment (unless the episode ended).
            next_action = act(model, next_obs, epsilon, rng)
            carried_action = None if terminated or truncated else next_action
            targets = sarsa_targets(rewards, terminated, next_q_target, actions[1:] + [next_action], args.gamma)
            targets = torch.from_numpy(targets)
            q_values = model(torch.from_numpy(np.stack(observations)))
            q_taken = q_values[torch.arange(len(actions)), actions]
            # Algorithm 1: accumulate d(y - Q(s, a; theta))^2 / d theta over the segment.
            loss = (targets - q_taken).pow(2).sum()
            steps_done[rank] += len(rewards)
            step = int(steps_done.sum())
            lr = args.learning_rate * max(0.0, 1.0 - step / args.total_timesteps)
            if apply_gradient(loss, grads, optimizer, lr, args.max_grad_norm):
                stats.update(td_loss=loss.item() / len(rewards), q_values=q_taken.mean().item(), updates=1)
                skips_in_a_row = 0
            else:  # skipped and counted; if it persists, the run has diverged and a restart cannot help
                stats["skipped_updates"] += 1
                skips_in_a_row += 1
                if skips_in_a_row == SKIPS_IN_A_ROW_TO_STOP:
                    raise FloatingPointError(f"{skips_in_a_row} updates in a row had a non-finite loss or gradient")
            refresh_target(target_params, shared_params, target_version, step, args.target_update_interval)
            if time.time() - last_report > 2.0:
                messages.send(("losses", dict(stats)))
                messages.send(("epsilon", epsilon))
                stats, last_report = Counter(), time.time()
        if main_process.is_alive():
            messages.send(("losses", dict(stats)))
        env.close()
    except Exception as error:
        report_error(messages, "diverged" if isinstance(error, FloatingPointError) else "error")


def report_error(messages, kind):
    """Send the traceback to the main process, which reports it, and exit 1 without printing it twice."""
    try:
        messages.send((kind, traceback.format_exc()))
    except OSError:  # the main process is gone
        pass
    sys.exit(1)


def evaluate(model, env, num_episodes, epsilon, seed):
    """Play whole episodes with real rewards, epsilon-greedy with a small epsilon."""
    rng = np.random.default_rng(seed)
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


def evaluator(args, shared_params, step_counts, messages, stop):
    """Evaluate the shared model every eval_interval global steps on its own env and seed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        env = make_env(args.env_id, training=False, max_episode_steps=args.eval_max_steps)
        model = QNetwork(env.observation_space, env.action_space.n, args)
        params, _ = flatten_parameters(model)
        next_eval = (int(step_counts.sum()) // args.eval_interval + 1) * args.eval_interval
        while not stop.value and mp.parent_process().is_alive():
            step = int(step_counts.sum())
            if step < next_eval:
                time.sleep(0.05)
                continue
            params.copy_(shared_params)
            returns = evaluate(model, env, args.eval_episodes, args.eval_epsilon, derive_seed(args.seed))
            messages.send(("eval", step, returns))
            next_eval = (step // args.eval_interval + 1) * args.eval_interval
    except Exception:
        report_error(messages, "error")


# ---------------------------------------------------------------------------------------
# The main process: arguments, run directory, supervision, checkpoints
# ---------------------------------------------------------------------------------------


def derive_seed(seed, *key):
    """The seed of one part of a run: key (rank, restarts) for a worker, () for the evaluation.
    SeedSequence hashes them, so runs with neighbouring seeds share no stream: with seed + rank,
    run 1's worker 1 would be run 2's worker 0."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])


def receive(pipes, timeout):
    """(rank, message) for every message waiting on the processes' pipes; waits up to `timeout`."""
    received = []
    for pipe in connection.wait([pipe for pipe in pipes if not pipe.closed], timeout):
        rank = pipes.index(pipe)
        try:
            while pipe.poll():
                received.append((rank, pipe.recv()))
        except (EOFError, OSError):  # its process has exited: nothing more will come
            pipe.close()
    return received


def how_it_died(exitcode, trace):
    """'failed: ValueError: ...' from the traceback the process sent, else its exit code or signal."""
    if trace:
        return f"failed: {trace.strip().splitlines()[-1]}"
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"


def save_atomic(obj, path):
    """Write to a temporary file, flush it to disk, then rename: a crash never leaves half a file."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path):
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"cannot read checkpoint {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise UsageError(f"{path} is not a checkpoint or model file written by this project")
    if ckpt.get("script") != SCRIPT:
        raise UsageError(f"{path} was written by {ckpt.get('script')}, not {SCRIPT}")
    return ckpt


def parse_args():
    """Parse the command line. Flags not given come from the env family's preset, or with --resume or
    --eval-only from the checkpoint. Returns args, the checkpoint (or None) and each value's source."""
    args = tyro.cli(Args, description=HELP)
    given = {token[2:].split("=")[0].replace("-", "_").removeprefix("no_") for token in sys.argv[1:]
             if token.startswith("--")}
    path = args.resume or (args.checkpoint if args.eval_only else None)
    if args.eval_only and not args.checkpoint:
        raise UsageError("--eval-only needs --checkpoint PATH (a model.pt or checkpoint.pt)")
    if path is None:
        family = env_family(args.env_id)
        preset = PRESETS.get(family, {})
        args = tyro.cli(Args, default=dataclasses.replace(Args(), **preset), description=HELP)
        sources = {f.name: "command line" if f.name in given else f"{family} preset" if f.name in preset
                   else "default" for f in dataclasses.fields(Args)}
        return args, None, sources
    ckpt = load_checkpoint(path)
    fields = {f.name for f in dataclasses.fields(Args)}
    stored = Args(**{k: v for k, v in ckpt["args"].items() if k in fields})
    run_dir = os.path.dirname(os.path.abspath(path)) if args.resume else None
    stored = dataclasses.replace(stored, run_dir=run_dir, resume=args.resume, eval_only=args.eval_only,
                                 checkpoint=args.checkpoint, capture_video=False)
    args = tyro.cli(Args, default=stored, description=HELP)
    if args.resume and "square_avg" not in ckpt:
        raise UsageError(f"{path} holds weights only; resume from the run's checkpoint.pt")
    if args.env_id != ckpt["args"]["env_id"]:
        raise UsageError(f"{path} is for {ckpt['args']['env_id']}, not {args.env_id}")
    return args, ckpt, {name: "command line" if name in given else "checkpoint" for name in fields}


def check_args(args):
    for name in ("num_workers", "total_timesteps", "t_max", "target_update_interval", "epsilon_anneal_steps",
                 "eval_interval", "eval_episodes", "eval_max_steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.max_worker_restarts < 0:
        raise UsageError(f"--max-worker-restarts must be 0 or more, got {args.max_worker_restarts}")
    if not (np.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning-rate must be a positive number, got {args.learning_rate}")
    if not 0.0 <= args.eval_epsilon <= 1.0:
        raise UsageError(f"--eval-epsilon must be between 0 and 1, got {args.eval_epsilon}")


def build_model(args, ckpt=None):
    """The model for args.env_id, with the checkpoint's weights if one is given."""
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
        raise UsageError(f"the checkpoint does not fit this network ({str(error).splitlines()[1].strip()}); "
                         "pass the --network / --hidden-sizes it was trained with") from None
    return model


def final_evaluation(args, model, run_dir, global_step):
    video_dir = os.path.join(run_dir, "videos") if args.capture_video else None
    env = make_env(args.env_id, training=False, max_episode_steps=args.eval_max_steps, video_dir=video_dir)
    returns = evaluate(model, env, args.eval_episodes, args.eval_epsilon, derive_seed(args.seed))
    env.close()
    result = {"env_id": args.env_id, "global_step": global_step, "returns": returns,
              "mean": float(np.mean(returns)), "std": float(np.std(returns)), "epsilon": args.eval_epsilon}
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def make_run_dir(args, sources):
    name = f"{args.env_id.replace('/', '_')}__{SCRIPT[:-3]}__{args.seed}__{int(time.time())}"
    run_dir = args.run_dir or os.path.join("runs", name)
    if not args.resume and os.path.exists(os.path.join(run_dir, "progress.csv")):  # never mix two runs' data
        raise UsageError(f"{run_dir} already holds a run: continue it with --resume {run_dir}/checkpoint.pt, "
                         "or choose another --run-dir")
    try:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            versions = {"python": sys.version.split()[0], "torch": torch.__version__, "gymnasium": gym.__version__,
                        "ale_py": ale_py.__version__, "mujoco": mujoco.__version__}
            json.dump({**dataclasses.asdict(args), "sources": sources, "versions": versions}, f, indent=2)
    except OSError as error:
        raise UsageError(f"cannot write the run directory {run_dir}: {error.strerror}") from None
    return run_dir


class Progress:
    """progress.csv, TensorBoard and the progress bar: one row of COLUMNS per log interval."""

    COLUMNS = {  # progress.csv column: TensorBoard key (CleanRL's names)
        "global_step": None, "frames": "charts/frames", "seconds": None, "sps": "charts/SPS",
        "episodic_return": "charts/episodic_return", "eval_return_mean": "eval/return_mean",
        "eval_return_std": "eval/return_std", "learning_rate": "charts/learning_rate",
        "episodic_length": "charts/episodic_length",
        "td_loss": "losses/td_loss", "q_values": "losses/q_values", "epsilon": "charts/epsilon",
        "skipped_updates": "losses/skipped_updates"}

    def __init__(self, run_dir, total_timesteps, global_step, frames_per_step):
        path = os.path.join(run_dir, "progress.csv")
        columns = list(self.COLUMNS)
        if os.path.exists(path):  # a resumed run appends under the header its file has
            with open(path) as f:
                columns = next(csv.reader(f), None) or columns
        self.file = open(path, "a", newline="")
        self.csv = csv.DictWriter(self.file, columns, extrasaction="ignore")
        if self.file.tell() == 0:
            self.csv.writeheader()
        self.frames_per_step = frames_per_step  # frames = agent steps x the Atari frame skip
        self.writer = SummaryWriter(run_dir)
        self.bar = tqdm(total=total_timesteps, initial=min(global_step, total_timesteps), unit="step", smoothing=0.1)

    def update_bar(self, global_step):
        self.bar.update(min(global_step, self.bar.total) - self.bar.n)

    def row(self, **values):
        """Write one row; a value that is None (not known yet) is an empty cell."""
        values["frames"] = values["global_step"] * self.frames_per_step
        values = {key: value for key, value in values.items() if value is not None}
        self.csv.writerow({key: f"{value:.6g}" if isinstance(value, float) else value for key, value in values.items()})
        self.file.flush()
        for key, value in values.items():
            if self.COLUMNS[key]:
                self.writer.add_scalar(self.COLUMNS[key], value, values["global_step"])
        self.update_bar(values["global_step"])
        self.bar.set_postfix({key: f"{values[key]:.4g}" for key in ("sps", "episodic_return", "eval_return_mean")
                              if key in values})

    def close(self):
        self.bar.close()
        self.writer.close()
        self.file.close()


def train(args, ckpt, sources):
    torch.manual_seed(args.seed)  # the initial weights: two runs with one seed start from the same theta
    shared_model = build_model(args, ckpt)  # first: bad input must not touch the run directory
    run_dir = make_run_dir(args, sources)
    shared_params, _ = flatten_parameters(shared_model)
    shared_params.share_memory_()  # the one theta every worker reads and writes
    optimizer = SharedRMSprop(shared_params, args.rms_alpha, args.rms_eps)
    ctx = mp.get_context("spawn")  # fork is unsafe once torch has started its thread pools
    # Lock-free: a worker killed while holding a lock (an Event has one) would block every other.
    stop = ctx.RawValue("b", False)
    step_counts = torch.zeros(args.num_workers + 1, dtype=torch.int64).share_memory_()  # last: steps before resume
    def global_step():
        return int(step_counts.sum())
    seconds_before = 0.0
    # The target network theta^- in shared memory, and how many times it has been refreshed.
    target_params, target_version = shared_params.clone().share_memory_(), ctx.Value("q", 0)
    if ckpt is not None:
        optimizer.square_avg.copy_(ckpt["square_avg"])
        target_params.copy_(ckpt["target_params"])
        step_counts[-1], seconds_before = ckpt["global_step"], ckpt["seconds"]
        target_version.value = ckpt["target_version"]

    def checkpoint(name, with_optimizer):
        state = {"script": SCRIPT, "args": dataclasses.asdict(args), "global_step": global_step(),
                 "seconds": seconds_before + time.time() - start, "model": shared_model.state_dict()}
        if with_optimizer:
            state.update(square_avg=optimizer.square_avg.clone(), target_params=target_params.clone(),
                         target_version=target_version.value)
        save_atomic(state, os.path.join(run_dir, name))

    def start_process(rank, restarts=0):
        """Worker `rank`, or the evaluator for rank num_workers, with its own pipe for messages:
        a process killed while writing can corrupt only its own pipe, and hold no shared lock."""
        receiver, sender = ctx.Pipe(duplex=False)
        if rank < args.num_workers:
            seed = derive_seed(args.seed, rank, restarts)  # a restart does not replay its predecessor
            process = ctx.Process(target=worker, daemon=True, args=(
                rank, seed, args, shared_params, target_params, optimizer, step_counts, target_version, sender, stop))
        else:
            process = ctx.Process(target=evaluator, daemon=True, args=(args, shared_params, step_counts, sender, stop))
        process.start()
        sender.close()  # the child holds the only writer: its death closes the pipe
        return process, receiver

    # The handler only records the signal; the loop below notices it within 0.2 s. Raising from
    # the handler could interrupt TensorBoard's writer while it holds a lock.
    received = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: received.append(signum))
    progress = Progress(run_dir, args.total_timesteps, global_step(), frames_per_step(args.env_id))
    start = last_log = last_checkpoint = time.time()
    started = [start_process(rank) for rank in range(args.num_workers + 1)]
    processes, pipes = [process for process, _ in started], [pipe for _, pipe in started]
    names = [f"worker {rank}" for rank in range(args.num_workers)] + ["the evaluator"]
    episodes, losses, evaluation, skipped, last_step = [], Counter(), None, 0, global_step()
    epsilons = {}
    errors, restarts, failure, diverged = {}, 0, None, False  # errors: the traceback each process sent last
    try:
        while failure is None and not received:
            dead = [rank for rank, process in enumerate(processes) if process.exitcode not in (None, 0)]
            # Read after looking for the dead: what a process sent before it died is in its pipe by now.
            for rank, (kind, *message) in receive(pipes, timeout=0.2):
                if kind == "episode":
                    episodes.append(message[1:])
                elif kind == "losses":
                    losses.update(message[0])
                elif kind == "eval":
                    evaluation = message[1]
                elif kind == "epsilon":  # each worker's own schedule
                    epsilons[rank] = message[0]
                    progress.writer.add_scalar(f"charts/epsilon_worker_{rank}", message[0], global_step())
                elif kind in ("error", "diverged"):
                    errors[rank] = (kind, message[0])
            for rank in dead:  # restart it from the shared model, up to max_worker_restarts times in all
                kind, trace = errors.pop(rank, (None, None))
                cause = how_it_died(processes[rank].exitcode, trace)
                if kind == "diverged":
                    failure, diverged = f"{names[rank]} stopped the run: {cause}", True
                elif restarts == args.max_worker_restarts:
                    failure = f"{names[rank]} {cause}, after {restarts} restarts (--max-worker-restarts {restarts})"
                    failure += "\n" + trace.rstrip() if trace else ""
                else:
                    restarts += 1
                    tqdm.write(f"{SCRIPT}: warning: {names[rank]} {cause}; restarted it from the shared model "
                               f"(restart {restarts} of {args.max_worker_restarts})", file=sys.stderr)
                    processes[rank], pipes[rank] = start_process(rank, restarts)
            if all(process.exitcode == 0 for process in processes[:-1]):  # every worker reached T_max
                break
            now, step = time.time(), global_step()
            progress.update_bar(step)
            if now - last_log >= args.log_interval or evaluation is not None:
                skipped += int(losses["skipped_updates"])
                updates = losses["updates"] or None
                progress.row(global_step=step, seconds=seconds_before + now - start,
                             sps=(step - last_step) / (now - last_log),
                             episodic_return=np.mean([e[0] for e in episodes]) if episodes else None,
                             episodic_length=np.mean([e[1] for e in episodes]) if episodes else None,
                             eval_return_mean=np.mean(evaluation) if evaluation else None,
                             eval_return_std=np.std(evaluation) if evaluation else None,
                             learning_rate=args.learning_rate * max(0.0, 1.0 - step / args.total_timesteps),
                             td_loss=updates and losses["td_loss"] / updates,
                             q_values=updates and losses["q_values"] / updates,
                             epsilon=np.mean(list(epsilons.values())) if epsilons else None, skipped_updates=skipped)
                episodes, losses, evaluation, last_log, last_step = [], Counter(), None, now, step
            if now - last_checkpoint >= args.checkpoint_interval:
                checkpoint("checkpoint.pt", with_optimizer=True)
                last_checkpoint = now
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break the cleanup
            signal.signal(signum, signal.SIG_IGN)
        stop.value = True
        deadline = time.time() + 5  # workers finish their segment; the evaluator may be mid-game
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.time()) if process is not processes[-1] else 0.5)
            if process.is_alive():
                process.kill()
                process.join()
    if diverged:  # the shared model may have gone bad: keep the last periodic checkpoint instead
        progress.close()
        print(f"{SCRIPT}: {failure}\nthe last good checkpoint (if one was written) is in {run_dir}", file=sys.stderr)
        return 1
    checkpoint("checkpoint.pt", with_optimizer=True)
    if failure is not None or received:
        progress.close()
        if failure is not None:
            print(f"{SCRIPT}: {failure}\ncheckpoint saved in {run_dir}; continue with --resume", file=sys.stderr)
            return 1
        print(f"{SCRIPT}: interrupted at step {global_step()}; checkpoint saved in {run_dir}", file=sys.stderr)
        return 128 + received[0]  # 130 for SIGINT, 143 for SIGTERM
    checkpoint("model.pt", with_optimizer=False)
    result = final_evaluation(args, shared_model, run_dir, global_step())
    progress.row(global_step=global_step(), seconds=seconds_before + time.time() - start,
                 eval_return_mean=result["mean"], eval_return_std=result["std"], learning_rate=0.0,
                 skipped_updates=skipped)
    progress.close()
    print(f"eval mean {result['mean']:.2f} +- {result['std']:.2f} over {len(result['returns'])} episodes; "
          f"run in {run_dir}")
    return 0


def main():
    torch.set_num_threads(1)
    args, ckpt, sources = parse_args()
    check_args(args)
    if not args.eval_only:
        return train(args, ckpt, sources)
    model = build_model(args, ckpt)
    run_dir = args.run_dir or os.path.dirname(os.path.abspath(args.checkpoint))
    os.makedirs(run_dir, exist_ok=True)
    result = final_evaluation(args, model, run_dir, ckpt["global_step"])
    print(f"eval mean {result['mean']:.2f} +- {result['std']:.2f} over {len(result['returns'])} episodes; "
          f"wrote {os.path.join(run_dir, 'eval.json')}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as error:
        print(f"{SCRIPT}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save
        sys.exit(130)
