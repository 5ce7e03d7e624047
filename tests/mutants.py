"""The mutation check, run by .ci/run: each named mutation is a small change a bug could make, applied to a
temporary copy of the repository; the fast tests aimed at it must then fail (the mutant is killed). It prints
one line per mutant and exits 1 if any survives, or if a mutation no longer applies because its code changed
(then update the mutation with the code).

    python tests/mutants.py          # every mutant; about 2 minutes on 2 cores
    python tests/mutants.py sarsa    # those whose name contains "sarsa"
"""

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from conftest import SCRIPTS  # tests/ is this script's directory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VALUE_BASED = SCRIPTS[1:]
COPIED = (*SCRIPTS, "common.py", "tests", "pyproject.toml")

# (name, file, the text as it is, the text mutated, the test files aimed at it). A mutation in several scripts
# is one row per script (each file stands alone: a bug can be in one of them).
SEGMENTS, OPTIMIZERS, WORKER = "tests/test_segments.py", "tests/test_optimizers.py", "tests/test_worker.py"
MUTANTS = [
    ("a3c.py: advantage sign flipped", "a3c.py", "advantages = returns - values", "advantages = values - returns",
     ["tests/test_a3c_math.py", SEGMENTS]),
    ("a3c.py: advantage not detached in the policy loss", "a3c.py", "(log_probs * advantages.detach())",
     "(log_probs * advantages)", ["tests/test_a3c_math.py"]),
    ("a3c.py: segment_loss aligns V with values[1:]", "a3c.py", "torch.from_numpy(returns), values[:-1],",
     "torch.from_numpy(returns), values[1:],", [SEGMENTS]),
    ("a3c.py: segment_loss drops the entropy bonus", "a3c.py", "args.value_coef, args.entropy_coef)",
     "args.value_coef, 0.0)", [SEGMENTS]),
    ("a3c.py: segment_loss ignores value_coef", "a3c.py", "args.value_coef, args.entropy_coef)",
     "1.0, args.entropy_coef)", [SEGMENTS]),
    ("a3c.py: lambda_returns bootstraps at a terminal state", "a3c.py",
     "R = next_value = 0.0 if terminated else values[-1]", "R = next_value = values[-1]",
     ["tests/test_a3c_math.py", SEGMENTS]),
    ("a3c.py: lambda_returns ignores lambda", "a3c.py", "gamma * ((1 - lam) * next_value + lam * R)",
     "gamma * R", ["tests/test_a3c_math.py", SEGMENTS]),
    ("a3c.py: segment_loss ignores --gae-lambda", "a3c.py", "args.gamma, args.gae_lambda)", "args.gamma, 1.0)",
     [SEGMENTS]),
    ("a3c.py: the low-entropy warning fires on a policy that learned", "a3c.py",
     "step < self.args.total_timesteps / 2 and not learned", "step < self.args.total_timesteps / 2",
     ["tests/test_output.py"]),
    ("a3c.py: --log-std-init ignored", "a3c.py", "torch.full((action_space.shape[0],), args.log_std_init)",
     "torch.zeros(action_space.shape[0])", ["tests/test_a3c_continuous_lstm.py"]),
    ("a3c.py: play() marks a truncation as terminal", "a3c.py", "rewards, terminated), obs, state",
     "rewards, terminated or truncated), obs, state", [SEGMENTS]),
    ("a3c.py: evaluate() keeps the LSTM state at a lost life", "a3c.py", "                state = None\n",
     "                pass\n", ["tests/test_a3c_continuous_lstm.py"]),
    ("async_nstep_q.py: bootstraps from theta, not theta^-", "async_nstep_q.py",
     "next_q_target = target_net(torch.from_numpy(segment.observations[-1:]))",
     "next_q_target = model(torch.from_numpy(segment.observations[-1:]))", [SEGMENTS]),
    ("async_nstep_q.py: n_step_targets bootstraps at a terminal state", "async_nstep_q.py",
     "R = 0.0 if terminated else float(np.max(next_q_target))", "R = float(np.max(next_q_target))",
     ["tests/test_value_based.py", SEGMENTS]),
    ("async_one_step_q.py: bootstraps from theta, not theta^-", "async_one_step_q.py",
     "next_q_target = target_net(torch.from_numpy(segment.observations[1:]))",
     "next_q_target = model(torch.from_numpy(segment.observations[1:]))", [SEGMENTS]),
    ("async_sarsa.py: bootstraps from theta, not theta^-", "async_sarsa.py",
     "next_q_target = target_net(torch.from_numpy(segment.observations[1:]))",
     "next_q_target = model(torch.from_numpy(segment.observations[1:]))", [SEGMENTS]),
    ("async_sarsa.py: the target takes the max, not a'", "async_sarsa.py",
     "next_q_taken = next_q_target[np.arange(len(rewards)), next_actions]",
     "next_q_taken = next_q_target.max(axis=1)", ["tests/test_value_based.py", SEGMENTS]),
    ("async_sarsa.py: play() draws a new first action instead of the a' carried", "async_sarsa.py",
     "actions.append(act(model, obs, epsilon, rng) if action is None else action)",
     "actions.append(act(model, obs, epsilon, rng))", [SEGMENTS]),
    ("async_sarsa.py: a' taken as a", "async_sarsa.py", "terminated, actions[1:] + [next_action])",
     "terminated, actions)", [SEGMENTS]),
    ("async_sarsa.py: play() marks a truncation as terminal", "async_sarsa.py",
     "segment = Segment(np.stack(observations), actions, rewards, terminated,",
     "segment = Segment(np.stack(observations), actions, rewards, terminated or truncated,", [SEGMENTS]),
]
MUTANTS.append(("common.py: NormalizeReward lets a NaN into its statistics", "common.py",
                "if np.isfinite(reward):  # the update", "if True:  # the update", ["tests/test_common.py"]))
MUTANTS.append(("common.py: rmsprop_update's multiply-add fused in another order than torch's", "common.py",
                "square_avg[i] = one_minus_alpha * g * g + square_avg[i] * alpha",
                "square_avg[i] = square_avg[i] * alpha + one_minus_alpha * g * g", [OPTIMIZERS]))
TRACKED = "tests/test_output.py::test_track_logs_tensorboards_scalars_under_its_keys_to_a_wandb_run_offline"
MUTANTS += [
    ("a3c.py: --track does not mirror TensorBoard's scalars", "a3c.py",
     "            wandb.tensorboard.patch(root_logdir=run_dir, save=False)\n", "", [TRACKED]),
    ("a3c.py: --track starts a new W&B run on a resume", "a3c.py", "id=wandb_id,", "id=None,", [TRACKED]),
]
for script in VALUE_BASED[:2]:
    MUTANTS.append((f"{script}: play() marks a truncation as terminal", script,
                    "Segment(np.stack(observations), actions, rewards, terminated), obs",
                    "Segment(np.stack(observations), actions, rewards, terminated or truncated), obs", [SEGMENTS]))
for script in VALUE_BASED:
    MUTANTS += [
        (f"{script}: act() explores with probability 1 - epsilon", script, "if rng.random() < epsilon:",
         "if rng.random() > epsilon:", ["tests/test_value_based.py"]),
        (f"{script}: exploration shares the env's stream", script,
         "return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])", "return np.random.default_rng(seed)",
         ["tests/test_value_based.py"]),
        (f"{script}: theta^- refreshed by a count of intervals", script, "due = global_step // interval * interval",
         "due = global_step // interval", ["tests/test_value_based.py"]),
        (f"{script}: theta^-'s boundary recorded before its copy", script,
         "    target_params.copy_(shared_params)\n    target_step.value = due",
         "    target_step.value = due\n    target_params.copy_(shared_params)", ["tests/test_value_based.py"]),
        (f"{script}: every worker refreshes theta^-", script, "        if rank == 0:  # if T mod I_target",
         "        if True:  # if T mod I_target", [WORKER]),
        (f"{script}: --epsilon-finals ignored", script, "    if chosen:\n        return chosen[rank % len(chosen)]\n",
         "", ["tests/test_value_based.py"]),
        (f"{script}: the worker ignores --epsilon-finals", script, "args.num_workers, args.epsilon_finals)",
         "args.num_workers)", [WORKER]),
        (f"{script}: target_step a Value with a lock", script, 'ctx.RawValue("q", 0)', 'ctx.Value("q", 0)',
         ["tests/test_hogwild.py"]),
        (f"{script}: the Atari preset keeps the paper's 1M-step epsilon schedule", script,
         "epsilon_anneal_steps=250_000, epsilon_finals", "epsilon_finals", ["tests/test_value_based.py"]),
        (f"{script}: the Atari preset keeps the paper's final epsilons", script, "epsilon_finals=(0.01, 0.1),", "",
         ["tests/test_value_based.py"]),
    ]
for script in SCRIPTS:
    MUTANTS += [
        (f"{script}: --normalize-reward ignored", script,
         "env = NormalizeReward(env, gamma=args.gamma)", "env = env", [WORKER]),
        (f"{script}: RMSProp alpha swapped with 1 - alpha", script,
         "rmsprop_update(self.params, grad, square_avg, self.alpha, self.eps, lr)",
         "rmsprop_update(self.params, grad, square_avg, 1 - self.alpha, self.eps, lr)", [OPTIMIZERS]),
        (f"{script}: momentum swapped with 1 - momentum", script,
         "self.state[rank].mul_(self.momentum).add_(grad, alpha=1 - self.momentum)",
         "self.state[rank].mul_(1 - self.momentum).add_(grad, alpha=self.momentum)", [OPTIMIZERS]),
        (f"{script}: no gradient clip", script, "        grads.mul_(max_grad_norm / grad_norm)", "        pass",
         [OPTIMIZERS]),
        (f"{script}: a non-finite gradient applied", script, "    if not np.isfinite(grad_norm):\n        return False",
         "    if False:\n        return False", [OPTIMIZERS]),
        (f"{script}: the learning rate not annealed", script,
         "    return args.learning_rate * max(0.0, 1.0 - global_step / args.total_timesteps)",
         "    return args.learning_rate", [WORKER]),
        (f"{script}: T counted once per segment", script, "shared.step_counts[rank] += len(segment.rewards)",
         "shared.step_counts[rank] += 1", [WORKER]),
    ]


def run_tests(root, tests):
    """True if the tests pass in the copy at `root`."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    return subprocess.run(command, cwd=root, capture_output=True, timeout=600).returncode == 0


def copy_of_the_repository(into):
    for name in COPIED:
        source = os.path.join(ROOT, name)
        (shutil.copytree if os.path.isdir(source) else shutil.copy)(source, os.path.join(into, name))


def check(mutant):
    """'killed', 'SURVIVED' or 'does not apply' for one mutant."""
    name, path, original, mutated, tests = mutant
    with tempfile.TemporaryDirectory() as root:
        copy_of_the_repository(root)
        with open(os.path.join(root, path)) as f:
            text = f.read()
        if text.count(original) != 1:
            return "does not apply"
        with open(os.path.join(root, path), "w") as f:
            f.write(text.replace(original, mutated))
        return "SURVIVED" if run_tests(root, tests) else "killed"


def main():
    chosen = [mutant for mutant in MUTANTS if all(word in mutant[0] for word in sys.argv[1:])]
    with tempfile.TemporaryDirectory() as root:  # the unmutated copy passes: a kill is then the mutation's
        copy_of_the_repository(root)
        if not run_tests(root, sorted({test for *_, tests in chosen for test in tests})):
            sys.exit("mutants.py: the aimed tests fail on the unmutated code; fix them first")
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        outcomes = list(pool.map(check, chosen))
    for (name, *_), outcome in zip(chosen, outcomes, strict=True):
        print(f"{outcome:>14}  {name}")
    bad = sum(outcome != "killed" for outcome in outcomes)
    print(f"{len(chosen) - bad} of {len(chosen)} mutants killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
