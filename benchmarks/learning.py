"""Run one script over several seeds and collect its learning curves.

    python benchmarks/learning.py --script a3c.py --env-id CartPole-v1 --seeds 1 2 3 \
        --out-dir benchmarks/results/cartpole/a3c --reference-score 475 \
        --script-flags="--num-workers 2 --total-timesteps 60000 --learning-rate 7e-3 --entropy-coef 0"

Each seed runs one after the other (each uses the cores it is given) in <out-dir>/seed<S>,
which keeps the script's own run directory: progress.csv (the curve), eval.json (the final
score), config.json. <out-dir>/summary.json gathers, per seed, the final evaluation, the wall
time and steps of the run, and the wall time and steps at which the curve first reached
--reference-score (see first_reaching). Draw the curves with benchmarks/plot.py.
"""

import csv
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    script: str
    """the algorithm script (a3c.py, async_nstep_q.py, ...), or benchmarks/sb3_a2c.py for the peer"""
    env_id: str
    seeds: tuple[int, ...] = (1, 2, 3)
    out_dir: str = "results/run"
    """one run directory per seed goes under it, with summary.json"""
    script_flags: str = ""
    """the script's other flags, as one string"""
    reference_score: Optional[float] = None
    """report when each run's training return first reaches this"""
    column: str = "episodic_return"
    """progress.csv column the reference applies to (episodic_return or eval_return_mean)"""


def read_curve(progress_csv, column="episodic_return"):
    """(global_step, seconds, value) arrays of the rows where `column` has a value; for an evaluation column the
    step is the one whose weights were evaluated (eval_global_step), not the later one at which its row was written.

    A resumed run appends to progress.csv from its last checkpoint, so the steps after that
    checkpoint appear twice: the rows the interrupted run wrote past it are dropped. Rows of one step are all
    kept (at the end of a run, a periodic evaluation's row and the final evaluation's share the last step)."""
    rows = []
    with open(progress_csv) as f:
        for row in csv.DictReader(f):
            while rows and int(rows[-1]["global_step"]) > int(row["global_step"]) > 0:
                rows.pop()
            rows.append(row)
    rows = [row for row in rows if row.get(column)]
    step = "eval_global_step" if column.startswith("eval_") else "global_step"
    steps = [float(row.get(step) or row["global_step"]) for row in rows]  # older files: the row's step
    return np.array(steps), *(np.array([float(row[key]) for row in rows]) for key in ("seconds", column))


def first_reaching(steps, seconds, values, reference):
    """(steps, seconds) of the first row whose value is at or above `reference`, or (None, None).

    A training-return row is the mean of the episodes that ended since the row before (a few
    seconds of training), so one lucky episode early on rarely counts."""
    hits = np.flatnonzero(values >= reference)
    return (float(steps[hits[0]]), float(seconds[hits[0]])) if len(hits) else (None, None)


def run_seed(args, seed):
    run_dir = os.path.join(args.out_dir, f"seed{seed}")
    command = [sys.executable, os.path.join(ROOT, args.script), "--env-id", args.env_id, "--seed", str(seed),
               "--run-dir", run_dir, *shlex.split(args.script_flags)]
    print(" ".join(command), flush=True)
    start = time.time()
    process = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if process.returncode != 0:  # the progress bar is on stderr too: show only its end
        sys.exit(f"exit status {process.returncode}:\n{process.stderr[-3000:]}")
    wall = time.time() - start
    with open(os.path.join(run_dir, "eval.json")) as f:
        final = json.load(f)
    steps, seconds, values = read_curve(os.path.join(run_dir, "progress.csv"), args.column)
    result = {"seed": seed, "final_eval_mean": final["mean"], "final_eval_std": final["std"],
              "global_step": final["global_step"], "wall_seconds": wall}
    if args.reference_score is not None:
        result["steps_to_reference"], result["seconds_to_reference"] = first_reaching(
            steps, seconds, values, args.reference_score)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    args = tyro.cli(Args)
    os.makedirs(args.out_dir, exist_ok=True)
    results = [run_seed(args, seed) for seed in args.seeds]
    summary = {"script": args.script, "env_id": args.env_id, "script_flags": args.script_flags,
               "reference_score": args.reference_score, "column": args.column, "cpu_count": os.cpu_count(),
               "runs": results, "final_eval_mean_over_seeds": float(np.mean([r["final_eval_mean"] for r in results]))}
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{args.script} on {args.env_id}: final evaluation per seed "
          f"{', '.join(format(r['final_eval_mean'], '.1f') for r in results)}; "
          f"mean {summary['final_eval_mean_over_seeds']:.1f}")
