"""--optimizer in every script: Supplement 7's three lock-free optimizers, stepped by hand, run and resumed; the
gradient clip and the skipped non-finite update before them."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import a3c
from common import flatten_parameters, rmsprop_update
from conftest import MODULES, ROOT
from test_worker import run_worker



def checkpoint_size(checkpoint):
    """The number of parameters of the checkpoint's model (observation statistics are buffers, not parameters)."""
    return sum(value.numel() for key, value in checkpoint["model"].items() if "obs_norm" not in key)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_per_worker_rmsprop_keeps_one_g_per_worker_and_steps_the_shared_theta(module):
    g0, g1 = np.array([1.0, -2.0]), np.array([3.0, 0.0])
    theta = {}
    for rows in (1, 2):  # shared_rmsprop, then rmsprop with 2 workers
        params = torch.zeros(2)
        optimizer = module.SharedRMSprop(params, alpha=0.5, eps=0.1, per_worker=rows == 2, num_workers=2)
        optimizer.step(torch.tensor(g0, dtype=torch.float32), lr=0.1, rank=0)
        optimizer.step(torch.tensor(g1, dtype=torch.float32), lr=0.1, rank=1)
        theta[rows] = params.numpy().copy()
    # per worker: each row saw its own worker's gradient only, g_i = 0.5 * grad_i^2
    np.testing.assert_allclose(optimizer.state.numpy(), [0.5 * g0**2, 0.5 * g1**2], rtol=1e-6)
    np.testing.assert_allclose(theta[2], -0.1 * g0 / np.sqrt(0.5 * g0**2 + 0.1) - 0.1 * g1 / np.sqrt(0.5 * g1**2 + 0.1),
                               rtol=1e-6)
    # shared: worker 1's step divides by a g that holds worker 0's gradient too
    shared_g = 0.25 * g0**2 + 0.5 * g1**2
    np.testing.assert_allclose(theta[1], -0.1 * g0 / np.sqrt(0.5 * g0**2 + 0.1) - 0.1 * g1 / np.sqrt(shared_g + 0.1),
                               rtol=1e-6)
    assert not np.allclose(theta[1], theta[2])


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_momentum_sgd_keeps_one_momentum_per_worker(module):
    params = torch.zeros(2)
    optimizer = module.MomentumSGD(params, momentum=0.5, num_workers=2)
    assert optimizer.state.is_shared()  # so that checkpoint.pt can hold it
    grad = torch.tensor([1.0, -2.0])
    optimizer.step(grad, lr=0.1, rank=0)  # m0 = 0.5 * grad = [0.5, -1]; theta = -0.1 * m0
    torch.testing.assert_close(params, torch.tensor([-0.05, 0.1]))
    optimizer.step(grad, lr=0.1, rank=0)  # m0 = 0.5 * m0 + 0.5 * grad = [0.75, -1.5]
    torch.testing.assert_close(params, torch.tensor([-0.125, 0.25]))
    optimizer.step(grad, lr=0.1, rank=1)  # worker 1's own m1 starts at 0: m1 = [0.5, -1]
    torch.testing.assert_close(optimizer.state, torch.tensor([[0.75, -1.5], [0.5, -1.0]]))
    torch.testing.assert_close(params, torch.tensor([-0.175, 0.35]))


@pytest.mark.slow
@pytest.mark.parametrize("module, optimizer", list(zip(MODULES, ["momentum_sgd", "rmsprop"] * 2, strict=True)),
                         ids=lambda value: getattr(value, "SCRIPT", value))  # the classes: the tests above, per script
def test_a_run_keeps_each_workers_statistics_in_its_checkpoint_and_resumes_only_with_them(tmp_path, monkeypatch,
                                                                                          module, optimizer):
    def run(*flags):
        return subprocess.run([sys.executable, os.path.join(ROOT, module.SCRIPT), *flags], capture_output=True,
                              text=True, timeout=180, cwd=ROOT)

    first = run("--env-id", "CartPole-v1", "--num-workers", "2", "--total-timesteps", "600", "--optimizer", optimizer,
                "--eval-interval", "100000", "--eval-episodes", "1", "--run-dir", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state = checkpoint["optimizer_state"]
    assert checkpoint["args"]["optimizer"] == optimizer and state.shape == (2, checkpoint_size(checkpoint))
    # one row per worker (a worker still starting can leave its row at 0: the other may finish 600 steps first)
    assert torch.count_nonzero(state) > 0
    other = "shared_rmsprop" if optimizer == "momentum_sgd" else "momentum_sgd"
    for flags in (["--optimizer", other], ["--num-workers", "3"]):  # in-process: exit 2 is test_bad_input's
        monkeypatch.setattr(sys, "argv", [module.SCRIPT, "--resume", str(tmp_path / "run" / "checkpoint.pt"), *flags])
        with pytest.raises(module.UsageError, match=re.escape(f"holds {optimizer} statistics for 2 worker(s)")):
            module.main()
    resumed = run("--resume", str(tmp_path / "run" / "checkpoint.pt"), "--total-timesteps", "1200")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["global_step"] >= 1200


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_rmsprop_and_momentum_weigh_the_past_by_their_own_coefficient_not_its_complement(module):
    # with 0.5 a swap of alpha and 1 - alpha (or of momentum and 1 - momentum) would go unseen
    grad1, grad2 = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    params = torch.zeros(2)
    rmsprop = module.SharedRMSprop(params, alpha=0.9, eps=0.01)
    rmsprop.step(grad1, lr=0.1, rank=0)
    rmsprop.step(grad2, lr=0.1, rank=0)
    g1 = 0.1 * grad1**2  # g <- alpha g + (1 - alpha) grad^2, from g = 0
    g2 = 0.9 * g1 + 0.1 * grad2**2
    torch.testing.assert_close(rmsprop.state[0], g2)
    torch.testing.assert_close(params, -0.1 * grad1 / (g1 + 0.01).sqrt() - 0.1 * grad2 / (g2 + 0.01).sqrt())
    params = torch.zeros(2)
    momentum = module.MomentumSGD(params, momentum=0.9, num_workers=1)
    momentum.step(grad1, lr=0.1, rank=0)
    momentum.step(grad2, lr=0.1, rank=0)
    m1 = 0.1 * grad1  # m <- momentum m + (1 - momentum) grad
    m2 = 0.9 * m1 + 0.1 * grad2
    torch.testing.assert_close(momentum.state[0], m2)
    torch.testing.assert_close(params, -0.1 * m1 - 0.1 * m2)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
def test_apply_gradient_clips_to_max_norm(module):
    params = torch.zeros(2)
    weights = torch.nn.Parameter(torch.zeros(2))
    weights.grad = torch.zeros(2)
    optimizer = module.SharedRMSprop(params, alpha=0.0, eps=0.0)  # step = lr * grad / |grad|
    loss = (weights * torch.tensor([30.0, 40.0])).sum()  # gradient [30, 40], norm 50
    assert module.apply_gradient(loss, weights.grad, optimizer, lr=1.0, max_grad_norm=5.0, rank=0)
    # clipped to [3, 4]; RMSProp with alpha 0, eps 0 moves each coordinate by lr * sign
    torch.testing.assert_close(optimizer.state[0], torch.tensor([9.0, 16.0]), rtol=1e-4, atol=0)
    torch.testing.assert_close(params, torch.tensor([-1.0, -1.0]))


def test_a3c_clip_per_network_clips_the_policy_and_the_value_network_each_on_its_own(monkeypatch):
    params, weights = torch.zeros(4), torch.nn.Parameter(torch.zeros(4))
    weights.grad = torch.zeros(4)
    optimizer = a3c.SharedRMSprop(params, alpha=0.0, eps=0.0)  # g = the squared gradient applied
    value = torch.tensor([False, False, True, True])
    loss = (weights * torch.tensor([30.0, 40.0, 6.0, 8.0])).sum()  # parts of norm 50 and 10, 51 together
    assert a3c.apply_gradient(loss, weights.grad, optimizer, lr=1.0, max_grad_norm=5.0, rank=0, parts=(~value, value))
    torch.testing.assert_close(optimizer.state[0], torch.tensor([9.0, 16.0, 9.0, 16.0]), rtol=1e-4, atol=0)
    # The worker's parts, on a Box task: the policy's parameters (its trunk, mean and variance) and the value
    # network's, told apart here by the modules that hold them.
    model = a3c.build_model(a3c.Args(env_id="InvertedPendulum-v5"))
    _, flat = flatten_parameters(model)
    policy_grads = [p.grad for m in (model.body, model.mean, model.variance) for p in m.parameters()]
    value_grads = [p.grad for m in (model.value_body, model.value) for p in m.parameters()]
    assert sum(g.numel() for g in policy_grads + value_grads) == flat.numel()
    for per_network in (False, True):
        applied = []
        run_worker(a3c, monkeypatch, env_id="InvertedPendulum-v5", grads=applied, clip_per_network=per_network,
                   max_grad_norm=1e-4)  # below every gradient's norm, and each network's: all clipped
        assert len(applied) >= 50
        for grad in applied:
            flat.copy_(grad)
            norms = [torch.cat([g.reshape(-1) for g in part]).norm().item() for part in (policy_grads, value_grads)]
            if per_network:
                assert norms == pytest.approx([1e-4, 1e-4], rel=1e-3)
            else:
                assert np.hypot(*norms) == pytest.approx(1e-4, rel=1e-3)  # clipped each: sqrt(2) times that


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.SCRIPT)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_apply_gradient_skips_non_finite_gradient(module, bad):
    params = torch.ones(2)
    weights = torch.nn.Parameter(torch.zeros(2))
    weights.grad = torch.zeros(2)
    optimizer = module.SharedRMSprop(params)
    loss = (weights * torch.tensor([1.0, bad])).sum()
    assert not module.apply_gradient(loss, weights.grad, optimizer, lr=1.0, max_grad_norm=40.0, rank=0)
    torch.testing.assert_close(params, torch.ones(2))
    torch.testing.assert_close(optimizer.state[0], torch.zeros(2))


@pytest.mark.parametrize("alpha, eps, lr", [(0.99, 0.1, 7e-4), (0.9, 1e-8, 1e-2), (0.5, 0.01, 0.3)])
def test_rmsprop_update_computes_the_torch_ops_bit_for_bit(alpha, eps, lr):
    # The one-pass update must not change what is computed: each element rounded as the five torch ops round it.
    rng = np.random.default_rng(0)
    for size in (1, 7, 17, 1001, 100_003):  # odd sizes exercise the compiled loop's remainder after its vector lanes
        params = torch.from_numpy(rng.normal(size=size).astype(np.float32))
        square_avg = torch.zeros(size)
        expected_params, expected_square_avg = params.clone(), square_avg.clone()
        for _ in range(3):
            grad = torch.from_numpy((rng.normal(size=size) * 10.0 ** rng.integers(-6, 3, size)).astype(np.float32))
            expected_square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            expected_params.addcmul_(grad, (expected_square_avg + eps).rsqrt(), value=-lr)
            rmsprop_update(params, grad, square_avg, alpha, eps, lr)
        assert torch.equal(square_avg, expected_square_avg), size
        assert torch.equal(params, expected_params), size
