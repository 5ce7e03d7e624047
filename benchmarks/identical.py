"""Does a change leave what is computed alone? Each script trains in two checkouts with one worker and a fixed
seed, and the weights they save (model.pt) are compared tensor by tensor, bit for bit.

    git worktree add /tmp/old HEAD                       # the previous commit, beside the working tree
    python benchmarks/identical.py --old /tmp/old        # the four scripts on Pong, 3,000 steps each
    python benchmarks/identical.py --old /tmp/old --scripts a3c.py --env-ids InvertedPendulum-v5 --flags=--lstm

One worker makes the run deterministic (with more, the order of the Hogwild updates depends on the scheduler).
Writes a JSON record per run pair (--output) and exits 1 if any pair differs.
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import torch
import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("a3c.py", "async_nstep_q.py", "async_one_step_q.py", "async_sarsa.py")


@dataclass
class Args:
    old: str
    """the other checkout (for example a git worktree of the previous commit)"""
    scripts: tuple[str, ...] = SCRIPTS
    env_ids: tuple[str, ...] = ("PongNoFrameskip-v4",)
    total_timesteps: int = 3000
    seed: int = 1
    flags: str = ""
    """more flags for every run, one string"""
    output: str | None = None
    """a JSON file for the records"""


def train(checkout, script, env_id, args, run_dir):
    command = [sys.executable, os.path.join(checkout, script), "--env-id", env_id, "--num-workers", "1",
               "--total-timesteps", str(args.total_timesteps), "--seed", str(args.seed), "--run-dir", run_dir,
               "--eval-interval", str(10 * args.total_timesteps), "--eval-episodes", "1", "--eval-max-steps", "10",
               *shlex.split(args.flags)]
    result = subprocess.run(command, cwd=checkout, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed with status {result.returncode}:\n{result.stderr[-2000:]}")
    return torch.load(os.path.join(run_dir, "model.pt"), weights_only=True)["model"]


def commit(checkout):
    result = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=checkout, capture_output=True, text=True)
    return result.stdout.strip() or None


def compare(old, new):
    """Per tensor: bit-identical, and else the largest absolute difference."""
    if old.keys() != new.keys():
        return {"identical": False, "keys": sorted(set(old) ^ set(new))}
    differing = {name: float((old[name].double() - new[name].double()).abs().max())
                 for name in old if not torch.equal(old[name], new[name])}
    return {"identical": not differing, "tensors": len(old), "max_abs_difference": differing}


def main():
    args = tyro.cli(Args)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_id in args.env_ids:
            for script in args.scripts:
                runs = [train(checkout, script, env_id, args, os.path.join(tmp, f"{name}-{script}-{env_id}"))
                        for name, checkout in (("old", os.path.abspath(args.old)), ("new", ROOT))]
                records.append({"script": script, "env_id": env_id, "flags": args.flags, "old": commit(args.old),
                                "new": commit(ROOT),
                                "total_timesteps": args.total_timesteps, "seed": args.seed, **compare(*runs)})
                print(f"{script} {env_id} {args.flags}: "
                      f"{'bit-identical' if records[-1]['identical'] else 'DIFFERENT ' + str(records[-1])}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(records, f, indent=1)
    sys.exit(0 if all(record["identical"] for record in records) else 1)


if __name__ == "__main__":
    main()
