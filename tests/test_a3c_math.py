"""The math of a3c.py with hand-worked numbers: returns, the shared RMSProp step, the loss, sampling."""

import numpy as np
import pytest
import torch

from a3c import SharedRMSprop, actor_critic_loss, lambda_returns, sample_action


def test_actor_critic_loss_by_hand():
    # Two steps: log pi = (-1, -2), H = (0.5, 0.25), R = (3, 1), V = (1, 2): advantages (2, -1).
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    entropy = torch.tensor([0.5, 0.25], requires_grad=True)
    loss, policy_loss, value_loss = actor_critic_loss(log_probs, entropy, torch.tensor([3.0, 1.0]), values,
                                                      value_coef=0.5, entropy_coef=0.1)
    assert policy_loss.item() == pytest.approx(-(-1 * 2 + -2 * -1))  # -(sum log pi * A) = 0
    assert value_loss.item() == pytest.approx(2**2 + 1**2)  # 5
    assert loss.item() == pytest.approx(0 + 0.5 * 5 - 0.1 * 0.75)  # 2.425
    loss.backward()
    # The policy term sees the advantage as a constant: d/d log pi = -A; the value gets only the
    # value loss, d/dV [0.5 (R - V)^2 summed] = -(R - V); the entropy bonus lowers the loss: d/dH = -beta.
    torch.testing.assert_close(log_probs.grad, torch.tensor([-2.0, 1.0]))
    torch.testing.assert_close(values.grad, torch.tensor([-2.0, 1.0]))
    torch.testing.assert_close(entropy.grad, torch.tensor([-0.1, -0.1]))


def n_step_returns(rewards, terminated, bootstrap_value, gamma):
    """lambda 1 (Algorithm S3): the states' own values must not matter, so they are set to nonsense."""
    return lambda_returns(rewards, terminated, [-1e3] * len(rewards) + [bootstrap_value], gamma, 1.0)


def test_n_step_returns_terminal_uses_zero():
    # R = 0; R = 3 + 0.5*0 = 3; R = 2 + 0.5*3 = 3.5; R = 1 + 0.5*3.5 = 2.75
    returns = n_step_returns([1.0, 2.0, 3.0], terminated=True, bootstrap_value=100.0, gamma=0.5)
    np.testing.assert_allclose(returns, [2.75, 3.5, 3.0])


def test_n_step_returns_cut_segment_bootstraps_from_value():
    # R = V = 8; R = 3 + 0.5*8 = 7; R = 2 + 3.5 = 5.5; R = 1 + 2.75 = 3.75
    returns = n_step_returns([1.0, 2.0, 3.0], terminated=False, bootstrap_value=8.0, gamma=0.5)
    np.testing.assert_allclose(returns, [3.75, 5.5, 7.0])


def test_n_step_returns_truncation_is_not_termination():
    # A time-limit truncation passes terminated=False: the value of the last state counts.
    truncated = n_step_returns([0.0, 1.0], terminated=False, bootstrap_value=10.0, gamma=0.9)
    terminal = n_step_returns([0.0, 1.0], terminated=True, bootstrap_value=10.0, gamma=0.9)
    np.testing.assert_allclose(truncated, [0.9 * (1 + 9.0), 1 + 9.0], rtol=1e-6)
    np.testing.assert_allclose(terminal, [0.9, 1.0], rtol=1e-6)


@pytest.mark.parametrize("terminated", [False, True])
def test_lambda_returns_minus_values_are_the_generalised_advantages(terminated):
    # rewards (1, 2, 3), V(s_0..s_3) = (4, 5, 6, 8), gamma 0.5, lambda 0.5: TD errors
    # delta_i = r_i + 0.5 V(s_i+1) - V(s_i), with V(s_3) = 0 at a terminal state: (-0.5, 0, 1) or (-0.5, 0, -3);
    # the advantages A_i = delta_i + 0.25 A_i+1 backwards: A_2 = delta_2, A_1 = 0.25 A_2, A_0 = -0.5 + 0.25 A_1.
    delta_2 = -3.0 if terminated else 1.0
    advantages = np.array([-0.5 + 0.0625 * delta_2, 0.25 * delta_2, delta_2])
    returns = lambda_returns([1.0, 2.0, 3.0], terminated, [4.0, 5.0, 6.0, 8.0], gamma=0.5, lam=0.5)
    np.testing.assert_allclose(returns - np.array([4.0, 5.0, 6.0]), advantages, rtol=1e-6)
    # lambda 0 is the one-step TD target r_i + gamma V(s_i+1)
    np.testing.assert_allclose(lambda_returns([1.0, 2.0, 3.0], terminated, [4.0, 5.0, 6.0, 8.0], 0.5, 0.0),
                               [3.5, 5.0, 3.0 if terminated else 7.0], rtol=1e-6)


def test_shared_rmsprop_step_matches_hand_computation():
    params = torch.tensor([1.0, -2.0, 0.5])
    optimizer = SharedRMSprop(params, alpha=0.9, eps=0.1)
    assert optimizer.state.is_shared()
    grad = torch.tensor([2.0, 0.0, -1.0])
    optimizer.step(grad, lr=0.01, rank=0)
    # g = 0.1 * grad^2 = [0.4, 0, 0.1]; theta -= 0.01 * grad / sqrt(g + 0.1)
    np.testing.assert_allclose(optimizer.state[0], [0.4, 0.0, 0.1], rtol=1e-6)
    expected = [1.0 - 0.01 * 2 / np.sqrt(0.5), -2.0, 0.5 + 0.01 * 1 / np.sqrt(0.2)]
    np.testing.assert_allclose(params, expected, rtol=1e-6)
    optimizer.step(grad, lr=0.01, rank=0)  # second step: g = 0.9 * g + 0.1 * grad^2
    np.testing.assert_allclose(optimizer.state[0], [0.76, 0.0, 0.19], rtol=1e-6)
    np.testing.assert_allclose(params[0], expected[0] - 0.01 * 2 / np.sqrt(0.86), rtol=1e-6)


def test_sampled_actions_follow_the_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.cat([sample_action(logits, False, generator=generator) for _ in range(20000)]),
                            minlength=4)
    np.testing.assert_allclose(counts.numpy() / 20000, logits.softmax(-1)[0].numpy(), atol=0.01)
    assert sample_action(logits, False, greedy=True).item() == 0
