"""a3c.py driven as a user drives it: subprocess, tiny budgets, a timeout."""

import csv
import glob
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import a3c as a3c_module
from conftest import ROOT, parsed

RUN_FILES = {"config.json", "progress.csv", "checkpoint.pt", "model.pt", "eval.json"}


def a3c(*flags, timeout=180):
    return subprocess.run([sys.executable, os.path.join(ROOT, "a3c.py"), *flags], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def last_global_step(path):
    rows = read_csv(path) if os.path.exists(path) else []
    return int(rows[-1]["global_step"]) if rows else 0


def test_help_documents_the_contract_flags():
    result = a3c("--help")
    assert result.returncode == 0
    for flag in ("--env-id", "--num-workers", "--total-timesteps", "--seed", "--learning-rate", "--run-dir",
                 "--eval-interval", "--eval-episodes", "--eval-only", "--checkpoint", "--resume", "--capture-video"):
        assert flag in result.stdout


@pytest.mark.parametrize("family, env_id, flag, value", [
    ("atari", "PongNoFrameskip-v4", "--rms-eps", 0.01),
    ("vector", "CartPole-v1", "--learning-rate", 1e-3),
    ("box", "InvertedPendulum-v5", "--learning-rate", 1e-3),
])
def test_each_family_preset_is_the_default_and_a_given_flag_wins(monkeypatch, family, env_id, flag, value):
    preset = a3c_module.PRESETS[family]
    args, sources = parsed(a3c_module, monkeypatch, "--env-id", env_id)
    assert {name: getattr(args, name) for name in preset} == preset
    assert any(getattr(a3c_module.Args(), name) != v for name, v in preset.items())  # the preset changes something
    assert {name for name, source in sources.items() if source == f"{family} preset"} == set(preset)
    assert sources["env_id"] == "command line" and sources["gamma"] == "default"
    name = flag[2:].replace("-", "_")
    args, sources = parsed(a3c_module, monkeypatch, "--env-id", env_id, f"{flag}={value}")
    assert getattr(args, name) == value and sources[name] == "command line"
    assert all(getattr(args, other) == v for other, v in preset.items() if other != name)  # the rest stays


def test_a_switch_turned_off_wins_over_the_preset(monkeypatch):
    args, sources = parsed(a3c_module, monkeypatch, "--env-id", "ALE/Breakout-v5", "--no-center-init")
    assert args.center_init is False and sources["center_init"] == "command line"
    assert args.standardize_frames is True and sources["standardize_frames"] == "atari preset"


def test_an_env_of_no_family_keeps_the_papers_values(monkeypatch):  # (a3c.py then refuses its action space)
    args, sources = parsed(a3c_module, monkeypatch, "--env-id", "tests.custom_envs:CartPoleMultiDiscrete-v1")
    assert args == a3c_module.Args(env_id=args.env_id, num_workers=args.num_workers)
    assert set(sources.values()) == {"command line", "default"}


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pong") / "run"
    result = a3c("--env-id", "PongNoFrameskip-v4", "--num-workers", "2", "--total-timesteps", "600",
                 "--eval-interval", "300", "--eval-episodes", "1", "--eval-max-steps", "150", "--log-interval", "0.5",
                 "--run-dir", str(run_dir))
    return run_dir, result


@pytest.mark.slow
def test_pong_run_writes_every_file_of_the_run_directory(pong_run):
    run_dir, result = pong_run
    assert result.returncode == 0, result.stderr[-3000:]
    files = set(os.listdir(run_dir))
    assert RUN_FILES <= files
    assert any(name.startswith("events.out.tfevents") for name in files)
    config = json.load(open(run_dir / "config.json"))
    assert config["env_id"] == "PongNoFrameskip-v4" and config["num_workers"] == 2
    assert {"python", "torch", "gymnasium", "ale_py", "mujoco"} <= set(config["versions"])
    assert config["learning_rate"] == a3c_module.PRESETS["atari"]["learning_rate"]
    assert config["sources"]["learning_rate"] == "atari preset" and config["sources"]["num_workers"] == "command line"
    assert config["sources"]["gamma"] == "default" and set(config["sources"]) == set(config) - {"sources", "versions"}
    rows = read_csv(run_dir / "progress.csv")
    assert {"global_step", "seconds", "sps", "episodic_return", "eval_return_mean", "eval_return_std",
            "learning_rate"} <= set(rows[0])
    assert int(rows[-1]["global_step"]) >= 600
    evaluation = json.load(open(run_dir / "eval.json"))
    assert set(evaluation) >= {"env_id", "global_step", "returns", "mean", "std"}
    assert evaluation["env_id"] == "PongNoFrameskip-v4" and evaluation["global_step"] >= 600
    assert len(evaluation["returns"]) == 1 and evaluation["mean"] == evaluation["returns"][0]
    assert evaluation["returns"][0] == int(evaluation["returns"][0])  # Pong pays whole points, real rewards logged
    assert float(rows[-1]["eval_return_mean"]) == evaluation["mean"]  # the final evaluation's row
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] >= 600 and "optimizer_state" in checkpoint


@pytest.mark.slow
def test_eval_only_evaluates_a_saved_model(pong_run, tmp_path):
    run_dir, _ = pong_run
    result = a3c("--eval-only", "--checkpoint", str(run_dir / "model.pt"), "--eval-episodes", "2",
                 "--eval-max-steps", "150", "--capture-video", "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.load(open(tmp_path / "eval.json"))
    assert evaluation["env_id"] == "PongNoFrameskip-v4" and len(evaluation["returns"]) == 2
    assert evaluation["global_step"] >= 600
    # the saved weights, the run's evaluation seed and episode cap: its first episode is the run's final evaluation
    assert evaluation["returns"][0] == json.load(open(run_dir / "eval.json"))["returns"][0]
    assert sorted(os.listdir(tmp_path / "videos")) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"]


@pytest.mark.slow
def test_resume_continues_the_global_step_and_the_progress_file(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("WANDB_MODE", "offline")  # a tracked run (--track) goes on in its own W&B run too
    first = a3c("--env-id", "CartPole-v1", "--num-workers", "2", "--total-timesteps", "3000", "--eval-episodes", "2",
                "--run-dir", str(run_dir), "--track")
    assert first.returncode == 0, first.stderr[-3000:]
    rows_before = read_csv(run_dir / "progress.csv")
    before = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    step_before, wandb_id = before["global_step"], before["wandb_id"]
    assert 3000 <= step_before < 3100
    second = a3c("--resume", str(run_dir / "checkpoint.pt"), "--total-timesteps", "6000")
    assert second.returncode == 0, second.stderr[-3000:]
    rows_after = read_csv(run_dir / "progress.csv")
    assert rows_after[:len(rows_before)] == rows_before  # appended, not rewritten
    steps = [int(row["global_step"]) for row in rows_after[len(rows_before):]]
    assert min(steps) >= step_before  # the new part starts where the old one stopped
    assert json.load(open(run_dir / "eval.json"))["global_step"] >= 6000
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert 6000 <= resumed["global_step"] < 6100
    assert resumed["args"]["eval_episodes"] == 2  # flags not given again keep the run's values
    assert resumed["wandb_id"] == wandb_id and len(glob.glob(str(run_dir / "wandb" / f"offline-run-*-{wandb_id}"))) == 2
    config = (run_dir / "config.json").read_text()
    for flags, message in ((["--env-id", "Acrobot-v1"], "is for CartPole-v1, not Acrobot-v1"),
                           (["--hidden-sizes", "32"], "does not fit this network"), ([], "weights only")):
        path = run_dir / ("model.pt" if message == "weights only" else "checkpoint.pt")
        with pytest.raises(a3c_module.UsageError, match=message):  # in-process: exit 2 is checked below
            main_with_flags(monkeypatch, "--resume", str(path), *flags)
    assert (run_dir / "config.json").read_text() == config  # a refused resume leaves the run as it was


def main_with_flags(monkeypatch, *flags):
    monkeypatch.setattr(sys, "argv", ["a3c.py", *flags])
    return a3c_module.main()


def test_an_error_about_a_flag_the_preset_set_names_the_preset(monkeypatch, tmp_path):
    # a checkpoint can hold what a preset set; here a run of the box preset's flags on an Atari game
    args = a3c_module.Args(env_id="PongNoFrameskip-v4", normalize_obs=True)
    torch.save({"script": "a3c.py", "args": vars(args), "model": {}, "global_step": 0}, tmp_path / "model.pt")
    with pytest.raises(a3c_module.UsageError, match=re.escape("--normalize-obs (set by the checkpoint) is for")):
        main_with_flags(monkeypatch, "--eval-only", "--checkpoint", str(tmp_path / "model.pt"))


def test_an_image_env_with_box_actions_is_refused_before_anything_is_written(tmp_path):
    # (CarRacing-v3: the box preset's --normalize-obs was blamed, then the workers crashed on the frames)
    for flags in ([], ["--no-normalize-obs"]):
        result = a3c("--env-id", "tests.custom_envs:ImageBoxActions-v0", "--run-dir", str(tmp_path / "run"), *flags)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "has observations of shape (96, 96, 3); the scripts take vector observations" in result.stderr
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--env-id", "CartPole-v7"], "error: unknown environment id 'CartPole-v7'"),
    (["--num-workers", "0"], "error: --num-workers must be a positive integer, got 0"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(flags, message):
    result = a3c("--env-id", "CartPole-v1", *flags)
    assert result.returncode == 2
    assert result.stderr.startswith("a3c.py: " + message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
