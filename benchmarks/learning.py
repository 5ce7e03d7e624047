"""Run one script over several seeds and collect its learning curves.

    python benchmarks/learning.py --script a3c.py --env-id CartPole-v1 --seeds 1 2 3 \
        --out-dir benchmarks/results/cartpole/a3c --reference-score 475 \
        --script-flags="--num-workers 2 --total-timesteps 60000 --learning-rate 7e-3 --entropy-coef 0"

Each seed trains in <out-dir>/seed<S>, the script's own run directory (progress.csv: the curve, eval.json: the final
score, config.json), through benchmarks/grid.py: one seed after the other unless --concurrent or --ray-address say
otherwise, a finished seed skipped and an unfinished one resumed when the command is repeated. <out-dir>/summary.json
gathers, per seed, the final evaluation, the wall time and steps of the run, and the wall time and steps at which
the curve first reached --reference-score (see first_reaching). Draw the curves with benchmarks/plot.py.
"""

import csv
import json
import os
import shlex
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grid import Run, failed, run_grid  # noqa: E402

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
    concurrent: int = 1
    """seeds trained at once on this machine (wall times are only comparable between runs alone)"""
    ray_address: Optional[str] = None
    """run the seeds as Ray tasks on this cluster (benchmarks/grid.py)"""


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


def result_of(args, run):
    """A finished run's line of summary.json: its final evaluation, its wall time (grid.json's, summed over
    resumes) and, with --reference-score, when it first reached it."""
    with open(os.path.join(run.run_dir, "eval.json")) as f:
        final = json.load(f)
    record_path = os.path.join(run.run_dir, "grid.json")
    wall = json.load(open(record_path))["seconds"] if os.path.exists(record_path) else None  # older runs: none
    steps, seconds, values = read_curve(os.path.join(run.run_dir, "progress.csv"), args.column)
    result = {"seed": run.seed, "final_eval_mean": final["mean"], "final_eval_std": final["std"],
              "global_step": final["global_step"], "wall_seconds": wall}
    if args.reference_score is not None:
        result["steps_to_reference"], result["seconds_to_reference"] = first_reaching(
            steps, seconds, values, args.reference_score)
    return result


if __name__ == "__main__":
    args = tyro.cli(Args)
    runs = [Run(args.script, args.env_id, seed, tuple(shlex.split(args.script_flags)),
                os.path.join(args.out_dir, f"seed{seed}")) for seed in args.seeds]
    records = run_grid(runs, args.concurrent, args.ray_address)
    failures = [run.run_dir for run, record in records.items() if record and failed(record)]
    if failures:
        sys.exit(f"learning.py: failed: {', '.join(failures)} (their grid.json has the end of stderr)")
    results = [result_of(args, run) for run in runs]
    summary = {"script": args.script, "env_id": args.env_id, "script_flags": args.script_flags,
               "reference_score": args.reference_score, "column": args.column, "cpu_count": os.cpu_count(),
               "concurrent": args.concurrent, "runs": results,
               "final_eval_mean_over_seeds": float(np.mean([r["final_eval_mean"] for r in results]))}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"{args.script} on {args.env_id}: final evaluation per seed "
          f"{', '.join(format(r['final_eval_mean'], '.1f') for r in results)}; "
          f"mean {summary['final_eval_mean_over_seeds']:.1f}")
