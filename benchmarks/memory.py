"""Resident memory of a training run's whole process tree over time (a leak shows as growth).

    python benchmarks/memory.py --script a3c.py --env-id PongNoFrameskip-v4 --workers 2 --minutes 20

Starts the script as a user would, samples every process of its tree (the main process, the
workers, the evaluator, the resource tracker) every --interval seconds, then stops it with
SIGINT. RSS counts shared pages (torch's libraries, the shared model) once per process; PSS
splits them between the processes that share them, so the PSS total is the tree's real
footprint. Prints a table and writes JSON with every sample.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import tyro

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    script: str = "a3c.py"
    """the algorithm script to measure"""
    env_id: str = "PongNoFrameskip-v4"
    """environment"""
    workers: int = 2
    """actor-learner processes"""
    minutes: float = 20.0
    """how long to run"""
    interval: float = 10.0
    """seconds between samples"""
    script_flags: str = ""
    """extra flags for the script, e.g. --script-flags=--lstm"""
    output: str = "benchmarks/memory.json"
    """where to write the samples"""


def tree(pid):
    """pid and all its descendants."""
    pids, frontier = [pid], [pid]
    while frontier:
        children = subprocess.run(["pgrep", "-P", str(frontier.pop())], capture_output=True, text=True).stdout.split()
        pids += [int(child) for child in children]
        frontier += [int(child) for child in children]
    return pids


def memory_kib(pid):
    """(RSS, PSS) of one process in KiB from /proc/<pid>/smaps_rollup; zeros if it has exited."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values.get("Rss", 0), values.get("Pss", 0)


def main():
    args = tyro.cli(Args)
    run_dir = tempfile.mkdtemp(prefix="memory_")
    command = [sys.executable, os.path.join(ROOT, args.script), "--env-id", args.env_id, "--num-workers",
               str(args.workers), "--total-timesteps", str(10**10), "--run-dir", run_dir,
               *shlex.split(args.script_flags)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    start, samples = time.time(), []
    try:
        while time.time() - start < args.minutes * 60:
            time.sleep(args.interval)
            assert process.poll() is None, f"{args.script} exited with {process.returncode}"
            per_process = {pid: memory_kib(pid) for pid in tree(process.pid)}
            samples.append({"seconds": round(time.time() - start, 1), "processes": len(per_process),
                            "rss_mib": sum(rss for rss, _ in per_process.values()) / 1024,
                            "pss_mib": sum(pss for _, pss in per_process.values()) / 1024})
            print(f"{samples[-1]['seconds']:8.0f} s  {samples[-1]['processes']} processes  "
                  f"RSS {samples[-1]['rss_mib']:7.1f} MiB  PSS {samples[-1]['pss_mib']:7.1f} MiB", flush=True)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    with open(os.path.join(run_dir, "progress.csv")) as f:
        last_step = int(f.readlines()[-1].split(",")[0])
    warmup = min(120.0, args.minutes * 30)  # the first minutes (at most half the run): imports, buffers, caches
    after_warmup = [s for s in samples if s["seconds"] >= warmup]
    first, last = after_warmup[0], after_warmup[-1]
    result = {"command": shlex.join(command), "global_steps": last_step, "samples": samples,
              "pss_growth_mib_after_warmup": last["pss_mib"] - first["pss_mib"],
              "rss_growth_mib_after_warmup": last["rss_mib"] - first["rss_mib"]}
    print(f"\n{args.script} on {args.env_id}, {args.workers} workers, {args.minutes:g} min, {last_step} steps:")
    print(f"PSS {first['pss_mib']:.1f} MiB at {first['seconds']:.0f} s -> {last['pss_mib']:.1f} MiB at "
          f"{last['seconds']:.0f} s ({result['pss_growth_mib_after_warmup']:+.1f} MiB); RSS {first['rss_mib']:.1f} -> "
          f"{last['rss_mib']:.1f} MiB")
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
