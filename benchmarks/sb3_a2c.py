"""The peer: Stable-Baselines3's A2C, writing the same progress.csv and eval.json as our scripts.

    pip install -r benchmarks/requirements.txt
    python benchmarks/sb3_a2c.py --env-id CartPole-v1 --seed 1 --run-dir runs/sb3-cartpole-1
    python benchmarks/learning.py --script benchmarks/sb3_a2c.py --env-id CartPole-v1 --out-dir results/cartpole/sb3

Defaults are rl-zoo's A2C settings for CartPole-v1 (8 synchronous environments, n_steps 5,
no entropy bonus, 500k steps; the rest SB3's A2C defaults: lr 7e-4, RMSProp eps 1e-5, grad-norm
clip 0.5). One process, torch with as many threads as cores. progress.csv rows carry
global_step, seconds, sps and episodic_return (the mean of the episodes that ended since the
row before), so benchmarks/plot.py and learning.py read both kinds of run alike.
"""

import csv
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    seed: int = 1
    run_dir: str = "runs/sb3_a2c"
    total_timesteps: int = 500_000
    num_envs: int = 8
    ent_coef: float = 0.0
    normalize: bool = False
    """VecNormalize observations, not rewards (rl-zoo's MuJoCo setting, with --num-envs 1)"""
    eval_episodes: int = 10
    eval_deterministic: bool = False
    """evaluate with the mean action (rl-zoo's MuJoCo evaluation, and our scripts' --eval-greedy)"""
    log_interval: float = 1.0
    """seconds between progress.csv rows"""
    threads: int = os.cpu_count() or 1


class Progress(BaseCallback):
    def __init__(self, path, interval):
        super().__init__()
        self.file = open(path, "w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["global_step", "seconds", "sps", "episodic_return"])
        self.interval, self.returns = interval, []

    def _on_training_start(self):
        self.start = self.last_time = time.time()
        self.last_step = 0

    def _on_step(self):
        self.returns += [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
        now = time.time()
        if now - self.last_time >= self.interval:
            sps = (self.num_timesteps - self.last_step) / (now - self.last_time)
            mean = f"{np.mean(self.returns):.2f}" if self.returns else ""
            self.writer.writerow([self.num_timesteps, f"{now - self.start:.2f}", f"{sps:.1f}", mean])
            self.file.flush()
            self.returns, self.last_time, self.last_step = [], now, self.num_timesteps
        return True


def evaluate(model, env_id, episodes, seed, obs_rms, deterministic):
    """Sampled actions unless deterministic, as our scripts evaluate; whole episodes, real rewards."""
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    returns, obs, total = [], env.reset(), 0.0
    while len(returns) < episodes:
        if obs_rms is not None:
            obs = np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10, 10)
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, reward, done, _ = env.step(action)
        total += float(reward[0])
        if done[0]:
            returns.append(total)
            total = 0.0
    return returns


if __name__ == "__main__":
    args = tyro.cli(Args)
    torch.set_num_threads(args.threads)
    os.makedirs(args.run_dir, exist_ok=True)
    with open(os.path.join(args.run_dir, "config.json"), "w") as f:
        json.dump(vars(args), f, indent=2)
    env = make_vec_env(args.env_id, n_envs=args.num_envs, seed=args.seed)
    if args.normalize:
        env = VecNormalize(env, norm_reward=False)
    model = A2C("MlpPolicy", env, ent_coef=args.ent_coef, seed=args.seed, device="cpu")
    progress = Progress(os.path.join(args.run_dir, "progress.csv"), args.log_interval)
    model.learn(args.total_timesteps, callback=progress)
    progress.file.close()
    returns = evaluate(model, args.env_id, args.eval_episodes, args.seed + 10_000,
                       env.obs_rms if args.normalize else None, args.eval_deterministic)
    with open(os.path.join(args.run_dir, "eval.json"), "w") as f:
        json.dump({"env_id": args.env_id, "global_step": model.num_timesteps, "returns": returns,
                   "mean": float(np.mean(returns)), "std": float(np.std(returns))}, f, indent=2)
