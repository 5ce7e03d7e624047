"""What a user of any of the four scripts sees: --help with the values that will run, progress.csv rows that each
measure a speed, the console lines, TensorBoard's hyperparameters page, --track's W&B run, --stop-at-eval-return,
and a3c.py's warning when its policy stops exploring."""

import csv
import glob
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import wandb
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import a3c
import async_sarsa
from conftest import MODULES, ROOT, VALUE_BASED, parsed



def help_text(module, monkeypatch, capsys, *flags):
    monkeypatch.setattr(sys, "argv", [module.SCRIPT, *flags, "--help"])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        module.parse_args()
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # one line: the layout wraps at the terminal's width


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_help_shows_the_values_that_will_run_for_the_env_and_where_they_come_from(module, monkeypatch, capsys):
    vector = module.PRESETS["vector"]
    text = help_text(module, monkeypatch, capsys, "--env-id", "CartPole-v1")
    assert "will run for CartPole-v1 (the vector family); these come from the vector preset:" in text
    assert f"--total-timesteps {vector['total_timesteps']} " in text  # listed as from the preset
    assert f"(default: {vector['total_timesteps']})" in text and f"(default: {vector['learning_rate']})" in text
    assert f"(default: {module.Args.total_timesteps})" not in text  # the value no family uses is not shown
    plain = help_text(module, monkeypatch, capsys)  # the bare command trains Pong
    assert "will run for PongNoFrameskip-v4 (the atari family)" in plain


@pytest.mark.parametrize("module", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_help_shows_a_presets_tuple_as_it_is_typed(module, monkeypatch, capsys):
    plain = help_text(module, monkeypatch, capsys)  # the Atari preset's final epsilons
    assert "--epsilon-finals 0.01 0.1 --standardize-frames" in plain and "(0.01, 0.1)" not in plain


def test_help_after_resume_shows_the_checkpoints_values(monkeypatch, capsys, tmp_path):
    args = async_sarsa.Args(env_id="CartPole-v1", total_timesteps=1234, learning_rate=5e-4)
    torch.save({"script": "async_sarsa.py", "args": vars(args), "model": {}, "global_step": 3}, tmp_path / "c.pt")
    text = help_text(async_sarsa, monkeypatch, capsys, "--resume", str(tmp_path / "c.pt"))
    assert f"will run for the run in {tmp_path / 'c.pt'}; these come from the checkpoint:" in text
    assert "--total-timesteps 1234 --learning-rate 0.0005" in text and "(default: 1234)" in text


def new_progress(module, run_dir, wandb_id=None, **overrides):
    args = module.Args(env_id="CartPole-v1", total_timesteps=100_000, log_interval=1.0, **overrides)
    return module.Progress(str(run_dir), args, dict.fromkeys(vars(args), "default"), 0, 0.0, wandb_id=wandb_id)


def rows(run_dir):
    with open(os.path.join(run_dir, "progress.csv")) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_every_row_measures_a_speed_from_the_workers_first_step(module, tmp_path):
    progress = new_progress(module, tmp_path)
    progress.log(0, 2.0)  # the workers still start: no row
    progress.log(10, 3.0)  # their first steps start the clock, after 3 s of start-up that is no training speed
    progress.log(20, 3.5)  # within --log-interval: no row
    progress.record(2, "eval", (10, [5.0]))
    progress.log(30, 3.6)  # an evaluation: a row at once
    progress.log(30, 5.0)  # no step since: no row
    progress.log(2030, 5.6)
    progress.record(2, "eval", (2000, [1.0]))  # came in as the workers finished: not lost to the final one
    # the final row, with the final evaluation: the workers' last 5 steps as they stopped are no speed (a Pong run
    # stopped at its target logged 7.4 there against 428 before), so it shows the last one measured
    progress.last(2035, 6.0, final_returns=[7.0, 9.0])
    progress.close()
    written = [(row["global_step"], row["sps"], row["eval_global_step"], row["eval_return_mean"])
               for row in rows(tmp_path)]
    assert written == [("30", "33.3333", "10", "5"), ("2030", "1000", "", ""), ("2035", "1000", "2000", "1"),
                       ("2035", "1000", "2035", "8")]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_an_evaluation_is_printed_and_stop_at_eval_return_is_noticed(module, tmp_path, capsys):
    progress = new_progress(module, tmp_path, stop_at_eval_return=100.0)
    progress.record(1, "eval", (4000, [90.0, 100.0]))
    assert not progress.reached
    progress.record(1, "eval", (6000, [100.0, 110.0]))
    assert progress.reached
    progress.close()
    printed = capsys.readouterr()
    assert f"{module.SCRIPT}: evaluation of step 4000: 95.00 +- 5.00 over 2 episodes\n" in printed.out + printed.err
    assert "evaluation of step 6000: 105.00 +- 5.00 over 2 episodes; reached --stop-at-eval-return 100.0" in (
        printed.out + printed.err)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_tensorboard_gets_the_runs_hyperparameters_as_a_text_page(module, tmp_path):
    new_progress(module, tmp_path).close()
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0}).Reload()
    [page] = events.Tensors("hyperparameters/text_summary")
    text = page.tensor_proto.string_val[0].decode()
    assert "| flag | value | from |" in text and "| --env-id | CartPole-v1 | default |" in text
    assert "| --total-timesteps | 100000 | default |" in text


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_exp_name_names_the_default_run_directory(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for flags, name in (([], module.SCRIPT[:-3]), (["--exp-name", "wider"], "wider")):
        args, sources = parsed(module, monkeypatch, "--env-id", "ALE/Pong-v5", "--seed", "3", *flags)
        assert re.fullmatch(rf"runs/ALE_Pong-v5__{name}__3__\d+", module.make_run_dir(args, sources))


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_track_logs_tensorboards_scalars_under_its_keys_to_a_wandb_run_offline(module, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network: W&B writes its run under <run-dir>/wandb
    progress = new_progress(module, tmp_path, wandb_id="resumed1", track=True, wandb_project_name="tested")
    progress.log(10, 1.0)
    progress.record(1, "episode", (20.0, 20))
    progress.log(2000, 3.0)
    progress.last(2000, 3.5, final_returns=[30.0])
    progress.close()
    wandb.teardown()  # as at the script's exit: W&B's service process writes out what it holds, then stops
    # a resumed run (its id from the checkpoint) logs into its own W&B run again
    [log] = glob.glob(str(tmp_path / "wandb" / "offline-run-*-resumed1" / "run-resumed1.wandb"))
    with open(log, "rb") as f:
        written = f.read()  # W&B's transaction log: its protobuf records hold the keys as plain bytes
    name = f"CartPole-v1__{module.SCRIPT[:-3]}__1".encode()  # CleanRL's run name, without the time
    for key in (b"tested", name, b"charts/episodic_return", b"charts/SPS", b"charts/learning_rate",
                b"eval/return_mean"):
        assert key in written, key


def watched(run_dir, rows, total_timesteps=100_000):
    """a3c.py's Progress shown rows of (global step, mean entropy, mean training return or None), 3 actions."""
    args = a3c.Args(total_timesteps=total_timesteps)
    os.makedirs(run_dir)
    progress = a3c.Progress(str(run_dir), args, dict.fromkeys(vars(args), "default"), 0, 0.0, max_entropy=1.0986)
    for step, entropy, mean_return in rows:
        progress.watch_entropy(step, entropy, mean_return)
    progress.close()


def test_a3c_warns_once_when_its_policy_stops_exploring_early(capsys, tmp_path):
    # Acrobot-v1 with the vector preset and --no-normalize-reward: the entropy (of at most log 3 = 1.10) fell to
    # 0.02 by 15k steps, for good, the returns at -500 throughout
    # (benchmarks/results/acrobot/a3c/preset_log_interval_1s_seed1/progress.csv, its first rows)
    collapsed = [(4450, 0.72, -500), (14865, 0.023, -500), (20980, 0.014, -500), (34380, 0.014, None),
                 (40740, 0.014, -500)]
    watched(tmp_path / "a", collapsed)
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "--entropy-coef (now 0.01)" in err and "since step 14865" in err
    # a brief dip that recovers (CartPole-v1 with 8 workers), or a low entropy late in training, is no warning
    watched(tmp_path / "b", [(823, 0.007, 9.5), (1973, 0.001, 9.4), (8413, 0.236, 30.0), (20000, 0.3, 80.0)])
    watched(tmp_path / "c", [(60_000, 0.01, 9.0), (90_000, 0.01, 9.0)])
    # nor is a policy sure of what it learned: Acrobot-v1 with the vector preset (normalize_reward/Acrobot-v1/seed2)
    learned = [(1380, 0.66, -500), (6169, 0.33, -219.2), (76835, 0.097, -97.0), (80846, 0.098, -88.1),
               (85203, 0.101, -104.3), (89999, 0.103, -92.3)]
    watched(tmp_path / "d", learned, total_timesteps=200_000)
    assert "warning" not in capsys.readouterr().err


def test_a3c_stops_at_an_evaluation_that_reaches_stop_at_eval_return_and_can_go_on(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "a3c.py"), "--env-id", "CartPole-v1", "--num-workers",
                             "1", "--eval-interval", "2000", "--eval-episodes", "3", "--stop-at-eval-return", "60",
                             "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"a3c.py: writing to {tmp_path}\n"), result.stdout
    evaluation = json.load(open(tmp_path / "eval.json"))
    stopped_at = evaluation["global_step"]
    assert stopped_at < a3c.PRESETS["vector"]["total_timesteps"] / 2  # CartPole gets above 60 within 20k steps
    assert "reached --stop-at-eval-return 60.0" in result.stdout + result.stderr
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["global_step"] == stopped_at
    assert json.load(open(tmp_path / "config.json"))["run_dir"] == str(tmp_path)
    assert all(float(row["sps"]) > 0 for row in rows(tmp_path))
    assert "step/s" not in result.stderr  # one speed on the progress bar: the sps of progress.csv
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "a3c.py"), "--resume", str(tmp_path / "checkpoint.pt"),
                              "--total-timesteps", str(stopped_at + 1000), "--stop-at-eval-return", "None"],
                             capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.startswith(f"a3c.py: resuming {tmp_path} at step {stopped_at}\n"), resumed.stdout
    assert json.load(open(tmp_path / "eval.json"))["global_step"] >= stopped_at + 1000
