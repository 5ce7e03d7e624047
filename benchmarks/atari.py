"""The Atari figure and table of docs/atari.md: a panel per game (the paper's Figure 1 layout),
evaluation score against frames, a line per method and seed, the published scores marked.

    python benchmarks/atari.py --output benchmarks/results/atari.png \
        --runs "a3c.py=benchmarks/results/atari/*/a3c/seed*" "n-step Q=benchmarks/results/atari/*/nstep_q/seed*"

Each --runs entry is LABEL=GLOB; a run's game is read from its config.json. The table (printed
as Markdown) gives each run's frames, final evaluation (eval.json: the last one), best
periodic evaluation, wall time and both as human-normalised scores (human_normalized.py).
Every evaluation is the scripts' own: whole games from 1-30 no-op starts, capped at 27,000
agent steps, scores unclipped. The published scores follow other protocols (PUBLISHED).
"""

import json
import os
import sys
from dataclasses import dataclass

import tyro

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from human_normalized import game_of, human_normalized  # noqa: E402
from learning import read_curve  # noqa: E402
from plot import run_directories  # noqa: E402

GAMES = ("Pong", "Breakout", "BeamRider", "Qbert", "SpaceInvaders")
# label -> {game: score}; how each was measured is in the label
SB3, PFRL, PAPER = ("SB3 A2C, 40M frames (final)", "PFRL A3C, 200M frames (best)",
                     "paper A3C FF, 1 day on 16 cores (human starts)")
PUBLISHED = {
    SB3: {"Pong": 17.3, "Breakout": 279.8, "BeamRider": 2890, "Qbert": 3882, "SpaceInvaders": 627},
    PFRL: {"Pong": 20.9, "Breakout": 581.0, "BeamRider": 8883, "Qbert": 20722, "SpaceInvaders": 1044},
    PAPER: {"Pong": 11.4, "Breakout": 551.6, "BeamRider": 13235.9, "Qbert": 13752.3, "SpaceInvaders": 2214.7},
}
LINE_STYLES = {SB3: (0, (5, 3)), PFRL: (0, (1, 2)), PAPER: (0, (3, 2, 1, 2))}
FRAMES_PER_STEP = 4


@dataclass
class Args:
    runs: tuple[str, ...]
    """LABEL=GLOB entries, the glob matching one run directory per seed (any games)"""
    output: str = "atari.png"
    table: str = ""
    """also write the Markdown table to this file"""


def read_run(run_dir):
    """One run: its game, seed, eval curve (frames, scores), final and best evaluation, frames and hours."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    steps, seconds, scores = read_curve(os.path.join(run_dir, "progress.csv"), "eval_return_mean")
    last_steps, last_seconds, _ = read_curve(os.path.join(run_dir, "progress.csv"), "sps")
    final = None
    if os.path.exists(os.path.join(run_dir, "eval.json")):
        with open(os.path.join(run_dir, "eval.json")) as f:
            final = json.load(f)["mean"]
    best = max([*scores.tolist(), *([final] if final is not None else [])], default=None)
    return {"game": game_of(config["env_id"]), "seed": config["seed"], "frames": steps * FRAMES_PER_STEP,
            "scores": scores, "final": final, "best": best,
            "total_frames": int(last_steps[-1]) * FRAMES_PER_STEP if len(last_steps) else 0,
            "hours": float(last_seconds[-1]) / 3600 if len(last_seconds) else 0.0, "env_id": config["env_id"]}


def table(methods):
    """Markdown: a row per run, sorted by game then method, beside SB3's A2C (the goal) and the paper."""
    def cell(value, env_id):
        return "-" if value is None else f"{value:,.1f} ({human_normalized(env_id, value):.0%})"
    lines = ["| game | method | seed | frames | hours | final evaluation (human-normalised) | best evaluation | "
             "SB3 A2C, 40M frames | paper A3C FF, 1 day |", "|---|---|---|---|---|---|---|---|---|"]
    runs = [(label, run) for label, label_runs in methods.items() for run in label_runs]
    order = {game: index for index, game in enumerate(GAMES)}
    for label, run in sorted(runs, key=lambda item: (order.get(item[1]["game"], len(GAMES)), item[1]["game"])):
        published = [PUBLISHED[key].get(run["game"]) for key in (SB3, PAPER)]
        lines.append(f"| {run['game']} | {label} | {run['seed']} | {run['total_frames'] / 1e6:.1f}M | "
                     f"{run['hours']:.1f} | {cell(run['final'], run['env_id'])} | {cell(run['best'], run['env_id'])}"
                     f" | {' | '.join('-' if p is None else f'{p:,}' for p in published)} |")
    return "\n".join(lines)


def draw(methods, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {run["game"] for runs in methods.values() for run in runs}
    games = [game for game in GAMES if game in present] + sorted(present - set(GAMES))
    figure, axes = plt.subplots(1, len(games), figsize=(max(4.2 * len(games), 9), 3.6), squeeze=False)
    for axis, game in zip(axes[0], games, strict=True):
        for method, (label, runs) in enumerate(methods.items()):  # a color per method, a line style per seed
            for index, run in enumerate(run for run in runs if run["game"] == game):
                axis.plot(run["frames"] / 1e6, run["scores"], ("-", "--", ":", "-.")[index % 4], color=f"C{method}",
                          marker=".", label=f"{label}, seed {run['seed']}")
        for label, scores in PUBLISHED.items():
            if game in scores:
                axis.axhline(scores[game], color="gray", linestyle=LINE_STYLES[label], linewidth=1, label=label)
        axis.set_title(game)
        axis.set_xlabel("emulator frames (millions)")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("evaluation score (10 games)")
    handles = {}
    for axis in axes[0]:
        lines, labels = axis.get_legend_handles_labels()
        handles.update(zip(labels, lines, strict=True))
    columns = min(len(handles), 2 if len(games) < 3 else 4)
    rows = -(-len(handles) // columns)
    figure.set_figheight(3.6 + 0.22 * rows)  # the legend below the panels, 0.22 inch a row
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=columns, fontsize=8)
    figure.tight_layout(rect=(0, (0.22 * rows + 0.1) / (3.6 + 0.22 * rows), 1, 1))
    figure.savefig(output, dpi=100)


if __name__ == "__main__":
    args = tyro.cli(Args)
    methods = {label: [read_run(d) for d in directories] for label, directories in run_directories(args.runs).items()}
    markdown = table(methods)
    print(markdown)
    if args.table:
        with open(args.table, "w") as f:
            f.write(markdown + "\n")
    draw(methods, args.output)
    print(f"wrote {args.output}")
