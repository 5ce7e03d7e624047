"""The paper's robustness experiment: final scores of many runs with random learning rates, per optimizer.

    python benchmarks/robustness.py --script a3c.py --env-id CartPole-v1 --runs 20 \
        --optimizers shared_rmsprop rmsprop momentum_sgd --out-dir benchmarks/results/robustness/a3c_cartpole \
        --threshold 475 --script-flags="--num-workers 2"

Run i (0, 1, ...) draws its learning rate from LogUniform(--lr-low, --lr-high) with a generator seeded by i, and
trains with --seed base + i, so with fresh initial weights (Figure 2 and the supplement's robustness figures). Run i
uses the same rate and seed for every optimizer: the optimizers are compared on the same draws. The runs go one
after the other (--concurrent or --ray-address: benchmarks/grid.py), each on the cores --script-flags give it, in
<out-dir>/<optimizer>/run<i>, the script's own run directory. A run with an eval.json is finished and skipped when
the command is repeated, so an interrupted experiment continues where it stopped (an unfinished run resumes from
its checkpoint). <out-dir>/summary.json holds each run's
rate, seed, final evaluation and best periodic evaluation, and per optimizer the fraction of runs whose final
evaluation reaches --threshold and the range of rates those runs had; <out-dir>/robustness.png draws final score
against learning rate (log axis, a colour per optimizer) beside the scores sorted from best to worst.
"""

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
from learning import read_curve  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    script: str  # a3c.py, async_nstep_q.py, async_one_step_q.py or async_sarsa.py
    env_id: str
    out_dir: str  # <out-dir>/<optimizer>/run<i> per run, summary.json and robustness.png
    runs: int = 20  # runs per optimizer
    optimizers: tuple[str, ...] = ("shared_rmsprop", "rmsprop", "momentum_sgd")
    lr_low: float = 1e-4  # the paper's LogUniform(1e-4, 1e-2)
    lr_high: float = 1e-2
    base_seed: int = 1000  # run i trains with --seed base_seed + i
    threshold: float = 475.0  # the score a run must reach in its final evaluation to count as solved
    script_flags: str = ""  # the script's other flags, as one string (budget, workers)
    concurrent: int = 1  # runs at once on this machine (benchmarks/grid.py)
    ray_address: Optional[str] = None  # run them as Ray tasks on this cluster (benchmarks/grid.py)


def learning_rate(run, low, high):
    """Run `run`'s rate: LogUniform(low, high) from a generator seeded by the run's index alone."""
    return float(np.exp(np.random.default_rng(run).uniform(np.log(low), np.log(high))))


def grid_runs(args):
    """{(optimizer, i): its Run}: run i of every optimizer, then run i + 1 (drift in the machine hits all alike)."""
    runs = {}
    for i in range(args.runs):
        for optimizer in args.optimizers:
            flags = ("--learning-rate", repr(learning_rate(i, args.lr_low, args.lr_high)), "--optimizer", optimizer,
                     *shlex.split(args.script_flags))
            runs[optimizer, i] = Run(args.script, args.env_id, args.base_seed + i, flags,
                                     os.path.join(args.out_dir, optimizer, f"run{i}"))
    return runs


def record_of(args, optimizer, i, run, grid_record):
    """Run i's line of summary.json. A run that diverged (exit 1, non-finite values) is a score of its own, not a
    crash: it gets an eval.json of its own, so that a rerun skips it too."""
    if grid_record and grid_record["returncode"] == 1 and "non-finite" in grid_record["stderr_tail"]:
        with open(os.path.join(run.run_dir, "eval.json"), "w") as f:
            json.dump({"mean": None, "diverged": True}, f)
    with open(os.path.join(run.run_dir, "eval.json")) as f:
        final = json.load(f)["mean"]
    progress = os.path.join(run.run_dir, "progress.csv")
    evaluations = read_curve(progress, "eval_return_mean")[2] if final is not None else []
    return {"optimizer": optimizer, "run": i, "seed": run.seed, "learning_rate": learning_rate(i, args.lr_low,
            args.lr_high), "final": final, "best": float(np.max(evaluations)) if len(evaluations) else final}


def summarize(records, threshold):
    """Per optimizer: runs, the fraction whose final evaluation reaches `threshold`, and the rates those had."""
    summary = {}
    for optimizer in dict.fromkeys(record["optimizer"] for record in records):
        mine = [record for record in records if record["optimizer"] == optimizer]
        solved = [record["learning_rate"] for record in mine if (record["final"] or -np.inf) >= threshold]
        summary[optimizer] = {"runs": len(mine), "solved": len(solved), "fraction_solved": len(solved) / len(mine),
                              "solved_lr_range": [min(solved), max(solved)] if solved else None}
    return summary


def plot(records, args, path):
    try:
        import matplotlib
    except ImportError:  # the runs and summary.json need no plotting library
        print("matplotlib is not installed (pip install -r requirements.txt): no robustness.png")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_rate, ranked) = plt.subplots(1, 2, figsize=(11, 4))
    for optimizer in args.optimizers:
        mine = [record for record in records if record["optimizer"] == optimizer and record["final"] is not None]
        by_rate.scatter([record["learning_rate"] for record in mine], [record["final"] for record in mine],
                        label=optimizer, s=18)
        ranked.plot(sorted((record["final"] for record in mine), reverse=True), marker="o", ms=3, label=optimizer)
    by_rate.set(xscale="log", xlim=(args.lr_low, args.lr_high), xlabel="learning rate", ylabel="final evaluation score")
    by_rate.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels at the decades only
    ranked.set(xlabel="run (sorted by final score)", ylabel="final evaluation score")
    for axes in (by_rate, ranked):
        axes.axhline(args.threshold, color="grey", lw=0.8, ls="--")
        axes.legend()
    figure.suptitle(f"{args.script} on {args.env_id}: {len(records) // len(args.optimizers)} runs per optimizer, "
                    f"learning rate ~ LogUniform({args.lr_low:g}, {args.lr_high:g})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    args = tyro.cli(Args)
    runs = grid_runs(args)
    records = run_grid(list(runs.values()), args.concurrent, args.ray_address)
    failures = [f"{run.run_dir}:\n{record['stderr_tail'][-1000:]}" for run, record in records.items()
                if record and failed(record) and "non-finite" not in record["stderr_tail"]]
    if failures:
        sys.exit("robustness.py: failed: " + "\n".join(failures))
    results = [record_of(args, optimizer, i, run, records[run]) for (optimizer, i), run in runs.items()]
    summary = {"script": args.script, "env_id": args.env_id, "lr_range": [args.lr_low, args.lr_high],
               "threshold": args.threshold, "script_flags": args.script_flags,
               "optimizers": summarize(results, args.threshold), "runs": results}
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for optimizer, result in summary["optimizers"].items():
        print(f"{optimizer}: {result['solved']}/{result['runs']} reach {args.threshold:g}; "
              f"rates that do: {result['solved_lr_range']}")
    plot(results, args, os.path.join(args.out_dir, "robustness.png"))


if __name__ == "__main__":
    main()
