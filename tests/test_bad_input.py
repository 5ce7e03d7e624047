"""Bad input, in all four scripts: refused with a UsageError (exit 2 and one line on stderr, which
test_a3c_script.py checks as a user sees it) before any process starts and before anything is written.
In-process for speed (each subprocess would import torch), but for one subprocess per value-based script."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import MODULES, ROOT, VALUE_BASED, used_run_dir

EVERY_SCRIPT = [  # (flags, the message's telling part), refused alike by all four
    (["--env-id", "CartPole-v7"], "CartPole-v1"),  # a close id is suggested
    (["--env-id", "tests.missing_module:CartPole-v1"], "tests.missing_module"),
    (["--env-id", "tests.custom_envs:CartPoleMultiDiscrete-v1"], "action space"),
    (["--env-id", "FrozenLake-v1"], "observation space"),
    (["--env-id", "tests.custom_envs:ImageDiscreteActions-v0"], "has observations of shape (96, 96, 3)"),
    (["--num-workers", "0"], "--num-workers"),
    (["--total-timesteps", "-5"], "--total-timesteps"),
    (["--learning-rate", "0"], "--learning-rate"),
    (["--learning-rate", "nan"], "--learning-rate"),
    (["--max-worker-restarts", "-1"], "--max-worker-restarts"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2**63 - 1, got -1"),
    (["--seed", str(2**63)], "--seed must be an integer from 0"),
    (["--eval-only"], "--checkpoint"),
    (["--eval-only", "--checkpoint", "/nonexistent/model.pt"], "/nonexistent/model.pt"),
    (["--eval-only", "--checkpoint", "README.md"], "README.md: it is not a model.pt or checkpoint.pt of {script}"),
    (["--resume", "missing.pt"], "missing.pt"),
    (["--resume", "corrupt.pt"], "cannot read checkpoint"),
    (["--resume", "acrobot.pt", "--env-id", "CartPole-v1"], "is for Acrobot-v1, not CartPole-v1"),
    (["--resume", "other_shape.pt"], "does not fit this network"),
    (["--resume", "other_shape.pt", "--activation", "relu"], "other_shape.pt was trained with --activation tanh"),
    (["--run-dir", "/proc/forbidden/run"], "run directory"),
    (["--run-dir", "used"], "used already holds a run: continue it with --resume used/checkpoint.pt"),
]
A3C_ONLY = [
    (["--env-id", "PongNoFrameskip-v4", "--normalize-obs"], "--normalize-obs is for vector observations"),
    (["--env-id", "ALE/Pong-v5", "--normalize-obs"], "--normalize-obs is for vector observations"),
    (["--env-id", "tests.custom_envs:ImageBoxActions-v0"], "has observations of shape (96, 96, 3)"),
    (["--env-id", "tests.custom_envs:ImageBoxActions-v0", "--no-normalize-obs"], "has observations of shape"),
    (["--resume", "other_script.pt"], "written by async_sarsa.py, not a3c.py"),
    (["--gae-lambda", "1.5"], "--gae-lambda must be between 0 and 1, got 1.5"),
    (["--env-id", "Pendulum-v1", "--log-std-init", "-1", "--no-state-independent-std"], "--log-std-init sets"),
    (["--env-id", "CartPole-v1", "--log-std-init", "-1"], "which this run does not use"),
    (["--clip-per-network"], "--clip-per-network is for Box actions, whose policy and value networks share no "
                              "parameters; CartPole-v1 has Discrete actions"),
]
VALUE_BASED_ONLY = [
    (["--env-id", "MountainCarContinuous-v0"], "for continuous control use a3c.py"),
    (["--resume", "other_script.pt"], "written by a3c.py, not"),
    (["--eval-epsilon", "2"], "--eval-epsilon must be between 0 and 1, got 2.0"),
    (["--epsilon-finals", "0.1", "2"], "--epsilon-finals must each be between 0 and 1, got 0.1, 2.0"),
]
CASES = [pytest.param(module, flags, message, id=f"{module.SCRIPT}: {' '.join(flags)}")
         for module in MODULES for flags, message in EVERY_SCRIPT + (A3C_ONLY if module.SCRIPT == "a3c.py"
                                                                      else VALUE_BASED_ONLY)]


@pytest.mark.parametrize("module, flags, message", CASES)
def test_bad_input_is_a_usage_error_before_anything_is_written(tmp_path, monkeypatch, module, flags, message):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path)  # a file, but no checkpoint
    used_run_dir(tmp_path)
    fake = {"script": module.SCRIPT, "args": {"env_id": "Acrobot-v1", "optimizer": "shared_rmsprop"}, "model": {},
            "optimizer_state": torch.zeros(1, 1), "global_step": 0}
    torch.save(fake, tmp_path / "acrobot.pt")
    torch.save({**fake, "args": {**fake["args"], "env_id": "CartPole-v1"}}, tmp_path / "other_shape.pt")
    other = "async_sarsa.py" if module.SCRIPT == "a3c.py" else "a3c.py"
    torch.save({**fake, "script": other}, tmp_path / "other_script.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [module.SCRIPT, "--env-id", "CartPole-v1", "--total-timesteps", "100", *flags])
    with pytest.raises(module.UsageError, match=re.escape(message.format(script=module.SCRIPT))) as refused:
        module.main()  # the last of a repeated flag wins
    assert "weights_only" not in str(refused.value)  # torch's advice to load a file unsafely is not passed on
    assert not (tmp_path / "runs").exists()  # refused before it made a run directory


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_track_without_wandb_installed_is_a_usage_error_before_anything_is_written(tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, "wandb", None)  # then `import wandb` raises ImportError, as when not installed
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [module.SCRIPT, "--env-id", "CartPole-v1", "--track"])
    with pytest.raises(module.UsageError, match=re.escape("--track logs to Weights & Biases, which is not installed: "
                                                          "pip install wandb==0.31.0")):
        module.main()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_a_value_based_script_run_as_a_user_runs_it_exits_2_on_box_actions_pointing_to_a3c(module):
    # the exit status and stderr of the script's own __main__ (a3c.py's: test_a3c_script.py)
    result = subprocess.run([sys.executable, os.path.join(ROOT, module.SCRIPT), "--env-id", "Pendulum-v1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "a3c.py" in result.stderr and "Traceback" not in result.stderr
