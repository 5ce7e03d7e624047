"""Agent steps/s of each script with 1..N workers, beside what the environment alone allows.

    python benchmarks/throughput.py --env-id PongNoFrameskip-v4 --workers 1 2
    python benchmarks/throughput.py --scripts a3c.py --script-flags=--lstm --workers 2
    python benchmarks/throughput.py --scripts a3c.py old/a3c.py --workers 2   # before/after

Three rates per worker count N:
- script: agent steps/s of the script training with N workers, read from its progress.csv
  (after a 10 s warm-up, so start-up is not counted);
- env only: N processes stepping the scripts' preprocessed training env with random
  actions (the ceiling if the network cost nothing);
- raw emulator (Atari only): the same processes, in alternate chunks of 100 steps, doing the
  4 emulator frames per agent step with no screen read, resize or stacking, so raw
  emulator / env only - 1 is the time the preprocessing adds to the emulator's.
Every script and worker count is measured in turn, `--repeats` times (a, b, a, b, ...), so
that drift in the machine's speed hits all alike; the table gives medians, and "/ first" the
median over repeats of each script's rate over the first script's in the same repeat. The default
worker counts are 1, 2, 4, ... up to the number of cores (16 on a 16-core machine).
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
SCRIPTS = ("a3c.py", "async_nstep_q.py", "async_one_step_q.py", "async_sarsa.py")
# The value-based scripts act at random until epsilon has annealed (1M steps by default),
# which skips the acting forward pass; measure their steady state with the final epsilons.
STEADY_STATE = {"a3c.py": [], **{script: ["--epsilon-anneal-steps", "1"]
                                 for script in ("async_nstep_q.py", "async_one_step_q.py", "async_sarsa.py")}}


def powers_of_two_up_to_the_cores():
    counts, n = [], 1
    while n < (os.cpu_count() or 1):
        counts.append(n)
        n *= 2
    return tuple(counts + [os.cpu_count() or 1])


@dataclass
class Args:
    scripts: tuple[str, ...] = SCRIPTS
    """the algorithm scripts to measure (paths relative to the repository, or absolute)"""
    env_id: str = "PongNoFrameskip-v4"
    """environment, with the scripts' preprocessing"""
    workers: tuple[int, ...] = powers_of_two_up_to_the_cores()
    """worker counts to measure"""
    seconds: float = 40.0
    """training time per measurement (the first 10 s are warm-up and not counted)"""
    repeats: int = 3
    """measurements per script and worker count"""
    env_seconds: float = 20.0
    """time per environment-only measurement (half of it on the bare emulator, on Atari)"""
    script_flags: str = ""
    """extra flags for every script, as one string (`--script-flags=--lstm`)"""
    output: str = "throughput.json"
    """where the JSON goes"""


def random_steps(env_id, seconds, seed, result):
    """Step one preprocessed training env with random actions for `seconds`. On Atari, alternate
    chunks of 100 steps with chunks of the bare emulator (the same 4 frames per step, no screen
    read, resize or stacking), so that both rates see the same drift in the machine's speed.
    Put (preprocessed steps, their seconds, emulator-only steps, their seconds) on `result`."""
    from common import make_env

    env = make_env(env_id, training=True)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    atari = hasattr(env, "ale")
    counts, times, end = [0, 0], [0.0, 0.0], time.time() + seconds
    while time.time() < end:
        for raw in (False, True) if atari else (False,):
            start = time.perf_counter()
            for _ in range(100):
                action = env.action_space.sample()
                if raw:
                    for _ in range(4):
                        env.ale.act(env.action_set[action])
                    done = env.ale.game_over()
                else:
                    _, _, terminated, truncated, _ = env.step(action)
                    done = terminated or truncated
                if done:
                    env.reset()
            counts[raw] += 100
            times[raw] += time.perf_counter() - start
    result.put((counts[0], times[0], counts[1], times[1]))


def env_only_rates(env_id, num_processes, seconds):
    """Agent steps/s of N processes stepping their own env: preprocessed, and bare emulator (or None)."""
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    processes = [ctx.Process(target=random_steps, args=(env_id, seconds, i, result)) for i in range(num_processes)]
    for p in processes:
        p.start()
    runs = [result.get() for _ in processes]
    for p in processes:
        p.join()
    preprocessed = sum(steps / seconds for steps, seconds, _, _ in runs)
    raw = sum(steps / seconds for _, _, steps, seconds in runs) if runs[0][2] else None
    return preprocessed, raw


def script_rate(args, script, num_workers):
    flags = STEADY_STATE.get(os.path.basename(script), []) + shlex.split(args.script_flags)
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, os.path.join(ROOT, script), "--env-id", args.env_id, "--num-workers",
                   str(num_workers), "--total-timesteps", "1000000000", "--eval-interval", "1000000000",
                   "--log-interval", "5", "--run-dir", run_dir, *flags]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(args.seconds)
        process.terminate()  # SIGTERM: the script checkpoints and exits 143
        _, stderr = process.communicate(timeout=60)
        if process.returncode != 143:
            sys.exit(f"{' '.join(command)} exited {process.returncode}:\n{stderr}")
        with open(os.path.join(run_dir, "progress.csv")) as f:
            rows = [row for row in csv.DictReader(f) if row["sps"] and float(row["seconds"]) > 10.0]
    if len(rows) < 2:
        sys.exit(f"{script}: fewer than two progress rows after the warm-up; give it more --seconds")
    steps = int(rows[-1]["global_step"]) - int(rows[0]["global_step"])
    return steps / (float(rows[-1]["seconds"]) - float(rows[0]["seconds"]))


if __name__ == "__main__":
    args = tyro.cli(Args)
    print(f"{args.env_id}, {os.cpu_count()} CPU cores, medians of {args.repeats} runs of {args.seconds:.0f} s "
          f"{args.script_flags}", flush=True)
    env_rates, raw_rates = {}, {}
    for n in args.workers:
        env_rates[n], raw_rates[n] = env_only_rates(args.env_id, n, args.env_seconds)
    rates = {(s, n): [] for s in args.scripts for n in args.workers}
    for _ in range(args.repeats):
        for n in args.workers:
            for script in args.scripts:
                rates[script, n].append(script_rate(args, script, n))
                print(f"  {script} {n} workers: {rates[script, n][-1]:.0f} steps/s", flush=True)
    results = []
    for script in args.scripts:
        for n in args.workers:
            sps = float(np.median(rates[script, n]))
            one = float(np.median(rates[script, args.workers[0]]))
            # against the first script, run by run: each repeat measured the two back to back, on the same machine
            ratio = float(np.median(np.divide(rates[script, n], rates[args.scripts[0], n])))
            results.append({"script": script, "workers": n, "sps": sps, "sps_runs": rates[script, n],
                            "speedup": sps / one, "ratio_to_first_script": ratio, "env_only_sps": env_rates[n],
                            "raw_emulator_sps": raw_rates[n]})
    print(f"\n{'script':<22} {'workers':>7} {'steps/s':>8} {'runs':>18} {'speed-up':>8} {'/ first':>7} "
          f"{'env only':>9} {'raw emulator':>12} {'preprocessing cost':>18}")
    for r in results:
        runs = " ".join(f"{x:.0f}" for x in r["sps_runs"])
        raw, cost = (f"{r['raw_emulator_sps']:.0f}", f"{r['raw_emulator_sps'] / r['env_only_sps'] - 1:+.0%}") \
            if r["raw_emulator_sps"] else ("-", "-")
        print(f"{r['script']:<22} {r['workers']:>7} {r['sps']:>8.0f} {runs:>18} {r['speedup']:>8.2f} "
              f"{r['ratio_to_first_script']:>7.2f} {r['env_only_sps']:>9.0f} {raw:>12} {cost:>18}")
    with open(args.output, "w") as f:
        json.dump({"env_id": args.env_id, "script_flags": args.script_flags, "cpu_count": os.cpu_count(),
                   "seconds": args.seconds, "repeats": args.repeats, "results": results}, f, indent=2)
