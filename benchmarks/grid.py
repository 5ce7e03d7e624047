"""Run a grid of trainings, scripts x env ids x seeds x flag sets, on this machine or on a Ray cluster.

    python benchmarks/grid.py --scripts a3c.py async_nstep_q.py --env-ids CartPole-v1 Acrobot-v1 --seeds 1 2 3 \
        --out-dir runs/grid
    python benchmarks/grid.py --scripts a3c.py --env-ids PongNoFrameskip-v4 BreakoutNoFrameskip-v4 --seeds 1 2 3 \
        --num-workers 16 --flag-sets "preset=" "lr1e-3=--learning-rate 1e-3" --out-dir /shared/grid --ray-address auto

Each run trains in <out-dir>/<flag set>/<env id>/<script>/seed<S>, the script's own run directory, and the grid
writes grid.json beside its files (the command, the exit status, the seconds it took, the host). The same command
again skips the finished runs (eval.json), resumes the unfinished ones from their checkpoint.pt and starts again
those that stopped before their first checkpoint: an interrupted grid continues where it stopped. On this machine,
as many runs go at once as the cores hold --num-workers each (--concurrent to choose; wall times are only
comparable between runs alone on a machine); with --ray-address each run is a Ray task asking for --num-workers
CPUs, --out-dir must be on storage that every node shares and the repository at the same path on every node
(docs/benchmarks.md). Ctrl-C stops the grid: each running run saves its checkpoint first. Exits 1 if a run
failed, after the others have finished.
"""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Optional

import tyro
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Args:
    scripts: tuple[str, ...]
    """a3c.py, async_nstep_q.py, async_one_step_q.py, async_sarsa.py"""
    env_ids: tuple[str, ...]
    seeds: tuple[int, ...] = (1, 2, 3)
    out_dir: str = "runs/grid"
    num_workers: int = 2
    """each run's --num-workers, and the CPUs a run asks for"""
    flag_sets: tuple[str, ...] = ("default=",)
    """NAME=FLAGS entries: each run's other flags, as one string per set"""
    concurrent: Optional[int] = None
    """runs at once on this machine (default: its cores over --num-workers)"""
    ray_address: Optional[str] = None
    """a Ray cluster's address ("auto" on one of its nodes), or "local" to start Ray on this machine"""


@dataclass(frozen=True)
class Run:
    script: str
    env_id: str
    seed: int
    flags: tuple[str, ...]  # every flag but --env-id, --seed and --run-dir, --num-workers included
    run_dir: str
    resume: bool = True  # an unfinished run resumes from its checkpoint; False: it starts again (for timings)
    stop: Optional[Callable[[str], bool]] = None  # of the run directory: once true, the run is stopped as by Ctrl-C
    # and counts as finished (speedup.py's runs stop at a reference score)

    @property
    def num_workers(self):
        """Its --num-workers (where its flags lack one, the scripts' default: every core)."""
        for i, flag in enumerate(self.flags):
            if flag.startswith("--num-workers="):
                return int(flag.partition("=")[2])
            if flag == "--num-workers" and i + 1 < len(self.flags):
                return int(self.flags[i + 1])
        return os.cpu_count() or 1

    @property
    def finished(self):
        """Trained to its end (eval.json), or stopped once its `stop` held (grid.json)."""
        if os.path.exists(os.path.join(self.run_dir, "eval.json")):
            return True
        if not os.path.exists(os.path.join(self.run_dir, "grid.json")):
            return False
        with open(os.path.join(self.run_dir, "grid.json")) as f:
            record = json.load(f)
        return record.get("stopped", False) and not failed(record)

    def command(self):
        """The command that trains the run to its end from where it stands: resumed from its checkpoint, or from
        the start in an emptied run directory (a run that stopped before its first checkpoint)."""
        checkpoint = os.path.join(self.run_dir, "checkpoint.pt")
        if self.resume and os.path.exists(checkpoint):
            return [sys.executable, os.path.join(ROOT, self.script), "--resume", checkpoint]
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return [sys.executable, os.path.join(ROOT, self.script), "--env-id", self.env_id, "--seed", str(self.seed),
                "--run-dir", self.run_dir, *self.flags]


def make_runs(scripts, env_ids, seeds, flag_sets, out_dir, num_workers):
    """The grid's runs, each with its run directory: <out_dir>/<flag set>/<env id>/<script>/seed<S>."""
    runs = []
    for entry in flag_sets:
        name, sep, flags = entry.partition("=")
        if not sep or not name or "/" in name:
            raise SystemExit(f"grid.py: --flag-sets {entry!r} is not NAME=FLAGS (a name without '/')")
        for env_id in env_ids:
            for script in scripts:
                if not os.path.isfile(os.path.join(ROOT, script)):
                    raise SystemExit(f"grid.py: no script {script} in {ROOT}")
                for seed in seeds:
                    run_dir = os.path.join(out_dir, name, env_id.replace("/", "_").replace(":", "_"),
                                           os.path.splitext(script)[0], f"seed{seed}")
                    runs.append(Run(script, env_id, seed, ("--num-workers", str(num_workers), *shlex.split(flags)),
                                    run_dir))
    return runs


def failed(record):
    """Whether a grid.json record is of a failed run: a non-zero exit, but for Ctrl-C's where the grid stopped it."""
    return record["returncode"] not in ((0, 130) if record.get("stopped") else (0,))


def execute(run, live=None):
    """Train one run to its end, or until its `stop` holds, and record it in its grid.json; returns that record.
    Interrupted (Ctrl-C here, or a Ray task cancelled), it stops the training as Ctrl-C would, so that its
    checkpoint is saved."""
    command = run.command()
    previous = {}
    if os.path.exists(os.path.join(run.run_dir, "grid.json")):  # a resumed run adds its seconds to the earlier ones
        with open(os.path.join(run.run_dir, "grid.json")) as f:
            previous = json.load(f)
    start = time.time()
    with tempfile.TemporaryFile("w+") as stderr:  # a file, not a pipe: the progress bar would fill a pipe
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        if live is not None:
            live.add(process)
        stopped = False
        try:
            while process.poll() is None:
                if run.stop is not None and not stopped and run.stop(run.run_dir):
                    process.send_signal(signal.SIGINT)  # it saves its checkpoint and exits 130
                    stopped = True
                time.sleep(0.1)
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            process.wait()
            raise
        finally:
            if live is not None:
                live.discard(process)
        stderr.seek(0)
        tail = stderr.read()[-3000:]
    record = {"command": command, "returncode": process.returncode, "stopped": stopped, "host": socket.gethostname(),
              "seconds": previous.get("seconds", 0.0) + time.time() - start, "stderr_tail": tail}
    if os.path.isdir(run.run_dir):  # absent where the script refused its input before writing anything
        with open(os.path.join(run.run_dir, "grid.json"), "w") as f:
            json.dump(record, f, indent=1)
    return record


def run_grid(runs, concurrent=None, ray_address=None):
    """Train every unfinished run; returns {run: its grid.json record} of the runs trained now (a finished run:
    None). Ray, when given an address, runs them, each asking for its --num-workers CPUs; else a pool of
    `concurrent` at once on this machine (default: as many as its cores hold)."""
    todo = [run for run in runs if not run.finished]
    if concurrent is None:
        concurrent = max(1, (os.cpu_count() or 1) // max([run.num_workers for run in todo], default=1))
    records = {run: None for run in runs}
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), unit="run", dynamic_ncols=True)
    try:
        trained = () if not todo else on_ray(todo, ray_address) if ray_address else locally(todo, concurrent)
        for run, record in trained:  # nothing left: no pool, no Ray cluster joined
            records[run] = record
            bar.update()
            if failed(record):
                tqdm.write(f"grid.py: {run.run_dir} exited with status {record['returncode']}:\n"
                           f"{record['stderr_tail'][-1000:]}")
    finally:
        bar.close()
    return records


def locally(todo, concurrent):
    """(run, record) as each run ends, `concurrent` at a time; on an interruption the running ones stop first."""
    live = set()
    pool = ThreadPoolExecutor(concurrent)
    futures = {pool.submit(execute, run, live): run for run in todo}
    try:
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:  # Ctrl-C or SIGTERM: no new run starts, each running one saves its checkpoint and exits
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list(live):
            process.send_signal(signal.SIGINT)
        pool.shutdown(wait=True)


def on_ray(todo, address):
    """(run, record) as each run ends, each a Ray task asking for its --num-workers CPUs."""
    try:
        import ray
    except ImportError:
        raise SystemExit("grid.py: --ray-address needs Ray: pip install -r requirements.txt (ray==2.60.0)") from None
    # The tasks import this module (learning.py's, robustness.py's) from the repository at the same path as here.
    ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.path.dirname(os.path.abspath(__file__))}})
    task = ray.remote(max_retries=0)(execute)
    pending = {task.options(num_cpus=run.num_workers).remote(run): run for run in todo}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])
    finally:  # interrupted: each running task gets KeyboardInterrupt and stops its run as Ctrl-C would
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=120)
        ray.shutdown()


def main():
    args = tyro.cli(Args)
    if args.num_workers < 1 or (args.concurrent is not None and args.concurrent < 1):
        raise SystemExit("grid.py: --num-workers and --concurrent must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind as on Ctrl-C: the running runs stop too
    runs = make_runs(args.scripts, args.env_ids, args.seeds, args.flag_sets, args.out_dir, args.num_workers)
    try:
        records = run_grid(runs, args.concurrent, args.ray_address)
    except KeyboardInterrupt:  # each running run has saved its checkpoint
        print("grid.py: interrupted; the same command continues the grid", file=sys.stderr)
        sys.exit(130)
    failures = [run.run_dir for run, record in records.items() if record and failed(record)]
    trained = sum(record is not None for record in records.values())
    print(f"grid.py: {len(runs)} runs: {len(runs) - trained} finished before, {trained - len(failures)} trained now, "
          f"{len(failures)} failed{': ' + ', '.join(failures) if failures else ''}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
