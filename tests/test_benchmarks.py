"""The numbers behind the benchmark scripts: curve aggregation and human-normalised scores."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from atari import read_run, table  # noqa: E402
from human_normalized import game_of, human_normalized  # noqa: E402
from learning import first_reaching, read_curve  # noqa: E402
from plot import mean_and_spread, smoothed  # noqa: E402 (the drawing imports matplotlib, this does not)
from robustness import learning_rate, summarize  # noqa: E402
from screen import Args as ScreenArgs, first_window_reaching, windows, main as screen  # noqa: E402
from speedup import Args as SpeedupArgs, any_row_reaches, grid_runs, median, reached  # noqa: E402


def test_human_normalized_scores():
    assert human_normalized("PongNoFrameskip-v4", 14.6) == pytest.approx(1.0)
    assert human_normalized("ALE/Pong-v5", -20.7) == pytest.approx(0.0)
    assert human_normalized("PongNoFrameskip-v4", 21.0) == pytest.approx((21.0 + 20.7) / (14.6 + 20.7))
    assert human_normalized("BreakoutNoFrameskip-v4", 30.5 * 2 - 1.7) == pytest.approx(2.0)
    assert game_of("SpaceInvadersNoFrameskip-v4") == "SpaceInvaders" and game_of("Qbert-v4") == "Qbert"
    with pytest.raises(ValueError, match="no reference scores for CartPole"):
        human_normalized("CartPole-v1", 500.0)
    with pytest.raises(ValueError, match="not an Atari id"):
        game_of("tests.custom_envs:CueMemory-v0")


def test_mean_and_spread_interpolates_seeds_onto_a_common_grid():
    curves = [(np.array([0.0, 10.0]), np.array([0.0, 10.0])),  # y = x
              (np.array([0.0, 5.0, 20.0]), np.array([2.0, 2.0, 2.0]))]  # y = 2, a longer run
    grid, mean, low, high = mean_and_spread(curves, 11)
    np.testing.assert_allclose(grid, np.arange(11.0))  # up to the shorter run only
    np.testing.assert_allclose(mean, (np.arange(11.0) + 2) / 2)
    np.testing.assert_allclose(low, np.minimum(np.arange(11.0), 2))
    np.testing.assert_allclose(high, np.maximum(np.arange(11.0), 2))


def test_smoothing_and_first_row_reaching_a_score(tmp_path):
    np.testing.assert_allclose(smoothed(np.array([1.0, 2.0, 3.0, 4.0]), 2), [1.0, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(smoothed(np.array([1.0, 2.0, 3.0]), 1), [1.0, 2.0, 3.0])
    (tmp_path / "progress.csv").write_text(
        "global_step,seconds,episodic_return,eval_return_mean\n0,1.0,,\n100,2.0,50,\n200,3.0,480,\n300,4.0,400,490\n")
    steps, seconds, values = read_curve(tmp_path / "progress.csv")  # rows with no return are skipped
    np.testing.assert_allclose(steps, [100, 200, 300])
    assert first_reaching(steps, seconds, values, 475) == (200.0, 3.0)
    assert first_reaching(steps, seconds, values, 500) == (None, None)
    assert read_curve(tmp_path / "progress.csv", "eval_return_mean")[2].tolist() == [490.0]
    # resumed from a checkpoint at step 150: the interrupted run's rows past it give way
    with open(tmp_path / "progress.csv", "a") as f:
        f.write("150,2.5,300,\n250,3.5,450,\n")
    steps, seconds, values = read_curve(tmp_path / "progress.csv")
    assert steps.tolist() == [100, 150, 250] and values.tolist() == [50, 300, 450]


def test_an_evaluation_curve_is_read_at_the_step_of_the_weights_evaluated(tmp_path):
    (tmp_path / "progress.csv").write_text("global_step,seconds,episodic_return,eval_global_step,eval_return_mean\n"
                                           "900,1.0,20,300,180\n1900,2.0,40,,\n2500,3.0,,2000,200\n")
    steps, seconds, values = read_curve(tmp_path / "progress.csv", "eval_return_mean")
    assert steps.tolist() == [300, 2000] and seconds.tolist() == [1.0, 3.0] and values.tolist() == [180, 200]
    assert read_curve(tmp_path / "progress.csv")[0].tolist() == [900, 1900]  # training returns: the row's step
    assert reached(tmp_path / "progress.csv", 195, "eval_return_mean") == (3.0, 2000)
    (tmp_path / "old.csv").write_text("global_step,seconds,eval_return_mean\n900,1.0,180\n")  # before the column
    assert read_curve(tmp_path / "old.csv", "eval_return_mean")[0].tolist() == [900]
    # the end of a run: a periodic evaluation's row, then the final evaluation's, both at the last step
    (tmp_path / "end.csv").write_text("global_step,seconds,eval_global_step,eval_return_mean\n"
                                      "513555,484.2,500017,19.1\n513555,484.2,513555,18.4\n")
    assert read_curve(tmp_path / "end.csv", "eval_return_mean")[2].tolist() == [19.1, 18.4]


def test_an_atari_run_reads_as_its_game_final_and_best_evaluation_frames_and_hours(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"env_id": "BreakoutNoFrameskip-v4", "seed": 3}))
    (tmp_path / "progress.csv").write_text("global_step,seconds,sps,eval_global_step,eval_return_mean\n"
                                           "1000,10,100,,\n2000,20,100,1000,30.5\n3000,30,100,,\n"
                                           "4000,7200,100,3000,12.5\n")
    (tmp_path / "eval.json").write_text(json.dumps({"mean": 16.1}))  # the final evaluation, after the last row
    run = read_run(tmp_path)
    assert (run["game"], run["seed"], run["total_frames"], run["hours"]) == ("Breakout", 3, 16000, 2.0)
    assert run["frames"].tolist() == [4000, 12000] and run["scores"].tolist() == [30.5, 12.5]
    assert (run["final"], run["best"]) == (16.1, 30.5)
    row = table({"a3c.py": [run]}).splitlines()[-1]  # human-normalised: (16.1 - 1.7) / (30.5 - 1.7) = 50%
    assert row == "| Breakout | a3c.py | 3 | 0.0M | 2.0 | 16.1 (50%) | 30.5 (100%) | 279.8 | 551.6 |"


def test_the_speed_up_clock_starts_at_the_workers_first_step(tmp_path):
    # older files: the main process wrote rows at step 0 while the workers started (2.5 s here): not counted
    (tmp_path / "progress.csv").write_text(
        "global_step,seconds,episodic_return\n0,1.0,\n0,2.5,\n120,3.0,30\n900,4.0,200\n1500,5.0,480\n")
    assert reached(tmp_path / "progress.csv", 195) == (1.5, 900)
    assert reached(tmp_path / "progress.csv", 475) == (2.5, 1500)
    assert reached(tmp_path / "progress.csv", 500) == (None, None)
    # the scripts now write no row before the workers' first step; the first row's sps starts there (1.0 s)
    (tmp_path / "progress.csv").write_text("global_step,seconds,sps,episodic_return\n"
                                           "1000,3.0,500,30\n2000,4.0,1000,200\n3000,5.0,1000,480\n")
    assert reached(tmp_path / "progress.csv", 195) == (3.0, 2000)


def test_a_running_run_is_stopped_on_complete_rows_only(tmp_path):
    progress = tmp_path / "progress.csv"
    assert not any_row_reaches(progress, 195)  # not written yet
    progress.write_text("global_step,seconds,episodic_return\n0,1.0,\n120,3.0,10\n900,4.0,19")  # "19" of "195.5"?
    assert not any_row_reaches(progress, 15)  # the half-written row does not count, whatever it ends as
    progress.write_text("global_step,seconds,episodic_return\n0,1.0,\n120,3.0,30\n900,4.0,195.5\n")
    assert any_row_reaches(progress, 195) and not any_row_reaches(progress, 196)


def test_speed_up_medians_count_a_run_that_never_reached_as_slowest():
    assert median([3.0, None, 1.0]) == 3.0  # not 2.0, the median of the two that reached
    assert median([None, None, 1.0]) is None and median([None]) is None
    assert median([4.0, 2.0]) == 3.0


def test_screening_windows_average_rows_per_window_and_find_the_first_milestone():
    steps = np.array([0, 50_000, 99_999, 100_000, 250_000, 260_000])
    returns = np.array([-21.0, -19.0, -20.0, -12.0, -8.0, 2.0])
    means = windows(steps, returns, 100_000)
    assert means == {0: -20.0, 100_000: -12.0, 200_000: -3.0}
    assert first_window_reaching(means, -10.0) == 200_000 and first_window_reaching(means, 18.0) is None


def test_screening_shows_each_scripts_own_exploration_columns(tmp_path, capsys):
    """a3c.py's runs show the entropy per window, the value-based scripts' the epsilon and the mean Q-value."""
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "progress.csv").write_text("global_step,seconds,episodic_return,epsilon,q_values,"
                                                 "eval_return_mean\n1000,1.0,-21,0.9,0.1,\n2000,2.0,-19,0.7,0.3,-20\n")
    screen(ScreenArgs(run_dirs=(str(tmp_path / "q"),), window=100_000))
    out = capsys.readouterr().out
    assert "return  -20.00  epsilon 0.800  q_values 0.200" in out and "entropy" not in out
    assert "evaluations 0.00M: -20.0" in out


def test_robustness_rates_are_log_uniform_and_a_function_of_the_run_alone():
    rates = np.array([learning_rate(run, 1e-4, 1e-2) for run in range(2000)])
    assert rates.min() >= 1e-4 and rates.max() <= 1e-2
    # log-uniform: each decade holds half the draws (a uniform draw would put 90% above 1e-3)
    assert 0.45 < np.mean(rates < 1e-3) < 0.55
    assert learning_rate(7, 1e-4, 1e-2) == learning_rate(7, 1e-4, 1e-2) != learning_rate(8, 1e-4, 1e-2)


def test_robustness_summary_counts_solved_runs_and_their_rates():
    records = [{"optimizer": "a", "learning_rate": 1e-3, "final": 500.0},
               {"optimizer": "a", "learning_rate": 3e-3, "final": 480.0},
               {"optimizer": "a", "learning_rate": 9e-3, "final": None},  # diverged
               {"optimizer": "b", "learning_rate": 1e-3, "final": 20.0}]
    summary = summarize(records, threshold=475)
    assert summary["a"] == {"runs": 3, "solved": 2, "fraction_solved": 2 / 3, "solved_lr_range": [1e-3, 3e-3]}
    assert summary["b"] == {"runs": 1, "solved": 0, "fraction_solved": 0.0, "solved_lr_range": None}


@pytest.mark.slow
def test_robustness_runs_each_draw_once_and_a_rerun_skips_finished_runs(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "robustness.py"), "--script", "async_nstep_q.py",
               "--env-id", "CartPole-v1", "--out-dir", str(tmp_path), "--runs", "2", "--optimizers", "rmsprop",
               "--script-flags=--num-workers 1 --total-timesteps 300 --eval-interval 100000 --eval-episodes 1"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    finished = {path: os.path.getmtime(path) for path in tmp_path.glob("rmsprop/run*/eval.json")}
    assert len(finished) == 2
    config = json.load(open(tmp_path / "rmsprop" / "run1" / "config.json"))
    assert config["learning_rate"] == learning_rate(1, 1e-4, 1e-2) and config["optimizer"] == "rmsprop"
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "--run-dir" not in again.stdout  # nothing trained again
    assert {path: os.path.getmtime(path) for path in finished} == finished
    summary = json.load(open(tmp_path / "summary.json"))
    assert [record["run"] for record in summary["runs"]] == [0, 1] and summary["optimizers"]["rmsprop"]["runs"] == 2


@pytest.mark.slow
def test_speed_up_runs_stop_at_the_reference_and_a_rerun_skips_them(tmp_path):
    # a3c.py's CartPole command trains 100k steps; random play averages about 22, so 15 is reached at once
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "speedup.py"), "--scripts", "a3c.py", "--workers", "1",
               "--seeds", "1", "--reference-score", "15", "--out-dir", str(tmp_path / "runs"),
               "--output", str(tmp_path / "speedup.json")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "runs" / "workers1" / "CartPole-v1" / "a3c" / "seed1"
    steps, _, _ = read_curve(run_dir / "progress.csv", "global_step")
    assert steps.max() < 50_000 and (run_dir / "checkpoint.pt").exists()  # interrupted, and saved on the way out
    result = json.load(open(tmp_path / "speedup.json"))["results"][0]
    assert result["workers"] == 1 and 0 < result["steps"][0] <= steps.max() and result["steps_ratio"] == 1.0
    stamp = os.path.getmtime(run_dir / "result.json")
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and os.path.getmtime(run_dir / "result.json") == stamp
    assert json.load(open(tmp_path / "speedup.json"))["results"][0]["steps"] == result["steps"]


@pytest.mark.slow
def test_a_killed_speed_up_command_stops_its_training_run_too(tmp_path):
    run_dir = tmp_path / "runs" / "workers1" / "CartPole-v1" / "async_sarsa" / "seed1"
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "speedup.py"), "--scripts", "async_sarsa.py",
               "--workers", "1", "--seeds", "1", "--reference-score", "600", "--out-dir", str(tmp_path / "runs"),
               "--output", str(tmp_path / "speedup.json")]  # 600: never reached, the run would train 200k steps
    speedup = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def training():  # the training run's processes: its run directory is on their command line
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                line = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:  # gone meanwhile
                continue
            if str(run_dir) in line and "speedup.py" not in line:
                found.append(pid)
        return found

    def rows():
        return (run_dir / "progress.csv").read_text().count("\n") if (run_dir / "progress.csv").exists() else 0

    deadline = time.time() + 120
    while rows() < 2 and time.time() < deadline:  # a row after the header: it has trained, so it has a checkpoint
        time.sleep(0.5)  # to save (interrupted before its first update, a run leaves nothing)
    assert training()  # it runs: the check below can see it
    speedup.terminate()
    assert speedup.wait(timeout=60) == 143
    deadline = time.time() + 60
    while training() and time.time() < deadline:
        time.sleep(0.5)
    assert not training() and (run_dir / "checkpoint.pt").exists()  # stopped by Ctrl-C: it saved on the way out
    assert not (run_dir / "result.json").exists()  # unfinished: a rerun trains it again, from the start
    again = grid_runs(SpeedupArgs(seeds=(1,), reference_score=600), str(tmp_path / "runs"), "async_sarsa.py", 1)
    assert [run.run_dir for run in again] == [str(run_dir)] and not again[0].finished
    assert "--resume" not in again[0].command() and not run_dir.exists()  # resumed, its clock would count the restart


FAKE_LEARNING_TESTS = '''
def test_learns(tmp_path):  # an evaluation at 3 then a final one at 5: best 5, final 5
    (tmp_path / "progress.csv").write_text("global_step,eval_return_mean\\n10,3.0\\n20,\\n30,5.0\\n")
    (tmp_path / "eval.json").write_text('{"mean": 5.0}')
    (tmp_path / "model.pt").write_text("weights")


def test_fails(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "progress.csv").write_text("global_step,eval_return_mean\\n10,7.0\\n20,1.0\\n")
    (tmp_path / "run" / "eval.json").write_text('{"mean": 1.0}')
    assert False, "below the bar"
'''


def test_learning_tests_records_each_repeat_keeps_the_run_files_and_skips_measured_repeats(tmp_path):
    (tmp_path / "test_fake.py").write_text(FAKE_LEARNING_TESTS)
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "learning_tests.py"), "--repeats", "2",
               "--files", str(tmp_path / "test_fake.py"), "--out-dir", str(tmp_path / "out")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.load(open(tmp_path / "out" / "summary.json"))
    (learns, learned), (fails, failed) = summary.items()
    assert learns.endswith("::test_learns") and fails.endswith("::test_fails")
    assert learned["repeats"] == 2 and learned["passed"] == 2 and failed["settings"]["seed 1"]["passed"] == "0/2"
    assert learned["scores"] == {"test_learns0": {score: {"min": 5.0, "median": 5.0, "max": 5.0}
                                                  for score in ("final", "best")}}
    assert failed["scores"]["test_fails0/run"]["best"]["max"] == 7.0
    repeat = tmp_path / "out" / "test_learns" / "seed1" / "repeat1"
    assert sorted(os.listdir(repeat / "tmp" / "test_learns0")) == ["eval.json", "progress.csv"]  # model.pt dropped
    assert os.listdir(repeat / "tmp") == ["test_learns0"]  # and pytest's link to it, an absolute path
    record = json.load(open(tmp_path / "out" / "test_fails" / "seed1" / "repeat2" / "result.json"))
    assert record["passed"] is False and "below the bar" in record["failure"]
    stamp = os.path.getmtime(repeat / "result.json")
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and os.path.getmtime(repeat / "result.json") == stamp
    assert "repeat" not in again.stdout.split("{")[0]  # no repeat run again, the summary printed anew


@pytest.mark.parametrize("script", ["a3c.py", "async_sarsa.py"])
def test_profile_splits_a_workers_time_into_its_stages(tmp_path, script):
    out = tmp_path / "profile.json"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile.py"), "--script", script,
                             "--env-id", "CartPole-v1", "--steps", "400", "--warmup", "40", "--repeats", "1",
                             "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    profile = json.load(open(out))
    stages = profile["stages"]
    assert {"acting (forward pass, sampling)", "env.step (emulator, preprocessing)", "learning forward and loss",
            "backward and clip", "optimizer step", "sync theta' <- theta", "rest of the loop"} <= set(stages)
    assert ("target refresh" in stages) == (script != "a3c.py")
    assert sum(stage["share"] for stage in stages.values()) == pytest.approx(1.0)  # the stages tile the loop
    assert all(stage["ms_per_step"] > 0 for stage in stages.values())
    # the value-based script acts with its final epsilon, so that its network picks most actions (at epsilon 1 its
    # acting would be a random draw); a3c.py has no epsilon. (Not a comparison of times: under load they cross.)
    assert (["--epsilon-anneal-steps", "1"] == profile["command_line"][-2:]) == (script != "a3c.py")
    assert profile["ms_per_step"] * profile["steps_per_second"] == pytest.approx(1000)


def test_stop_at_step_stops_a_run_after_the_evaluation_it_waits_for_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, os.path.join(ROOT, "benchmarks", "stop_at_step.py"), "--step", "3000", "--poll", "0.2",
               "--", sys.executable, os.path.join(ROOT, "a3c.py"), "--env-id", "CartPole-v1", "--num-workers", "1",
               "--total-timesteps", "100000000", "--eval-interval", "1000", "--eval-episodes", "2",
               "--log-interval", "0.3", "--run-dir", str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 130, result.stderr[-2000:]  # stopped as Ctrl-C stops it, not run to its budget
    steps, _, _ = read_curve(str(run_dir / "progress.csv"), "sps")
    evaluated, _, _ = read_curve(str(run_dir / "progress.csv"), "eval_return_mean")
    assert max(evaluated) >= 3000 and steps[-1] < 100_000  # the awaited evaluation came, and it stopped soon after
    assert (run_dir / "checkpoint.pt").exists()
