"""The mutation check, run by .ci/run: each named mutation is a small change a bug could make, applied to a
temporary copy of the repository; the fast tests aimed at it must then fail (the mutant is killed). It prints
one line per mutant (with the test that killed it) and exits 1 if any survives, if a mutation no longer applies
because its code changed (then update the mutation with the code), or if an aimed test no longer exists.

    python tests/mutants.py          # every mutant; 6-8 minutes on 2 cores
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

# (name, file, the text as it is, the text mutated, the tests aimed at it: files, or one test (and parameter) where
# a file would run many that cannot kill it). A mutation in several scripts is one row per script (each file stands
# alone: a bug can be in one of them).
SEGMENTS, OPTIMIZERS, WORKER = "tests/test_segments.py", "tests/test_optimizers.py", "tests/test_worker.py"
VALUE_BASED_TESTS, HOGWILD = "tests/test_value_based.py", "tests/test_hogwild.py"
ALPHA = "test_rmsprop_and_momentum_weigh_the_past_by_their_own_coefficient_not_its_complement"


def aim(file, test, parameter):
    """One test of a file at one parameter (a script's name): all that a mutant of that script needs to run."""
    return [f"{file}::{test}[{parameter}]"]


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
     ["tests/test_output.py::test_a3c_warns_once_when_its_policy_stops_exploring_early"]),
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
ACTIVATION = aim("tests/test_common.py", "test_every_script_builds_its_vector_trunk_with_the_activation_asked_for",
                 "relu")
MUTANTS += [
    ("common.py: --activation relu builds a tanh trunk", "common.py",
     'nn.Tanh() if activation == "tanh" else nn.ReLU()', "nn.Tanh()", ACTIVATION),
    ("a3c.py: --activation not passed to the trunk", "a3c.py", "args.activation)", '"tanh")', ACTIVATION),
]
CLIP_PER_NETWORK = f"{OPTIMIZERS}::test_a3c_clip_per_network_clips_the_policy_and_the_value_network_each_on_its_own"
MUTANTS += [
    ("a3c.py: apply_gradient clips the whole gradient by each part's norm", "a3c.py",
     "grads[part] *= max_grad_norm / norm", "grads *= max_grad_norm / norm", [CLIP_PER_NETWORK]),
    ("a3c.py: --clip-per-network ignored by the worker", "a3c.py", "parts = (~value, value) if args.clip_per_network",
     "parts = (slice(None),) if args.clip_per_network", [CLIP_PER_NETWORK]),
    ("a3c.py: --clip-per-network clips the value head with the policy", "a3c.py", 'name.startswith("value")',
     'name.startswith("value_body")', [CLIP_PER_NETWORK]),
]
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
         "if rng.random() > epsilon:",
         aim(VALUE_BASED_TESTS, "test_act_is_greedy_with_probability_one_minus_epsilon_else_uniform", script)),
        (f"{script}: exploration shares the env's stream", script,
         "return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])", "return np.random.default_rng(seed)",
         aim(VALUE_BASED_TESTS, "test_the_evaluation_explores_with_a_stream_apart_from_the_envs", script)),
        (f"{script}: theta^- refreshed by a count of intervals", script, "due = global_step // interval * interval",
         "due = global_step // interval",
         aim(VALUE_BASED_TESTS, "test_a_refresh_cut_short_in_its_copy_is_left_to_the_next_try", script)),
        (f"{script}: theta^-'s boundary recorded before its copy", script,
         "    target_params.copy_(shared_params)\n    target_step.value = due",
         "    target_step.value = due\n    target_params.copy_(shared_params)",
         aim(VALUE_BASED_TESTS, "test_a_refresh_cut_short_in_its_copy_is_left_to_the_next_try", script)),
        (f"{script}: every worker refreshes theta^-", script, "        if rank == 0:  # if T mod I_target",
         "        if True:  # if T mod I_target",
         aim(WORKER, "test_worker_0_alone_refreshes_the_target_network", script)),
        (f"{script}: --epsilon-finals ignored", script, "    if chosen:\n        return chosen[rank % len(chosen)]\n",
         "",
         aim(VALUE_BASED_TESTS, "test_the_workers_final_epsilons_span_the_papers_distribution", script)),
        (f"{script}: the worker ignores --epsilon-finals", script, "args.num_workers, args.epsilon_finals)",
         "args.num_workers)",
         aim(WORKER, "test_a_worker_anneals_epsilon_to_its_own_final_value", script)),
        (f"{script}: target_step a Value with a lock", script, 'ctx.RawValue("q", 0)', 'ctx.Value("q", 0)',
         aim(HOGWILD, "test_what_the_processes_share_holds_no_lock_a_killed_worker_could_keep", script)),
        (f"{script}: the Atari preset keeps the paper's 1M-step epsilon schedule", script,
         "epsilon_anneal_steps=250_000, epsilon_finals", "epsilon_finals",
         aim(VALUE_BASED_TESTS, "test_each_familys_preset_is_the_default_and_a_given_flag_wins", script)),
        (f"{script}: the Atari preset keeps the paper's final epsilons", script, "epsilon_finals=(0.01, 0.1),", "",
         aim(VALUE_BASED_TESTS, "test_each_familys_preset_is_the_default_and_a_given_flag_wins", script)),
    ]
for script in SCRIPTS:
    clip, finite = (("            grads[part] *= max_grad_norm / norm", "    if not np.all(np.isfinite(norms)):")
                    if script == "a3c.py" else  # a3c.py clips parts of the gradient (--clip-per-network)
                    ("        grads.mul_(max_grad_norm / grad_norm)", "    if not np.isfinite(grad_norm):"))
    MUTANTS += [
        (f"{script}: --normalize-reward ignored", script,
         "env = NormalizeReward(env, gamma=args.gamma)", "env = env",
         aim(WORKER, "test_a_worker_trains_on_normalised_rewards_with_normalize_reward", f"{script}-True")),
        (f"{script}: RMSProp alpha swapped with 1 - alpha", script,
         "rmsprop_update(self.params, grad, square_avg, self.alpha, self.eps, lr)",
         "rmsprop_update(self.params, grad, square_avg, 1 - self.alpha, self.eps, lr)",
         aim(OPTIMIZERS, ALPHA, script)),
        (f"{script}: momentum swapped with 1 - momentum", script,
         "self.state[rank].mul_(self.momentum).add_(grad, alpha=1 - self.momentum)",
         "self.state[rank].mul_(1 - self.momentum).add_(grad, alpha=self.momentum)",
         aim(OPTIMIZERS, ALPHA, script)),
        (f"{script}: no gradient clip", script, clip, clip[:clip.index("g")] + "pass",
         aim(OPTIMIZERS, "test_apply_gradient_clips_to_max_norm", script)),
        (f"{script}: a non-finite gradient applied", script, f"{finite}\n        return False",
         "    if False:\n        return False", [f"{OPTIMIZERS}::test_apply_gradient_skips_non_finite_gradient"]),
        (f"{script}: the learning rate not annealed", script,
         "    return args.learning_rate * max(0.0, 1.0 - global_step / args.total_timesteps)",
         "    return args.learning_rate",
         aim(WORKER, "test_a_worker_anneals_the_learning_rate_linearly_to_zero_at_t_max", script)),
        (f"{script}: T counted once per segment", script, "shared.step_counts[rank] += len(segment.rewards)",
         "shared.step_counts[rank] += 1",
         aim(WORKER, "test_a_worker_anneals_the_learning_rate_linearly_to_zero_at_t_max", script)),
    ]


class NotRun(Exception):
    """pytest ran no test to the end: an aimed test that does not exist (exit status 4), or an error in collecting."""


def run_tests(root, tests):
    """None if the tests pass in the copy at `root`, else the first that failed."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    failed = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
    if result.returncode not in (0, 1) or (result.returncode == 1 and not failed):
        raise NotRun(f"pytest exit status {result.returncode} on {' '.join(tests)}:\n{result.stdout[-1500:]}")
    return failed[0] if failed else None


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
        try:
            failed = run_tests(root, tests)
        except NotRun as error:
            return f"NOT RUN by {error}"
        return f"killed by {failed}" if failed else "SURVIVED"


def main():
    chosen = [mutant for mutant in MUTANTS if all(word in mutant[0] for word in sys.argv[1:])]
    with tempfile.TemporaryDirectory() as root:  # the unmutated copy passes: a kill is then the mutation's
        copy_of_the_repository(root)
        try:
            failed = run_tests(root, sorted({test for *_, tests in chosen for test in tests}))
        except NotRun as error:
            sys.exit(f"mutants.py: {error}")
        if failed:
            sys.exit(f"mutants.py: {failed} fails on the unmutated code; fix it first")
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        outcomes = list(pool.map(check, chosen))
    for (name, *_), outcome in zip(chosen, outcomes, strict=True):
        print(f"{outcome.partition(' by ')[0]:>14}  {name}{'  (' + outcome + ')' if ' by ' in outcome else ''}")
    bad = sum(not outcome.startswith("killed") for outcome in outcomes)
    print(f"{len(chosen) - bad} of {len(chosen)} mutants killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
