"""Where one worker's time goes: each stage of a script's worker loop as a share of the loop and in ms per agent step.

    python benchmarks/profile.py --script a3c.py --env-id PongNoFrameskip-v4 --steps 3000 --repeats 3

The script's own worker() runs in this process, one worker, its preset and flags as the command line would give them
(--script-flags), with a clock around the script's own functions: play() (less env.step: the acting forward pass and
sampling), env.step (the emulator and the preprocessing), segment_loss() (the learning forward pass over the segment
and the loss), apply_gradient() (less the optimizer's step: the backward pass and the clip), the optimizer's step,
Shared.sync (theta' <- theta) and, in the value-based scripts, refresh_target(); "rest of the loop" is what is left.
The value-based scripts run with their final epsilons (--epsilon-anneal-steps 1) unless the flags say otherwise: while
epsilon anneals from 1 most actions are random and skip the acting forward pass.
The first --warmup steps are not counted. Each repeat is a fresh model and worker; the table gives each stage's
median over repeats. --script may be another checkout's script (old/a3c.py): its own common.py is imported with it,
so one command profiles any commit. --out writes the table as JSON.
"""

import importlib.util
import json
import os
import shlex
import sys
import time
import types
from dataclasses import dataclass

import numpy as np
import tyro

STAGES = {  # stage: what the clock is around, less the stage nested in it
    "acting (forward pass, sampling)": ("play", "env.step"),
    "env.step (emulator, preprocessing)": ("env.step", None),
    "learning forward and loss": ("segment_loss", None),
    "backward and clip": ("apply_gradient", "optimizer.step"),
    "optimizer step": ("optimizer.step", None),
    "sync theta' <- theta": ("sync", None),
    "target refresh": ("refresh_target", None),
}


@dataclass
class Args:
    script: str  # a3c.py, async_nstep_q.py, async_one_step_q.py, async_sarsa.py, or another checkout's copy
    env_id: str = "PongNoFrameskip-v4"
    steps: int = 3000  # agent steps per repeat, counted after the warmup
    warmup: int = 300
    repeats: int = 3
    script_flags: str = ""  # more flags for the script, as on its command line
    out: str = ""  # a JSON file for the table


def load(script):
    """The script as a module, its directory first on sys.path so that it imports its own common.py."""
    path = os.path.abspath(script)
    sys.path.insert(0, os.path.dirname(path))
    sys.modules.pop("common", None)
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Outbox:
    """The worker's pipe: what it sends is dropped."""

    def send(self, message):
        pass


def profile_once(module, args, warmup):
    """Run worker(0) to args.total_timesteps with clocks; returns {clocked name: seconds} after the warmup."""
    shared = module.Shared(module.build_model(args), args, module.mp.get_context("spawn"))
    totals, started = dict.fromkeys([name for name, _ in STAGES.values()] + ["loop"], 0.0), []

    def clocked(name, function):
        def timed(*a, **k):
            start = time.perf_counter()
            result = function(*a, **k)
            if shared.global_step() >= warmup:
                if not started:  # the clock of the whole loop starts with the first stage counted
                    started.extend((start, shared.global_step()))
                totals[name] += time.perf_counter() - start
            return result
        return timed

    make_env, optimizer_step = module.make_env, shared.optimizer.step

    def make_clocked_env(*a, **k):
        env = make_env(*a, **k)
        env.step = clocked("env.step", env.step)
        return env

    module.make_env = make_clocked_env
    shared.optimizer.step = clocked("optimizer.step", optimizer_step)
    functions = {name: getattr(module, name) for name in ("play", "segment_loss", "apply_gradient", "refresh_target")
                 if hasattr(module, name)}
    for name, function in functions.items():
        setattr(module, name, clocked(name, function))
    sync = module.Shared.sync
    module.Shared.sync = clocked("sync", sync)
    try:
        module.worker(0, 1, args, shared, Outbox())
    finally:
        module.make_env, module.Shared.sync = make_env, sync
        for name, function in functions.items():
            setattr(module, name, function)
    totals["loop"] = time.perf_counter() - started[0]
    totals["steps"] = shared.global_step() - started[1]
    return totals


def main():
    options = tyro.cli(Args)
    module = load(options.script)
    total = options.steps + options.warmup
    sys.argv = [module.SCRIPT, "--env-id", options.env_id, "--num-workers", "1", "--total-timesteps", str(total),
                *shlex.split(options.script_flags)]
    if hasattr(module, "epsilon_at") and "--epsilon-anneal-steps" not in sys.argv:
        sys.argv += ["--epsilon-anneal-steps", "1"]  # value-based: the final epsilons, or most steps skip the network
    args = module.parse_args()[0]
    module.mp.parent_process = lambda: types.SimpleNamespace(is_alive=lambda: True)  # the worker's "main process"
    module.torch.set_num_threads(1)  # as child() sets it in every worker process
    runs = [profile_once(module, args, options.warmup) for _ in range(options.repeats)]
    table = {}
    for stage, (name, nested) in STAGES.items():
        if any(run[name] for run in runs):
            table[stage] = [(run[name] - (run[nested] if nested else 0.0)) / run["steps"] for run in runs]
    table["rest of the loop"] = [(run["loop"] - sum(run[name] for name in ("play", "segment_loss", "apply_gradient",
                                                                            "sync", "refresh_target"))) / run["steps"]
                                 for run in runs]
    per_step = float(np.median([run["loop"] / run["steps"] for run in runs]))
    result = {"script": options.script, "env_id": options.env_id, "command_line": sys.argv[1:], "steps": options.steps,
              "repeats": options.repeats,
              "ms_per_step": 1000 * per_step, "steps_per_second": 1 / per_step,
              "stages": {stage: {"ms_per_step": 1000 * float(np.median(times)),
                                 "share": float(np.median(times)) / per_step} for stage, times in table.items()}}
    print(f"{options.script} on {options.env_id}, one worker: {result['ms_per_step']:.3f} ms per agent step "
          f"({result['steps_per_second']:.0f} steps/s), medians of {options.repeats} x {options.steps} steps")
    print("| stage | share | ms per step |\n|---|---|---|")
    for stage, values in result["stages"].items():
        print(f"| {stage} | {100 * values['share']:.1f}% | {values['ms_per_step']:.3f} |")
    if options.out:
        os.makedirs(os.path.dirname(os.path.abspath(options.out)), exist_ok=True)
        json.dump(result, open(options.out, "w"), indent=1)


if __name__ == "__main__":
    main()
