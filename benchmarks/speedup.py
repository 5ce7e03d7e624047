"""Table 2 of the paper on a small task: time and data to first reach a reference score, 1 vs N workers.

    python benchmarks/speedup.py --workers 1 2 --seeds 1 2 3
    python benchmarks/speedup.py --workers 1 2 4 8 16 --seeds 1 2 3 4 5 --column eval_return_mean --out-dir runs/speedup

Runs each script on CartPole-v1 with its CartPole command (docs/results.md), once per worker count and seed,
and reads from progress.csv the wall time and global step at which the score first reaches the reference: a
log row's mean training return, or with --column eval_return_mean a periodic evaluation, at the step of the
weights it evaluated. A run is interrupted there (--stop-at-reference). The runs train through benchmarks/grid.py,
one at a time (each is timed); an unfinished one starts again.
Reports medians over seeds, the speed-up in wall time of each worker count over the first, and the
ratio of their global steps (below 1: the added workers need less data in total, the paper's
super-linear case), as a table and as JSON (rewritten after every worker count).
"""

import csv
import dataclasses
import io
import json
import os
import shlex
import signal
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from typing import Literal, Optional

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grid import failed, make_runs, run_grid  # noqa: E402
from learning import first_reaching, read_curve  # noqa: E402

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
    """the score that counts as reached"""
    column: Literal["episodic_return", "eval_return_mean"] = "episodic_return"
    """what must reach it: a log row's mean training return, or a periodic evaluation (every --eval-interval
    steps, at the step of the weights it evaluated); the value-based workers explore with different epsilons,
    which their training returns mix"""
    eval_interval: int = 2000
    """steps between evaluations, with --column eval_return_mean"""
    output: str = "speedup.json"
    """where the JSON goes"""
    out_dir: Optional[str] = None
    """keep each run in <out-dir>/workers<W>/CartPole-v1/<script>/seed<S>; a rerun skips those measured (default:
    temporary)"""
    stop_at_reference: bool = True
    """interrupt a run (Ctrl-C: it saves its checkpoint and exits) once a log row reaches the reference: what
    follows cannot change the time and steps to it"""


def grid_runs(args, out_dir, script, workers):
    """The runs of one script and worker count, one per seed, in <out_dir>/workers<W>/CartPole-v1/<script>/seed<S>:
    stopped once a row reaches the reference (--stop-at-reference), started again if unfinished (a resumed run's
    clock would count its restart)."""
    eval_interval = args.eval_interval if args.column == "eval_return_mean" else 1_000_000_000
    flags = shlex.join(["--eval-interval", str(eval_interval), "--log-interval", "0.25", *COMMANDS[script]])
    stop = partial(reaches, reference_score=args.reference_score, column=args.column)
    return [dataclasses.replace(run, resume=False, stop=stop if args.stop_at_reference else None) for run in
            make_runs([script], ["CartPole-v1"], args.seeds, [f"workers{workers}={flags}"], out_dir, workers)]


def measure(runs, args):
    """Train the runs not measured yet, one at a time (each is timed), and return each run's {seconds, steps} at
    which it first reached the reference (None, None if it did not) and its evaluation spacing, also kept in its
    result.json: a repeated command reads it from there."""
    for run in runs:  # before any training: a run measured against another reference is not reused
        path = os.path.join(run.run_dir, "result.json")
        if os.path.exists(path):
            with open(path) as f:
                result = json.load(f)
            if (result["reference_score"], result["column"]) != (args.reference_score, args.column):
                sys.exit(f"{run.run_dir} was measured as {result['column']} >= {result['reference_score']}, not "
                         f"{args.column} >= {args.reference_score}: use another --out-dir")
    records = run_grid(runs, concurrent=1)
    for record in records.values():
        if record is not None and failed(record):
            sys.exit(f"{' '.join(record['command'])}\nexit status {record['returncode']}:\n{record['stderr_tail']}")
    results = []
    for run in runs:
        path, progress_csv = os.path.join(run.run_dir, "result.json"), os.path.join(run.run_dir, "progress.csv")
        if not os.path.exists(path):
            seconds, steps = reached(progress_csv, args.reference_score, args.column)
            with open(path, "w") as f:
                json.dump({"seconds": seconds, "steps": steps, "reference_score": args.reference_score,
                           "column": args.column, "evaluation_spacing": evaluation_spacing(progress_csv, args.column)},
                          f)
        with open(path) as f:
            results.append(json.load(f))
    return results


def reaches(run_dir, reference_score, column):
    """A run's stop condition: a complete row of its progress.csv at or above the reference."""
    return any_row_reaches(os.path.join(run_dir, "progress.csv"), reference_score, column)


def evaluation_spacing(progress_csv, column):
    """Median global steps between the weights of consecutive evaluations: the resolution of the steps to the
    reference with --column eval_return_mean (the evaluator plays while the workers train, so it falls behind
    --eval-interval when it gets little of the cores)."""
    steps = read_curve(progress_csv, column)[0] if column == "eval_return_mean" else []
    return float(np.median(np.diff(steps))) if len(steps) > 1 else None


def any_row_reaches(progress_csv, reference_score, column="episodic_return"):
    """Whether a complete row of a running run's progress.csv has a `column` at or above the reference (the last
    line may be half written)."""
    try:
        with open(progress_csv) as f:
            text = f.read()
    except FileNotFoundError:
        return False
    rows = csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1]))
    return any(float(row.get(column) or "-inf") >= reference_score for row in rows)


def reached(progress_csv, reference_score, column="episodic_return"):
    """(seconds, global_step) at which a run's progress.csv first reaches the reference, the seconds counted
    from the workers' first step: the scripts start the clock of the first row's sps there, so that is its
    seconds less its steps over its sps (files written before, with rows at step 0 while the workers started:
    the last of those)."""
    steps, seconds, _ = read_curve(progress_csv, "global_step")  # every row
    if (steps == 0).any():
        started = float(seconds[steps == 0].max())
    else:
        steps, seconds, sps = read_curve(progress_csv, "sps")
        started = float(seconds[0] - steps[0] / sps[0]) if len(sps) else 0.0
    at_step, at_seconds = first_reaching(*read_curve(progress_csv, column), reference_score)
    return (None, None) if at_step is None else (at_seconds - started, int(at_step))


def median(values):
    """Median over seeds, a run that never reached the reference counting as infinitely slow (None when
    that is the median: most runs did not reach it)."""
    middle = float(np.median([np.inf if v is None else v for v in values]))
    return None if np.isinf(middle) else middle


def ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator is not None else None


def main():
    args = tyro.cli(Args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind as on Ctrl-C: the running training stops too
    with tempfile.TemporaryDirectory() as scratch:
        try:
            report(args, args.out_dir or scratch)
        except KeyboardInterrupt:  # the running training saved its checkpoint and stopped
            sys.exit(130)


def report(args, out_dir):
    results = []
    for script in args.scripts:
        for workers in args.workers:
            runs = measure(grid_runs(args, out_dir, script, workers), args)
            result = {"script": script, "workers": workers}
            result.update({key: [run[key] for run in runs] for key in ("seconds", "steps", "evaluation_spacing")})
            spacings = [x for x in result["evaluation_spacing"] if x is not None]  # None: not measured on evaluations
            result.update(median_seconds=median(result["seconds"]), median_steps=median(result["steps"]),
                          median_evaluation_spacing=float(np.median(spacings)) if spacings else None)
            first = next(x for x in results + [result] if x["script"] == script)
            result["speedup"] = ratio(first["median_seconds"], result["median_seconds"])  # in wall time
            result["steps_ratio"] = ratio(result["median_steps"], first["median_steps"])  # < 1: fewer steps
            results.append(result)
            print(json.dumps(result), flush=True)
            with open(args.output, "w") as f:  # after every worker count: usable meanwhile
                json.dump({"reference_score": args.reference_score, "column": args.column, "cpu_count": os.cpu_count(),
                           "seeds": args.seeds, "results": results}, f, indent=2)
    print(f"\nCartPole-v1, {args.column} >= {args.reference_score}, medians over seeds {args.seeds}, "
          f"{os.cpu_count()} cores")
    print(f"{'script':<20} {'workers':>7} {'seconds':>8} {'steps':>8} {'speed-up':>9} {'steps x':>8} {'reached':>8} "
          f"{'eval every':>10}")
    nan = float("nan")
    for r in results:
        reached_by = f"{sum(s is not None for s in r['steps'])}/{len(r['steps'])}"
        print(f"{r['script']:<20} {r['workers']:>7} {r['median_seconds'] or nan:>8.1f} "
              f"{r['median_steps'] or nan:>8.0f} {r['speedup'] or nan:>9.2f} "
              f"{r['steps_ratio'] or nan:>8.2f} {reached_by:>8} {r['median_evaluation_spacing'] or nan:>10.0f}")


if __name__ == "__main__":
    main()
