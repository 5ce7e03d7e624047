"""Agent steps/s of a script with 1..N workers, beside the random-policy environment-only rate.

    python benchmarks/throughput.py --script a3c.py --env-id PongNoFrameskip-v4 --workers 1 2
    python benchmarks/throughput.py --script a3c.py --script-flags=--lstm --workers 2

The environment-only rate runs N processes that each step their own preprocessed env with
random actions: with the network's cost, it is the ceiling for the script. The script's
rate is read from its progress.csv (the `sps` rows after the first, which includes
start-up). Prints a table and writes JSON.
"""

import csv
import json
import multiprocessing as mp
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


@dataclass
class Args:
    script: str = "a3c.py"
    """the algorithm script to measure"""
    env_id: str = "PongNoFrameskip-v4"
    """environment, with the scripts' preprocessing"""
    workers: tuple[int, ...] = (1, 2)
    """worker counts to measure"""
    seconds: float = 60.0
    """training time per measurement (the first 10 s are warm-up and not counted)"""
    repeats: int = 3
    """measurements per worker count, interleaved (1, 2, 1, 2, ...) so that drift in the
    machine's speed hits every count alike; the table shows the median"""
    env_seconds: float = 10.0
    """time per environment-only measurement"""
    script_flags: str = ""
    """extra flags for the script, as one string (`--script-flags=--lstm`)"""
    output: str = "throughput.json"
    """where the JSON goes"""


def random_steps(env_id, seconds, seed, result):
    """Step one preprocessed training env with random actions; put the step count on `result`."""
    from common import make_env

    env = make_env(env_id, training=True)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    steps, end = 0, time.time() + seconds
    while time.time() < end:
        for _ in range(100):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        steps += 100
    result.put(steps)


def env_only_rate(env_id, num_processes, seconds):
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    processes = [ctx.Process(target=random_steps, args=(env_id, seconds, i, result)) for i in range(num_processes)]
    for p in processes:
        p.start()
    total = sum(result.get() for _ in processes)
    for p in processes:
        p.join()
    return total / seconds


def script_rate(args, num_workers):
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, os.path.join(ROOT, args.script), "--env-id", args.env_id, "--num-workers",
                   str(num_workers), "--total-timesteps", "1000000000", "--eval-interval", "1000000000",
                   "--log-interval", "5", "--run-dir", run_dir, *shlex.split(args.script_flags)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.seconds)
        process.terminate()  # SIGTERM: the script checkpoints and exits
        process.wait(timeout=60)
        with open(os.path.join(run_dir, "progress.csv")) as f:
            rows = [row for row in csv.DictReader(f) if row["sps"]]
    rows = [row for row in rows if float(row["seconds"]) > 10.0]
    steps = int(rows[-1]["global_step"]) - int(rows[0]["global_step"])
    return steps / (float(rows[-1]["seconds"]) - float(rows[0]["seconds"]))


if __name__ == "__main__":
    args = tyro.cli(Args)
    print(f"{args.script} {args.script_flags} on {args.env_id}, {os.cpu_count()} CPU cores, median of {args.repeats}")
    env_rates = {n: env_only_rate(args.env_id, n, args.env_seconds) for n in args.workers}
    rates = {n: [] for n in args.workers}
    for _ in range(args.repeats):
        for n in args.workers:
            rates[n].append(script_rate(args, n))
    results = [{"workers": n, "sps": float(np.median(rates[n])), "sps_runs": rates[n], "env_only_sps": env_rates[n]}
               for n in args.workers]
    print(f"{'workers':>7} {'agent steps/s':>14} {'runs':>20} {'env-only steps/s':>17} {'speed-up vs first':>18}")
    for r in results:
        runs = " ".join(f"{x:.0f}" for x in r["sps_runs"])
        print(f"{r['workers']:>7} {r['sps']:>14.0f} {runs:>20} {r['env_only_sps']:>17.0f} "
              f"{r['sps'] / results[0]['sps']:>18.2f}")
    with open(args.output, "w") as f:
        json.dump({"script": args.script, "script_flags": args.script_flags, "env_id": args.env_id,
                   "cpu_count": os.cpu_count(), "results": results}, f, indent=2)
