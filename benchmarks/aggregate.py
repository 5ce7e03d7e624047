"""Aggregate scores over tasks and seeds with confidence intervals (Agarwal et al. 2021, "Deep RL at the Edge of
the Statistical Precipice"): interquartile mean, mean, median and optimality gap with 95% stratified bootstrap
intervals, a performance profile and a sample-efficiency curve.

    python benchmarks/aggregate.py --out-dir benchmarks/results/atari/aggregate --runs \
        "a3c.py=benchmarks/results/atari/*/a3c/seed1" "a3c.py=benchmarks/results/pong/preset/seed1"

Each --runs entry is LABEL=GLOB, the glob matching run directories (config.json, eval.json, progress.csv) of one
method on any number of tasks (a label given twice gathers both globs); a run's task is its config.json's env_id,
and every task of a method needs the same number of runs (the bootstrap resamples runs within each task). Scores:
the final evaluation (eval.json's mean) and the best evaluation in progress.csv. Atari scores are human-normalised
(benchmarks/human_normalized.py); other tasks take a reference with --reference ENV=LOW:HIGH, normalised as
(score - LOW) / (HIGH - LOW), or are aggregated raw when every run of the grid is on that one task. Writes
aggregate.md (the table), aggregate.json, performance_profile.png and sample_efficiency.png (IQM of the evaluations
against frames) under --out-dir.

The statistics are rliable's definitions, computed here with numpy: IQM is the mean of the middle half of all
run x task scores (scipy.stats.trim_mean at 0.25), the optimality gap the mean shortfall below 1
(mean(max(1 - x, 0))), a stratified bootstrap resamples the runs of each task with replacement.
"""

import glob
import json
import os
import sys
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import frames_per_step, is_atari  # noqa: E402
from human_normalized import human_normalized  # noqa: E402
from learning import read_curve  # noqa: E402


@dataclass
class Args:
    runs: tuple[str, ...]
    """LABEL=GLOB entries; a label given twice gathers both globs"""
    out_dir: str = "aggregate"
    reference: tuple[str, ...] = ()
    """ENV=LOW:HIGH per non-Atari task: its score normalised as (score - LOW) / (HIGH - LOW)"""
    repetitions: int = 2000
    """bootstrap resamples"""
    seed: int = 0
    """of the bootstrap"""
    points: int = 50
    """frames at which the sample-efficiency curve is drawn"""


def iqm(scores):
    """The mean of the middle half: a quarter of the scores (rounded down) cut from each end."""
    x = np.sort(np.ravel(scores))
    cut = int(0.25 * len(x))
    return float(x[cut:len(x) - cut].mean())


def optimality_gap(scores, gamma=1.0):
    return float(np.mean(np.maximum(gamma - np.ravel(scores), 0.0)))


METRICS = {"IQM": iqm, "mean": lambda x: float(np.mean(x)), "median": lambda x: float(np.median(x)),
           "optimality gap": optimality_gap}


def stratified_bootstrap(scores, metric, repetitions, rng):
    """The 95% percentile interval of `metric` over resamples of the runs (rows) of each task (column) in turn."""
    runs, tasks = scores.shape
    rows = rng.integers(0, runs, (repetitions, runs, tasks))
    values = [metric(np.take_along_axis(scores, rows[i], axis=0)) for i in range(repetitions)]
    return tuple(float(v) for v in np.percentile(values, [2.5, 97.5]))


def normalizer(env_id, references):
    """score -> normalised score, or None for a task with no reference."""
    if env_id in references:
        low, high = references[env_id]
        return lambda score: (score - low) / (high - low)
    if is_atari(env_id):
        try:
            human_normalized(env_id, 0.0)
        except ValueError as error:
            raise SystemExit(f"aggregate.py: {error}: give --reference {env_id}=LOW:HIGH") from None
        return lambda score: human_normalized(env_id, score)
    return None


def load_runs(label, patterns):
    """{env_id: [run directory, ...]} of one method, from its globs."""
    tasks = {}
    for pattern in patterns:
        run_dirs = sorted(glob.glob(pattern))
        if not run_dirs:
            raise SystemExit(f"aggregate.py: --runs {label}={pattern} matches no run directory")
        for run_dir in run_dirs:
            if not os.path.isfile(os.path.join(run_dir, "eval.json")):
                raise SystemExit(f"aggregate.py: {run_dir} has no eval.json (an unfinished run?)")
            with open(os.path.join(run_dir, "config.json")) as f:
                tasks.setdefault(json.load(f)["env_id"], []).append(run_dir)
    counts = {env_id: len(dirs) for env_id, dirs in tasks.items()}
    if len(set(counts.values())) > 1:
        raise SystemExit(f"aggregate.py: {label} has different numbers of runs per task {counts}: the stratified "
                         "bootstrap needs the same number on every task")
    return tasks


def run_scores(run_dir):
    """(final, best, evaluation steps, evaluation means) of one run directory."""
    with open(os.path.join(run_dir, "eval.json")) as f:
        final = json.load(f)["mean"]
    steps, _, means = read_curve(os.path.join(run_dir, "progress.csv"), "eval_return_mean")
    return final, float(max([final, *means])), steps, means


def main(args):
    references = {}
    for entry in args.reference:
        env_id, _, bounds = entry.rpartition("=")
        try:
            low, high = (float(x) for x in bounds.split(":"))
        except ValueError:
            low = high = None
        if not env_id or low is None or low == high:
            raise SystemExit(f"aggregate.py: --reference {entry!r} is not ENV=LOW:HIGH with LOW != HIGH")
        references[env_id] = (low, high)
    patterns = {}  # a label given twice gathers both globs
    for entry in args.runs:
        label, _, pattern = entry.partition("=")
        patterns.setdefault(label, []).append(pattern)
    methods = {label: load_runs(label, globs) for label, globs in patterns.items()}
    env_ids = sorted({env_id for tasks in methods.values() for env_id in tasks})
    norms = {env_id: normalizer(env_id, references) for env_id in env_ids}
    raw = [env_id for env_id, norm in norms.items() if norm is None]
    if raw and len(env_ids) > 1:
        raise SystemExit(f"aggregate.py: no reference for {', '.join(raw)}: give --reference ENV=LOW:HIGH, or "
                         "aggregate one task at a time")
    norms = {env_id: norm or (lambda score: score) for env_id, norm in norms.items()}
    # the optimality gap is the shortfall below 1, a normalised score's target: raw returns have none
    metrics = {name: metric for name, metric in METRICS.items() if not (raw and name == "optimality gap")}
    rng = np.random.default_rng(args.seed)
    report, curves, finals = {}, {}, {}
    for label, tasks in methods.items():
        runs = {env_id: [run_scores(d) for d in dirs] for env_id, dirs in tasks.items()}
        report[label] = {"tasks": {}, "final": {}, "best": {}}
        for env_id, scores in runs.items():
            report[label]["tasks"][env_id] = {"final": [s[0] for s in scores], "best": [s[1] for s in scores]}
        for kind, index in (("final", 0), ("best", 1)):
            matrix = np.array([[norms[env_id](s[index]) for s in runs[env_id]] for env_id in sorted(runs)]).T
            if kind == "final":
                finals[label] = matrix
            for name, metric in metrics.items():  # one run per task leaves nothing to resample: no interval
                ci95 = list(stratified_bootstrap(matrix, metric, args.repetitions, rng)) if len(matrix) > 1 else None
                report[label][kind][name] = {"value": metric(matrix), "ci95": ci95}
        curves[label] = sample_efficiency(runs, norms, args.points)
    os.makedirs(args.out_dir, exist_ok=True)
    normalised = "raw" if raw else "normalised"
    with open(os.path.join(args.out_dir, "aggregate.json"), "w") as f:
        json.dump({"scores": normalised, "references": references, "methods": report}, f, indent=1)
    with open(os.path.join(args.out_dir, "aggregate.md"), "w") as f:
        f.write(table(report, normalised))
    plot(finals, curves, args.out_dir, normalised)
    print(table(report, normalised))


def sample_efficiency(runs, norms, points):
    """(frames, IQM) of the normalised evaluations, each run interpolated onto one grid up to the shortest run."""
    series = []
    for env_id, scores in runs.items():
        frames = frames_per_step(env_id)
        series += [(steps * frames, norms[env_id](means)) for _, _, steps, means in scores if len(steps)]
    if not series:
        return None
    grid = np.linspace(max(s[0][0] for s in series), min(s[0][-1] for s in series), points)
    values = np.array([np.interp(grid, frames, means) for frames, means in series])
    return grid, np.array([iqm(values[:, i]) for i in range(points)])


def table(report, normalised):
    """Markdown: the aggregates with their intervals, then each task's raw scores."""
    names = list(next(iter(report.values()))["final"])  # the metrics computed
    lines = [f"Scores {normalised}; 95% stratified bootstrap intervals in brackets (none with one run per task).",
             "", "| method | score | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for label, result in report.items():
        for kind in ("final", "best"):
            cells = [number(m["value"]) + (f" [{number(m['ci95'][0])}, {number(m['ci95'][1])}]" if m["ci95"] else "")
                     for m in result[kind].values()]
            lines.append(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    lines += ["", "| method | task | runs | final, per run | best, per run |", "|---|---|---|---|---|"]
    for label, result in report.items():
        for env_id, scores in result["tasks"].items():
            final, best = (", ".join(f"{x:.4g}" for x in scores[kind]) for kind in ("final", "best"))
            lines.append(f"| {label} | {env_id} | {len(scores['final'])} | {final} | {best} |")
    return "\n".join(lines) + "\n"


def number(x):
    """Three significant digits, but a raw return of 1,000 or more in full (not 1e+03)."""
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def plot(finals, curves, out_dir, normalised):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6, 4))
    every = np.concatenate([m.ravel() for m in finals.values()])
    taus = np.linspace(min(every.min(), 0.0), max(every.max(), 1.0), 200)
    for label, matrix in finals.items():
        axis.plot(taus, [(matrix > tau).mean() for tau in taus], label=label)
    axis.set(xlabel=f"final score ({normalised}) tau", ylabel="fraction of runs with score > tau",
             title="Performance profile")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, "performance_profile.png"), dpi=100)
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        if curve is not None:
            axis.plot(*curve, label=label)
    axis.set(xlabel="frames", ylabel=f"IQM of the evaluations ({normalised})", title="Sample efficiency")
    axis.legend()
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, "sample_efficiency.png"), dpi=100)
    plt.close("all")


if __name__ == "__main__":
    main(tyro.cli(Args))
