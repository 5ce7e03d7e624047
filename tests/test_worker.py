"""worker() of each script, run in this process for a few hundred CartPole steps, with its optimizer and its
segment loss watched: the learning rate it applies at each update, and the rewards its loss sees."""

import types

import pytest
import torch.multiprocessing as mp

import a3c
from conftest import MODULES, VALUE_BASED
from test_segments import Outbox


def run_worker(module, monkeypatch, rank=0, env_id="CartPole-v1", grads=None, **overrides):
    """worker(rank, ...) of `module`, of rank + 1 workers, to T_max = 300 steps; returns [(global step, lr) at each
    update] and the rewards of each segment its loss was computed on; appends each gradient applied to `grads`."""
    args = module.Args(env_id=env_id, num_workers=rank + 1, total_timesteps=300, learning_rate=0.01, **overrides)
    shared = module.Shared(module.build_model(args), args, mp.get_context("spawn"))
    updates, rewards, step, segment_loss = [], [], shared.optimizer.step, module.segment_loss

    def recording_step(grad, lr, rank):
        updates.append((shared.global_step(), lr))
        if grads is not None:
            grads.append(grad.clone())
        step(grad, lr, rank)

    def recording_loss(model, *others):  # a3c.py's (model, segment, args); the others' (model, target, segment, gamma)
        rewards.append(list((others[0] if module is a3c else others[1]).rewards))
        return segment_loss(model, *others)

    monkeypatch.setattr(shared.optimizer, "step", recording_step)
    monkeypatch.setattr(module, "segment_loss", recording_loss)
    monkeypatch.setattr(mp, "parent_process", lambda: types.SimpleNamespace(is_alive=lambda: True))  # "the main"
    module.worker(rank, 1, args, shared, Outbox())
    return updates, rewards


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_a_worker_anneals_the_learning_rate_linearly_to_zero_at_t_max(module, monkeypatch):
    updates, rewards = run_worker(module, monkeypatch)
    assert len(updates) == len(rewards) and updates[-1][0] >= 300  # one update per segment, to T_max
    assert updates[-1][0] == sum(map(len, rewards))  # T <- T + 1 for every step played
    for global_step, lr in updates:  # lr * (1 - T / T_max) at the T the update was counted at
        assert lr == pytest.approx(0.01 * max(0.0, 1 - global_step / 300), rel=1e-9)
    assert updates[0][1] > 0.0098 and updates[-1][1] == 0.0


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_a_worker_trains_on_normalised_rewards_with_normalize_reward(module, monkeypatch, normalize):
    _, rewards = run_worker(module, monkeypatch, normalize_reward=normalize)
    seen = [reward for segment in rewards for reward in segment]
    if not normalize:
        assert set(seen) == {1.0}  # CartPole's reward, as the env gives it
    else:  # divided by a running std of the discounted return, which grows past 1 within an episode
        assert all(0.0 < reward < 1.0 for reward in seen[20:]) and len(set(seen)) > 10


@pytest.mark.parametrize("module", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_worker_0_alone_refreshes_the_target_network(module, monkeypatch):
    # One writer, so that target_step needs no lock that a killed worker could keep (refresh_target).
    checked = []  # the global steps at which a worker checked for a due refresh
    monkeypatch.setattr(module, "refresh_target", lambda *target_and_steps: checked.append(target_and_steps[3]))
    run_worker(module, monkeypatch, rank=1)
    assert checked == []
    updates, _ = run_worker(module, monkeypatch, rank=0)
    assert checked == [step for step, _ in updates]  # after each of its updates


@pytest.mark.parametrize("module", VALUE_BASED, ids=lambda m: m.SCRIPT)
def test_a_worker_anneals_epsilon_to_its_own_final_value(module, monkeypatch):
    finals, epsilon_at = [], module.epsilon_at  # the final epsilon of each segment's schedule
    monkeypatch.setattr(module, "epsilon_at", lambda step, final, steps: finals.append(final) or epsilon_at(
        step, final, steps))
    run_worker(module, monkeypatch, rank=1)
    assert set(finals) == {0.5}  # the second of 2 workers: the upper quantile of the paper's distribution
    finals.clear()
    run_worker(module, monkeypatch, rank=1, epsilon_finals=(0.2, 0.3, 0.4))
    assert set(finals) == {0.3}  # --epsilon-finals 0.2 0.3 0.4: worker 1 takes the second
