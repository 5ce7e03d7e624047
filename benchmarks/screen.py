"""The screening table: training return per window of global steps with what each script logs of its
exploration (a3c.py: the policy's entropy; the value-based scripts: the workers' mean epsilon and the mean
Q-value), and the first window whose mean reaches each milestone, for one or more runs.

    python benchmarks/screen.py benchmarks/results/pong/screen/*

A row of progress.csv averages the episodes (whole games on Atari) that ended in its log
interval; a window averages its rows, weighted alike. Windows shorter than about 1M Atari
steps tell settings apart poorly: Pong's return moves little before that.
"""

import os
import sys
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from learning import read_curve  # noqa: E402


@dataclass
class Args:
    run_dirs: tyro.conf.Positional[tuple[str, ...]]
    """run directories (each with a progress.csv)"""
    window: int = 100_000
    """global steps per window"""
    milestones: tuple[float, ...] = (-10.0, 0.0, 18.0)
    """report the first window whose mean training return reaches each of these"""


DIAGNOSTICS = ("entropy", "epsilon", "q_values")  # progress.csv columns shown per window where a run has them


def windows(steps, values, window):
    """{window start: mean of the values logged in [start, start + window)}"""
    starts = (steps // window).astype(int) * window
    return {int(start): float(values[starts == start].mean()) for start in np.unique(starts)}


def first_window_reaching(means, milestone):
    return next((start for start, mean in sorted(means.items()) if mean >= milestone), None)


def main(args):
    for run_dir in args.run_dirs:
        path = os.path.join(run_dir, "progress.csv")
        steps, _, returns = read_curve(path, "episodic_return")
        returns_by_window = windows(steps, returns, args.window)
        logged = {column: windows(*read_curve(path, column)[::2], args.window) for column in DIAGNOSTICS}
        logged = {column: means for column, means in logged.items() if means}  # the columns this script logs
        evaluations = list(zip(*read_curve(path, "eval_return_mean")[::2], strict=True))
        print(f"{run_dir}: {int(steps[-1]) if len(steps) else 0} steps")
        for start, mean in returns_by_window.items():
            print(f"  {start / 1e6:5.2f}M  return {mean:7.2f}" + "".join(
                f"  {column} {means.get(start, float('nan')):.3f}" for column, means in logged.items()))
        reached = {m: first_window_reaching(returns_by_window, m) for m in args.milestones}
        print("  first window reaching " + ", ".join(
            f"{m:g}: {'-' if s is None else f'{s / 1e6:.1f}M'}" for m, s in reached.items()))
        print("  evaluations " + ", ".join(f"{s / 1e6:.2f}M: {v:.1f}" for s, v in evaluations))


if __name__ == "__main__":
    main(tyro.cli(Args))
