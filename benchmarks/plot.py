"""Learning curves from progress.csv files: mean and spread over seeds, against steps and wall time.

    python benchmarks/plot.py --title "CartPole-v1, 2 workers on 2 cores" --output cartpole.png \
        --runs "a3c.py=benchmarks/results/cartpole/a3c/seed*" "SB3 A2C=benchmarks/results/cartpole/sb3/seed*"

Each --runs entry is LABEL=GLOB, the glob matching one run directory per seed. The PNG has
a panel per --x (default two: x = agent steps, x = wall seconds); each label draws the
mean over its seeds and a band from the lowest to the highest seed. Curves are compared only where every seed
has data (up to the shortest run).
"""

import glob
import os
import sys
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from learning import read_curve  # noqa: E402


@dataclass
class Args:
    runs: tuple[str, ...]
    """LABEL=GLOB entries, one per method"""
    output: str = "curves.png"
    title: str = ""
    column: str = "episodic_return"
    """progress.csv column to draw: episodic_return (training) or eval_return_mean"""
    smooth: int = 5
    """moving average over this many rows (1: none)"""
    points: int = 200
    """x positions the seeds are interpolated onto"""
    x: tuple[str, ...] = ("steps", "seconds")
    """one panel per entry: steps, frames, seconds (wall time is only comparable between runs alone on a machine)"""
    frames_per_step: int = 1
    """emulator frames per agent step for the frames panel: 4 on Atari"""
    mark: tuple[str, ...] = ()
    """LABEL=PANEL:X,Y, a point to mark on that panel (e.g. "peer's published curve=frames:8e6,20")"""


def run_directories(entries):
    """LABEL=GLOB entries -> {label: sorted run directories}; exits with a message where a glob matches none."""
    methods = {}
    for entry in entries:
        label, pattern = entry.split("=", 1)
        methods[label] = sorted(glob.glob(pattern))
        if not methods[label]:
            sys.exit(f"{pattern}: no run directory matches")
    return methods


def smoothed(values, window):
    """Trailing moving average; the first rows average what exists so far."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def mean_and_spread(curves, points):
    """curves: (x, y) pairs, one per seed, x increasing. Interpolate every seed onto a common grid
    from the largest first x to the smallest last x; return grid, mean, lowest and highest seed."""
    start, end = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.linspace(start, end, points)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def draw(args, methods):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(args.x), figsize=(5.5 * len(args.x), 4), sharey=True, squeeze=False)
    axes = axes[0]
    for axis, x in zip(axes, args.x, strict=True):
        scale = args.frames_per_step if x == "frames" else 1
        for label, runs in methods.items():
            curves = [(run[0 if x != "seconds" else 1] * scale, smoothed(run[2], args.smooth)) for run in runs]
            grid, mean, low, high = mean_and_spread(curves, args.points)
            (line,) = axis.plot(grid, mean, label=label if len(runs) == 1 else f"{label} ({len(runs)} seeds)")
            axis.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
        for entry in args.mark:
            label, point = entry.split("=", 1)
            panel, coordinates = point.split(":", 1)
            if panel == x:
                mark_x, mark_y = (float(value) for value in coordinates.split(","))
                axis.plot([mark_x], [mark_y], "k*", markersize=12, label=label)
        axis.legend(loc="best", fontsize=8)
        axis.set_xlabel({"steps": "agent steps (all workers)", "frames": f"emulator frames ({scale} per agent step)",
                         "seconds": "wall time (s)"}[x])
    axes[0].set_ylabel({"episodic_return": "training episode return", "eval_return_mean": "evaluation return"}
                       .get(args.column, args.column))
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.suptitle(args.title)
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)


if __name__ == "__main__":
    args = tyro.cli(Args)
    methods = {label: [read_curve(os.path.join(d, "progress.csv"), args.column) for d in directories]
               for label, directories in run_directories(args.runs).items()}
    draw(args, methods)
    print(f"wrote {args.output}")
