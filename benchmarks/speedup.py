"""Table 2 of the paper on a small task: time to first reach a reference score, 1 vs N workers.

    python benchmarks/speedup.py --workers 1 2 --seeds 1 2 3

Runs each script on CartPole-v1 with its CartPole command (docs/results.md), once per worker count and seed,
and reads from progress.csv the wall time (and global step) of the first log row whose
mean training return reaches the reference score. Reports medians over seeds and the
speed-up of each worker count over the first, as a table and as JSON.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from learning import first_reaching, read_curve  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_STEP = ["--learning-rate", "3e-3", "--target-update-interval", "1000", "--epsilon-anneal-steps", "20000"]
ONE_STEP = ["--learning-rate", "1e-3", "--target-update-interval", "500", "--epsilon-anneal-steps", "20000"]
COMMANDS = {  # the CartPole settings of docs/results.md, with a budget long enough for one worker
    "a3c.py": ["--learning-rate", "1e-2", "--entropy-coef", "0", "--total-timesteps", "100000"],
    "async_nstep_q.py": N_STEP + ["--total-timesteps", "150000"],
    "async_one_step_q.py": ONE_STEP + ["--total-timesteps", "200000"],
    "async_sarsa.py": ONE_STEP + ["--total-timesteps", "200000"],
}


@dataclass
class Args:
    scripts: tuple[str, ...] = tuple(COMMANDS)
    """the scripts to measure"""
    workers: tuple[int, ...] = (1, 2)
    """worker counts"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds per worker count"""
    reference_score: float = 195.0
    """mean training return (over one log row) that counts as reached"""
    output: str = "speedup.json"
    """where the JSON goes"""


def time_to_reference(script, workers, seed, reference_score):
    """(seconds, global_step) of the first progress.csv row at or above the reference, or (None, None).

    Seconds count from the last row before the workers' first step, so that process start-up
    (about 2 s here, the same for any worker count) does not blur the speed-up.
    """
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, os.path.join(ROOT, script), "--env-id", "CartPole-v1", "--num-workers",
                   str(workers), "--seed", str(seed), "--eval-interval", "1000000000", "--log-interval", "0.25",
                   "--run-dir", run_dir, *COMMANDS[script]]
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return reached(os.path.join(run_dir, "progress.csv"), reference_score)


def reached(progress_csv, reference_score):
    """(seconds, global_step) at which a run's progress.csv first reaches the reference, the seconds
    counted from its last row at global step 0 (or from the start if it has none)."""
    steps, seconds, _ = read_curve(progress_csv, "global_step")  # every row
    started = float(seconds[steps == 0].max()) if (steps == 0).any() else 0.0
    at_step, at_seconds = first_reaching(*read_curve(progress_csv), reference_score)
    return (None, None) if at_step is None else (at_seconds - started, int(at_step))


def median(values):
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


if __name__ == "__main__":
    args = tyro.cli(Args)
    results = []
    for script in args.scripts:
        for workers in args.workers:
            runs = [time_to_reference(script, workers, seed, args.reference_score) for seed in args.seeds]
            results.append({"script": script, "workers": workers, "seconds": [r[0] for r in runs],
                            "steps": [r[1] for r in runs], "median_seconds": median([r[0] for r in runs]),
                            "median_steps": median([r[1] for r in runs])})
            print(json.dumps(results[-1]), flush=True)
    print(f"\nCartPole-v1, reference {args.reference_score}, medians over seeds {args.seeds}, {os.cpu_count()} cores")
    print(f"{'script':<20} {'workers':>7} {'seconds':>8} {'steps':>8} {'speed-up':>9} {'reached':>8}")
    for r in results:
        first = next(x for x in results if x["script"] == r["script"])
        both = first["median_seconds"] and r["median_seconds"]
        speedup = first["median_seconds"] / r["median_seconds"] if both else None
        r["speedup"] = speedup
        reached = f"{sum(s is not None for s in r['seconds'])}/{len(r['seconds'])}"
        print(f"{r['script']:<20} {r['workers']:>7} {r['median_seconds'] or float('nan'):>8.1f} "
              f"{r['median_steps'] or float('nan'):>8.0f} {speedup or float('nan'):>9.2f} {reached:>8}")
    with open(args.output, "w") as f:
        summary = {"reference_score": args.reference_score, "cpu_count": os.cpu_count(), "results": results}
        json.dump(summary, f, indent=2)
