"""benchmarks/aggregate.py: aggregates worked out by hand, on run directories the test writes."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from aggregate import Args, iqm, main, optimality_gap, sample_efficiency, stratified_bootstrap  # noqa: E402

PONG = -20.7, 14.6  # random and human (benchmarks/human_normalized.py)


def write_run(run_dir, env_id, final, evaluations=()):
    """A finished run: config.json, eval.json with `final`, and progress.csv with (step, mean) evaluations."""
    os.makedirs(run_dir)
    json.dump({"env_id": env_id}, open(os.path.join(run_dir, "config.json"), "w"))
    json.dump({"env_id": env_id, "mean": final, "returns": [final]}, open(os.path.join(run_dir, "eval.json"), "w"))
    with open(os.path.join(run_dir, "progress.csv"), "w") as f:
        f.write("global_step,seconds,eval_return_mean,eval_global_step\n")
        for step, mean in evaluations:
            f.write(f"{step},1.0,{mean},{step}\n")


def test_the_point_estimates_by_hand():
    # 8 scores: sorted 0, .2, .4, .6, .8, 1, 1.2, 2; the middle half .4-1.0
    scores = np.array([[0.0, 0.6], [0.2, 0.8], [0.4, 1.2], [1.0, 2.0]])
    assert iqm(scores) == pytest.approx(0.7)
    assert optimality_gap(scores) == pytest.approx((1 + 0.8 + 0.6 + 0.4 + 0.2) / 8)


def test_the_bootstrap_resamples_runs_within_each_task():
    rng = np.random.default_rng(0)
    split = np.array([[0.0, 1.0]] * 5)  # task 1 always 0, task 2 always 1: every stratified resample has mean 1/2
    assert stratified_bootstrap(split, np.mean, 200, rng) == (0.5, 0.5)
    spread = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    low, high = stratified_bootstrap(spread, np.mean, 2000, rng)
    assert 0.5 < low < 1.5 < high < 2.5  # around the mean, 1.5, and narrower than the scores' range


def test_sample_efficiency_counts_frames_and_interpolates_runs_onto_one_grid():
    norms = {"PongNoFrameskip-v4": lambda x: x, "CartPole-v1": lambda x: x}
    runs = {"PongNoFrameskip-v4": [(0, 0, np.array([0.0, 10.0]), np.array([0.0, 1.0]))],  # 40 frames at the end
            "CartPole-v1": [(0, 0, np.array([0.0, 20.0, 40.0]), np.array([1.0, 1.0, 1.0]))]}
    grid, curve = sample_efficiency(runs, norms, 5)
    np.testing.assert_allclose(grid, [0, 10, 20, 30, 40])
    np.testing.assert_allclose(curve, [0.5, 0.625, 0.75, 0.875, 1.0])  # the IQM of two values is their mean


def test_aggregate_py_on_a_grid_of_two_methods(tmp_path):
    # Method A on Pong (human-normalised) and CartPole-v1 (--reference CartPole-v1=0:500), 4 runs each, with the
    # normalised finals of test_the_point_estimates_by_hand; method B the same runs shifted by +1 on both tasks.
    human = lambda x: PONG[0] + (PONG[1] - PONG[0]) * x  # noqa: E731 (the Pong score of normalised x)
    for label, shift in (("A", 0.0), ("B", 1.0)):
        for seed, (cartpole, pong) in enumerate([(0.0, 0.6), (0.2, 0.8), (0.4, 1.2), (1.0, 2.0)]):
            write_run(tmp_path / label / "CartPole-v1" / f"seed{seed}", "CartPole-v1", 500 * (cartpole + shift),
                      [(1000, 500 * (cartpole + shift)), (2000, 500 * (cartpole + shift))])
            write_run(tmp_path / label / "Pong" / f"seed{seed}", "PongNoFrameskip-v4", human(pong + shift),
                      [(500, human(pong + shift + 0.5)), (1000, human(pong + shift))])  # the best came earlier
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "aggregate.py"), "--out-dir", str(out), "--repetitions",
         "500", "--reference", "CartPole-v1=0:500", "--runs", f"A={tmp_path}/A/*/seed*", f"B={tmp_path}/B/*/seed*"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.load(open(out / "aggregate.json"))["methods"]
    assert report["A"]["final"]["IQM"]["value"] == pytest.approx(0.7)
    assert report["A"]["final"]["mean"]["value"] == pytest.approx(0.775)
    assert report["A"]["final"]["median"]["value"] == pytest.approx(0.7)
    assert report["A"]["final"]["optimality gap"]["value"] == pytest.approx(0.375)
    assert report["B"]["final"]["IQM"]["value"] == pytest.approx(1.7)
    assert report["B"]["final"]["optimality gap"]["value"] == pytest.approx(0.0)
    # best: Pong's runs were 0.5 higher earlier, CartPole's never: the middle half of 0, .2, .4, 1, 1.1, 1.3, 1.7, 2.5
    assert report["A"]["best"]["IQM"]["value"] == pytest.approx((0.4 + 1.0 + 1.1 + 1.3) / 4)
    low, high = report["A"]["final"]["IQM"]["ci95"]
    assert low <= 0.7 <= high and high - low > 0.1
    assert "| A | final | 0.7 [" in open(out / "aggregate.md").read()
    for png in ("performance_profile.png", "sample_efficiency.png"):
        assert os.path.getsize(out / png) > 1000


def test_aggregate_py_refuses_what_it_cannot_aggregate(tmp_path):
    for seed in range(2):
        write_run(tmp_path / "a" / f"seed{seed}", "CartPole-v1", 500.0)
    write_run(tmp_path / "a" / "seed2", "Acrobot-v1", -100.0)
    write_run(tmp_path / "b" / "seed0", "CartPole-v1", 500.0)
    write_run(tmp_path / "b" / "seed1", "Acrobot-v1", -100.0)
    os.makedirs(tmp_path / "unfinished")
    cases = [
        (f"x={tmp_path}/a/seed*", ["CartPole-v1=0:500", "Acrobot-v1=-500:0"], "different numbers of runs per task"),
        (f"x={tmp_path}/b/seed*", [], "no reference for Acrobot-v1, CartPole-v1"),
        (f"x={tmp_path}/unfinished", [], "has no eval.json"),
        (f"x={tmp_path}/nothing*", [], "matches no run directory"),
        (f"x={tmp_path}/b/seed*", ["CartPole-v1=500"], "is not ENV=LOW:HIGH")]
    for runs, references, message in cases[1:]:  # in-process: each subprocess would import numpy and matplotlib
        with pytest.raises(SystemExit, match=re.escape(message)):
            main(Args(runs=(runs,), out_dir=str(tmp_path / "out"), reference=tuple(references)))
    runs, references, message = cases[0]  # and as a user runs it: exit status and stderr
    flags = [token for reference in references for token in ("--reference", reference)]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "aggregate.py"), "--out-dir",
                             str(tmp_path / "out"), *flags, "--runs", runs], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "out")


def test_one_task_aggregates_raw_and_one_run_per_task_gets_no_interval(tmp_path, capsys):
    write_run(tmp_path / "a" / "seed1", "CartPole-v1", 250.0, [(1000, 300.0), (2000, 250.0)])
    main(Args(runs=(f"x={tmp_path}/a/seed*",), out_dir=str(tmp_path / "out"), repetitions=10))
    result = json.load(open(tmp_path / "out" / "aggregate.json"))
    assert result["scores"] == "raw"
    assert result["methods"]["x"]["final"]["IQM"] == {"value": 250.0, "ci95": None}
    assert result["methods"]["x"]["best"]["median"] == {"value": 300.0, "ci95": None}
    assert "optimality gap" not in result["methods"]["x"]["final"]  # a shortfall below 1: only normalised scores
    assert "| x | final | 250 | 250 | 250 |\n" in capsys.readouterr().out
