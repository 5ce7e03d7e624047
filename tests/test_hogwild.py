"""Hogwild plumbing with real processes: a child's update must land in the parent's shared memory."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import a3c
from common import flatten_parameters, make_env
from conftest import MODULES

CTX = mp.get_context("spawn")


def test_worker_process_updates_parents_shared_parameters_and_statistics():
    args = dataclasses.replace(a3c.Args(), env_id="CartPole-v1", hidden_sizes=(8,), total_timesteps=20,
                               normalize_obs=True, entropy_coef=0.01)
    env = make_env("CartPole-v1", training=True)
    model = a3c.ActorCritic(env.observation_space, env.action_space, args)
    shared = a3c.Shared(model, dataclasses.replace(args, num_workers=1), CTX)  # what Hogwild shares, in one object
    params, optimizer, obs_moments, step_counts = (shared.params, shared.optimizer, shared.obs_moments,
                                                   shared.step_counts)
    before = params.clone()
    _, messages = CTX.Pipe(False)
    child = CTX.Process(target=a3c.worker, args=(0, 1, args, shared, messages))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert len(step_counts) == 1 and step_counts[0] >= 20  # the worker counted its steps in its own slot
    assert not torch.equal(params, before)  # theta moved in the parent's memory
    assert torch.count_nonzero(optimizer.state) > 0.9 * params.numel()  # so did the shared g
    # and so did the observation statistics: one count per training observation, on top of the prior one
    assert torch.all(obs_moments[0] == 1 + step_counts[0]) and torch.count_nonzero(obs_moments[1]) == 4
    # the parent's nn.Module sees it too: its parameters are views into the shared buffer
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in model.parameters()]), params)


def two_updates(params, optimizer, first, second):
    """Child process: a local copy of the model applies two different gradients, one after the other."""
    local = torch.nn.Linear(3, 1)
    local_params, grads = flatten_parameters(local)
    for inputs in (first, second):
        local_params.copy_(params)  # sync theta' <- theta
        loss = local(inputs).sum()  # d loss / d theta = [inputs, 1]
        assert a3c.apply_gradient(loss, grads, optimizer, lr=0.1, max_grad_norm=1e9, rank=0)


def test_consecutive_updates_apply_their_own_gradient_not_a_stale_or_summed_one():
    model = torch.nn.Linear(3, 1)
    params, _ = flatten_parameters(model)
    params.zero_()
    params.share_memory_()
    optimizer = a3c.SharedRMSprop(params, alpha=0.5, eps=0.1)
    first, second = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[-4.0, 0.0, 1.0]])
    child = CTX.Process(target=two_updates, args=(params, optimizer, first, second))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    g1, g2 = np.array([1.0, 2.0, 3.0, 1.0]), np.array([-4.0, 0.0, 1.0, 1.0])
    square_avg1 = 0.5 * g1**2
    theta1 = -0.1 * g1 / np.sqrt(square_avg1 + 0.1)
    square_avg2 = 0.5 * square_avg1 + 0.5 * g2**2
    theta2 = theta1 - 0.1 * g2 / np.sqrt(square_avg2 + 0.1)
    np.testing.assert_allclose(optimizer.state[0].numpy(), square_avg2, rtol=1e-5)
    np.testing.assert_allclose(params.numpy(), theta2, rtol=1e-5)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_what_the_processes_share_holds_no_lock_a_killed_worker_could_keep(module):
    # A worker SIGKILLed while holding a lock (a synchronized Value's, even for a read) would leave the others and
    # the main process waiting for it forever; tests/test_reliability.py kills workers at random moments.
    args = module.Args(env_id="CartPole-v1", num_workers=2)
    shared = module.Shared(module.build_model(args), args, CTX)
    shared_objects = {**vars(shared), **{f"optimizer.{name}": value for name, value in vars(shared.optimizer).items()}}
    assert [name for name, value in shared_objects.items() if hasattr(value, "get_lock")] == []
