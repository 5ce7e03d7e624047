"""benchmarks/grid.py: grids of real runs (a3c.py on CartPole, tiny budgets), on this machine and on a local Ray
instance; a rerun trains nothing, an unfinished run resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import grid  # noqa: E402

TINY = "--total-timesteps 1500 --eval-episodes 1 --eval-interval 1000000000 --log-interval 0.3"


def run_grid(out_dir, *flags, seeds=("1", "2")):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "grid.py"), "--scripts", "a3c.py", "--env-ids",
         "CartPole-v1", "--seeds", *seeds, "--num-workers", "1", "--out-dir", str(out_dir), "--flag-sets",
         f"tiny={TINY}", *flags], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def run_dirs(out_dir, seeds=(1, 2)):
    return [out_dir / "tiny" / "CartPole-v1" / "a3c" / f"seed{seed}" for seed in seeds]


def test_make_runs_lays_out_the_grid_and_refuses_a_bad_flag_set(tmp_path):
    runs = grid.make_runs(("a3c.py", "async_sarsa.py"), ("CartPole-v1", "ALE/Pong-v5"), (1, 2),
                          ("a=--learning-rate 1e-3", "b="), str(tmp_path), 4)
    assert len(runs) == 2 * 2 * 2 * 2 and len({run.run_dir for run in runs}) == 16
    first = runs[0]
    assert first.run_dir == str(tmp_path / "a" / "CartPole-v1" / "a3c" / "seed1")
    assert first.flags == ("--num-workers", "4", "--learning-rate", "1e-3") and first.num_workers == 4
    assert runs[-1].run_dir == str(tmp_path / "b" / "ALE_Pong-v5" / "async_sarsa" / "seed2")
    with pytest.raises(SystemExit, match="is not NAME=FLAGS"):
        grid.make_runs(("a3c.py",), ("CartPole-v1",), (1,), ("--learning-rate 1e-3",), str(tmp_path), 1)
    with pytest.raises(SystemExit, match="no script a3c_typo.py"):
        grid.make_runs(("a3c_typo.py",), ("CartPole-v1",), (1,), ("a=",), str(tmp_path), 1)


def test_a_local_grid_trains_each_run_once(tmp_path):
    out = run_grid(tmp_path, "--concurrent", "2")
    assert "2 runs: 0 finished before, 2 trained now, 0 failed" in out
    for seed, run_dir in enumerate(run_dirs(tmp_path), start=1):
        config = json.load(open(run_dir / "config.json"))
        assert (config["seed"], config["num_workers"], config["total_timesteps"]) == (seed, 1, 1500)
        record = json.load(open(run_dir / "grid.json"))
        assert record["returncode"] == 0 and record["seconds"] > 0 and "--resume" not in record["command"]
    written = [os.path.getmtime(run_dir / "eval.json") for run_dir in run_dirs(tmp_path)]
    assert "2 runs: 2 finished before, 0 trained now, 0 failed" in run_grid(tmp_path)
    assert [os.path.getmtime(run_dir / "eval.json") for run_dir in run_dirs(tmp_path)] == written


def test_a_grid_resumes_an_unfinished_run_and_restarts_one_without_a_checkpoint(tmp_path):
    interrupted, empty = run_dirs(tmp_path)
    # Seed 1: interrupted after 500 steps of a 20k-step run (its checkpoint keeps the 20k budget).
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "a3c.py"), "--env-id", "CartPole-v1", "--seed", "1",
                                "--num-workers", "1", "--run-dir", str(interrupted), "--total-timesteps", "20000",
                                *TINY.split()[2:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 120
    while not (interrupted / "progress.csv").exists() or len(open(interrupted / "progress.csv").readlines()) < 3:
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130 and (interrupted / "checkpoint.pt").exists()
    # Seed 2: a run that stopped before its first checkpoint, its progress.csv alone.
    empty.mkdir(parents=True)
    (empty / "progress.csv").write_text("global_step\n0\n")
    assert "2 runs: 0 finished before, 2 trained now, 0 failed" in run_grid(tmp_path)
    resumed = json.load(open(interrupted / "grid.json"))
    assert "--resume" in resumed["command"] and json.load(open(interrupted / "eval.json"))["global_step"] >= 20_000
    restarted = json.load(open(empty / "grid.json"))
    assert "--resume" not in restarted["command"] and json.load(open(empty / "eval.json"))["global_step"] >= 1500


def test_a_grid_on_a_local_ray_instance_trains_each_run_once(tmp_path):
    out = run_grid(tmp_path, "--ray-address", "local")  # 2 CPUs here: the two 1-worker runs at once
    assert "2 runs: 0 finished before, 2 trained now, 0 failed" in out
    for run_dir in run_dirs(tmp_path):
        assert json.load(open(run_dir / "grid.json"))["returncode"] == 0 and (run_dir / "eval.json").exists()
    assert "2 runs: 2 finished before, 0 trained now, 0 failed" in run_grid(tmp_path, "--ray-address", "local")


def test_without_ray_the_grid_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(SystemExit, match="needs Ray: pip install"):
        next(grid.on_ray([], "local"))


def test_learning_py_trains_its_seeds_through_the_grid_and_a_rerun_trains_nothing(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "learning.py"), "--script", "a3c.py", "--env-id",
               "CartPole-v1", "--seeds", "1", "2", "--out-dir", str(tmp_path), "--reference-score", "5",
               f"--script-flags=--num-workers 1 {TINY}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.load(open(tmp_path / "summary.json"))
    assert [run["seed"] for run in summary["runs"]] == [1, 2]
    for run in summary["runs"]:
        record = json.load(open(tmp_path / f"seed{run['seed']}" / "grid.json"))
        assert run["wall_seconds"] == record["seconds"] > 0 and run["global_step"] >= 1500
        assert run["steps_to_reference"] is not None  # random play scores about 22
    written = [os.path.getmtime(tmp_path / f"seed{seed}" / "eval.json") for seed in (1, 2)]
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0 and json.load(open(tmp_path / "summary.json")) == summary
    assert [os.path.getmtime(tmp_path / f"seed{seed}" / "eval.json") for seed in (1, 2)] == written
