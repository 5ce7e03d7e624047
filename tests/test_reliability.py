"""Reliability of all four scripts, with real processes and real signals: worker faults and
restarts, interruption, resume, numerical faults. Tiny budgets on CartPole, one worker
(with the evaluator, two children to start: each start imports torch, the bulk of a test's time)."""

import csv
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, SCRIPTS

FAULTY = "tests.custom_envs:"  # the faulty CartPoles of tests/custom_envs.py


class Run:
    """A script started as a user starts it, its stderr in a file, its children watched."""

    def __init__(self, script, run_dir, *flags, env_id="CartPole-v1", total_timesteps=100_000_000, group=False):
        self.run_dir, self.stderr_path = run_dir, run_dir.parent / f"{run_dir.name}.stderr"
        self.stderr = open(self.stderr_path, "a")
        if "--resume" not in flags:  # a resumed run keeps the flags of the run it continues
            flags = ("--env-id", env_id, "--num-workers", "1", "--total-timesteps", str(total_timesteps),
                     "--log-interval", "0.3", "--eval-episodes", "2", "--run-dir", str(run_dir), *flags)
        self.process = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *flags],
                                        stdout=subprocess.DEVNULL, stderr=self.stderr, cwd=ROOT,
                                        start_new_session=group)  # group: its own process group, as in a terminal
        self.children_seen = set()

    def children(self):
        """The workers and the evaluator: the children of the fork server, itself a child of the main process.
        Every process seen (the fork server and the resource tracker too) is remembered."""
        def under(pid):
            found = subprocess.run(["pgrep", "-a", "-P", pid], capture_output=True, text=True).stdout
            return [line.split(" ", 1) for line in found.splitlines()]
        found = under(str(self.process.pid))
        workers = [child for pid, command in found if "forkserver" in command for child in under(pid)]
        self.children_seen.update(pid for pid, _ in found + workers)
        return sorted((pid for pid, _ in workers), key=int)

    def wait_for(self, condition, seconds, what):
        deadline = time.time() + seconds
        while not condition():
            self.children()
            assert self.process.poll() is None, f"exited with {self.process.returncode} before {what}:\n{self.err()}"
            assert time.time() < deadline, f"no {what} within {seconds} s:\n{self.err()}"
            time.sleep(0.05)

    def last_row(self):
        path = self.run_dir / "progress.csv"
        with open(path) if path.exists() else open(os.devnull) as f:
            rows = list(csv.DictReader(f))
        return rows[-1] if rows else {"global_step": "0", "skipped_updates": "0"}

    def global_step(self):
        return int(self.last_row()["global_step"])

    def finish(self, seconds=120):
        while self.process.poll() is None:
            self.children()
            seconds -= 0.1
            assert seconds > 0, "the script did not exit"
            time.sleep(0.1)
        self.stderr.close()
        return self.process.returncode

    def err(self):
        return self.stderr_path.read_text().replace("\r", "\n")

    def assert_no_process_left(self, seconds=30):  # a hang guard: they are waited for, not timed
        deadline = time.time() + seconds
        def alive():
            return [pid for pid in self.children_seen if os.path.exists(f"/proc/{pid}")
                    and "zombie" not in open(f"/proc/{pid}/status").read()]
        while alive():
            assert time.time() < deadline, f"processes {alive()} outlived the run"
            time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_survives_a_killed_worker_and_nan_rewards_and_its_children_die_with_it(tmp_path, script):
    # Every 50th reward is NaN: the update of that segment is skipped and counted.
    run = Run(script, tmp_path / "run", env_id=FAULTY + "NanRewardCartPole-v1")
    run.wait_for(lambda: len(run.children()) == 2 and run.global_step() > 0, 120, "stepping workers")
    worker = run.children()[0]  # the worker starts before the evaluator
    os.kill(int(worker), signal.SIGKILL)
    # The waits below are hang guards, not speed bounds: the test asks what happens, not how fast.
    run.wait_for(lambda: "warning: worker 0 was killed by SIGKILL" in run.err(), 60, "warning about the dead worker")
    run.wait_for(lambda: len(run.children()) == 2, 30, "restarted worker")
    step = run.global_step()
    run.wait_for(lambda: run.global_step() > step + 500 and run.last_row()["skipped_updates"] != "0", 60,
                 "progress and skipped updates after the restart")
    steps, skipped = int(run.last_row()["global_step"]), int(run.last_row()["skipped_updates"])
    assert 0 < skipped <= steps / 50 + 10  # one per NaN reward at most
    run.process.kill()  # SIGKILL of the main process: no handler runs, the children must notice on their own
    run.finish()
    run.assert_no_process_left()


def test_children_started_but_still_importing_die_with_a_killed_main_process(tmp_path):
    run = Run("a3c.py", tmp_path / "run")
    run.wait_for(lambda: len(run.children()) == 2, 120, "children")
    run.process.kill()
    run.finish()
    run.assert_no_process_left()


# a3c.py restarts its failing worker once; the others stop at the first failure (no restart to start).
@pytest.mark.slow
@pytest.mark.parametrize("script, restarts", [("a3c.py", 1)] + [(script, 0) for script in SCRIPTS[1:]])
def test_a_worker_failing_past_the_restart_limit_stops_the_run_with_exit_1(tmp_path, script, restarts):
    # The env raises at its 301st step, in the first worker and in each restarted one.
    run = Run(script, tmp_path / "run", "--max-worker-restarts", str(restarts), env_id=FAULTY + "CrashingCartPole-v1")
    assert run.finish() == 1, run.err()
    err = run.err()
    assert err.count("warning: worker") == restarts
    last_lines = err.strip().splitlines()
    assert f"failed: RuntimeError: the simulator crashed at step 301, after {restarts} restarts" in err
    assert "continue with --resume" in last_lines[-1]
    assert torch.load(run.run_dir / "checkpoint.pt", weights_only=True)["global_step"] > 0
    assert not (run.run_dir / "eval.json").exists()
    run.assert_no_process_left()


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


# SIGINT for two scripts, SIGTERM for the other two: the handler is the same code in each.
@pytest.mark.slow
@pytest.mark.parametrize("script, signum", list(zip(SCRIPTS, [signal.SIGINT, signal.SIGTERM] * 2, strict=True)))
def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_one_would(tmp_path, script, signum):
    # A budget the signal lands well inside: with 20-step segments (the one-step methods' vector preset) a
    # 4,000-step run once finished before its SIGTERM arrived.
    total = 20_000
    run = Run(script, tmp_path / "run", total_timesteps=total)
    run.wait_for(lambda: run.global_step() > 500, 120, "steps")
    run.process.send_signal(signum)
    assert run.finish() == 128 + signum, run.err()  # 130 for SIGINT, 143 for SIGTERM
    assert "interrupted" in run.err() and "Traceback" not in run.err()
    run.assert_no_process_left()
    interrupted = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)
    assert 0 < interrupted["global_step"] < total  # it stopped at the signal, not at its budget (no clock needed)
    rows = list(csv.DictReader(open(run.run_dir / "progress.csv")))
    # Resumed with no steps left, a copy of the run saves exactly the state it loaded.
    copy = shutil.copytree(run.run_dir, tmp_path / "copy")
    unchanged = Run(script, copy, "--resume", str(copy / "checkpoint.pt"),
                    "--total-timesteps", str(interrupted["global_step"]))
    assert unchanged.finish() == 0, unchanged.err()
    reloaded = torch.load(copy / "checkpoint.pt", weights_only=True)
    assert reloaded.keys() == interrupted.keys() and reloaded["global_step"] == interrupted["global_step"]
    for key in interrupted.keys() - {"args", "seconds"}:  # the model, RMSProp's statistics, the target network...
        assert same(reloaded[key], interrupted[key]), key
    # Resumed for real, it ends at the budget of the run it continues.
    resumed = Run(script, run.run_dir, "--resume", str(run.run_dir / "checkpoint.pt"))
    assert resumed.finish() == 0, resumed.err()
    resumed.assert_no_process_left()
    final = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)
    assert final["args"]["total_timesteps"] == total  # the checkpoint's budget, not this Run's default
    # The worker stops at its first segment boundary past T_max (segments of t_max steps), as an uninterrupted run does.
    assert total <= final["global_step"] < total + final["args"]["t_max"]
    assert json.load(open(run.run_dir / "eval.json"))["global_step"] == final["global_step"]
    rows_after = list(csv.DictReader(open(run.run_dir / "progress.csv")))
    assert rows_after[:len(rows)] == rows and int(rows_after[len(rows)]["global_step"]) >= interrupted["global_step"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_persistent_non_finite_updates_stop_the_run_with_exit_1(tmp_path, script):
    # After 300 steps every reward is NaN: a worker stops the run after 100 skipped updates in a row.
    run = Run(script, tmp_path / "run", env_id=FAULTY + "DivergingCartPole-v1")
    assert run.finish() == 1, run.err()
    last_lines = run.err().strip().splitlines()[-2:]
    assert "100 updates in a row had a non-finite loss or gradient" in last_lines[0]
    assert "last good checkpoint" in last_lines[1]
    assert not (run.run_dir / "checkpoint.pt").exists()  # none was written before it went bad
    run.assert_no_process_left()


@pytest.mark.parametrize("script", SCRIPTS)
def test_eval_only_writes_a_directory_of_its_own_and_never_into_the_run_it_evaluates(tmp_path, monkeypatch, script):
    module = importlib.import_module(script[:-3])
    run = tmp_path / "run"  # a training run: its model.pt and its 10-episode final score
    run.mkdir()
    args = module.Args(env_id="CartPole-v1", num_workers=1)
    model = module.build_model(args)
    torch.save({"script": script, "args": vars(args), "global_step": 7, "model": model.state_dict()}, run / "model.pt")
    (run / "eval.json").write_text('{"mean": 500.0}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [script, "--eval-only", "--checkpoint", "run/model.pt", "--eval-episodes", "3"])
    assert module.main() == 0
    assert (run / "eval.json").read_text() == '{"mean": 500.0}' and sorted(os.listdir(run)) == ["eval.json", "model.pt"]
    [own] = os.listdir(tmp_path / "runs")
    assert own.startswith(f"CartPole-v1__{script[:-3]}__eval__1__")
    evaluation = json.load(open(tmp_path / "runs" / own / "eval.json"))
    assert evaluation["global_step"] == 7 and len(evaluation["returns"]) == 3
    config = json.load(open(tmp_path / "runs" / own / "config.json"))
    assert config["eval_only"] and config["run_dir"] == f"runs/{own}" and config["checkpoint"] == "run/model.pt"
    monkeypatch.setattr(sys, "argv", [script, "--eval-only", "--checkpoint", "run/model.pt", "--run-dir", "run"])
    with pytest.raises(module.UsageError, match="run already holds a run: choose another --run-dir"):
        module.main()  # named on purpose, the training run is refused too
    assert (run / "eval.json").read_text() == '{"mean": 500.0}'


# One script in the fast tier; the handling is the same code in each.
@pytest.mark.parametrize("script", [SCRIPTS[0], *(pytest.param(name, marks=pytest.mark.slow) for name in SCRIPTS[1:])])
def test_ctrl_c_twice_while_the_children_start_leaves_no_traceback_and_no_run(tmp_path, script):
    # A terminal's Ctrl-C goes to the whole process group: the children too, while they still import torch.
    run = Run(script, tmp_path / "run", group=True)
    run.wait_for(lambda: len(run.children()) == 2, 120, "children")
    for _ in range(2):
        os.killpg(run.process.pid, signal.SIGINT)
        time.sleep(0.3)
    assert run.finish() == 130, run.err()
    assert "Traceback" not in run.err() and "KeyboardInterrupt" not in run.err(), run.err()
    assert "interrupted before the first update: nothing to save" in run.err()
    assert not (tmp_path / "run").exists()  # nothing that looks like a run: the same --run-dir is free again
    run.assert_no_process_left()
