"""Run a script's command and stop it, as Ctrl-C would (a checkpoint, exit 130), once its progress.csv has logged
an evaluation of the weights of global step --step or later: a screening run on the schedule of a longer one
(its learning rate and epsilon annealed over the full --total-timesteps), cut where the screening ends and
resumable with --resume where it stopped.

    python benchmarks/stop_at_step.py --step 750000 -- \
        python async_nstep_q.py --num-workers 2 --total-timesteps 2500000 --run-dir runs/screen/a

The command must name its --run-dir. Exits with the command's status (130 when it was stopped here, 0 when it
ended first).
"""

import csv
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import tyro


@dataclass
class Args:
    command: tyro.conf.Positional[tuple[str, ...]]
    """the command to run, after --"""
    step: int = 750_000
    """stop once an evaluation of this global step or a later one is logged"""
    poll: float = 2.0
    """seconds between looks at progress.csv"""


def evaluated_step(run_dir):
    """The latest eval_global_step in run_dir/progress.csv, or -1."""
    path = os.path.join(run_dir, "progress.csv")
    if not os.path.exists(path):
        return -1
    with open(path) as f:
        steps = [int(float(row["eval_global_step"])) for row in csv.DictReader(f) if row.get("eval_global_step")]
    return max(steps, default=-1)


def main(args):
    command = list(args.command)
    if "--run-dir" not in command:
        sys.exit("stop_at_step.py: the command must name its --run-dir")
    run_dir = command[command.index("--run-dir") + 1]
    process = subprocess.Popen(command)
    try:
        while process.poll() is None:
            if evaluated_step(run_dir) >= args.step:
                print(f"stop_at_step.py: an evaluation at step {args.step} or later is logged; stopping the run",
                      file=sys.stderr, flush=True)
                process.send_signal(signal.SIGINT)
                break
            time.sleep(args.poll)
        return process.wait()
    except KeyboardInterrupt:  # our own Ctrl-C reached the run too (one process group): let it save and exit
        return process.wait()


if __name__ == "__main__":
    sys.exit(main(tyro.cli(Args)))
