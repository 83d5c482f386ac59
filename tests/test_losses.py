import math

import pytest
import torch

from rec_lightning.rl.losses import group_advantages, kl_k3, policy_loss


def test_group_advantages_hand_worked():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    advantages, zero = group_advantages(rewards, 4)
    # group 1: mean 0.25, centred [0.75, -0.25, -0.25, -0.25], unbiased std sqrt(0.75 / 3) = 0.5
    assert advantages[:4].tolist() == pytest.approx([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001])
    assert advantages[4:].tolist() == [0.0] * 4  # all-equal group: no signal
    assert zero.tolist() == [False, True]
    # batch scaling: std of all 8 rewards = sqrt(0.875 / 7) = 0.353553
    batch, _ = group_advantages(rewards, 4, scale="batch")
    assert batch[0].item() == pytest.approx(0.75 / (0.353553 + 1e-4), rel=1e-5)
    plain, _ = group_advantages(rewards, 4, scale="none")
    assert plain[:4].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_zero_variance_guard_with_nonzero_rewards():
    advantages, zero = group_advantages(torch.tensor([0.3, 0.3, 0.3]), 3)
    assert advantages.tolist() == [0.0, 0.0, 0.0] and zero.tolist() == [True]


def test_kl_k3_hand_worked():
    logp = torch.tensor([-1.0, -2.0])
    ref = logp + torch.tensor([0.1, 0.0])
    assert kl_k3(logp, ref).tolist() == pytest.approx([math.exp(0.1) - 0.1 - 1, 0.0], abs=1e-6)  # 0.0051709, 0


def setup():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logp, mask, torch.tensor([1.0, -1.0])


def test_on_policy_aggregations_and_gradients():
    logp, mask, adv = setup()
    out = policy_loss(logp, adv, mask, loss_type="grpo")
    assert out.loss.item() == pytest.approx(0.0)  # mean(-1, +1)
    out.loss.backward()
    # d loss / d logp: -A / (n_tokens * B) on real tokens
    assert logp.grad.flatten().tolist() == pytest.approx([-1 / 6] * 3 + [1 / 4, 1 / 4, 0.0])
    logp.grad = None
    out = policy_loss(logp, adv, mask, loss_type="dapo")
    assert out.loss.item() == pytest.approx(-0.2)  # (-1 -1 -1 +1 +1) / 5
    out.loss.backward()
    assert logp.grad.flatten().tolist() == pytest.approx([-0.2] * 3 + [0.2, 0.2, 0.0])
    out = policy_loss(logp, adv, mask, loss_type="dr_grpo", max_completion_length=4)
    assert out.loss.item() == pytest.approx(-1 / 8)  # sum -1 over 2 x 4


def test_kl_term_added_with_beta():
    logp, mask, adv = setup()
    out = policy_loss(logp, adv, mask, ref_logp=logp.detach() + 0.1, beta=0.5)
    assert out.loss.item() == pytest.approx(0.5 * (math.exp(0.1) - 0.1 - 1), rel=1e-4)  # 0.0025855
    assert out.kl.item() == pytest.approx(math.exp(0.1) - 1.1, rel=1e-4)
    with pytest.raises(ValueError, match="beta > 0 needs ref_logp"):
        policy_loss(logp, adv, mask, beta=0.1)


def test_clipping_binds_off_policy():
    logp, mask, adv = setup()
    old = logp.detach() - torch.tensor([[0.5], [-0.5]])  # ratios e^0.5 = 1.65 (A=+1), e^-0.5 = 0.61 (A=-1)
    out = policy_loss(logp, adv, mask, old_logp=old, epsilon=0.2)
    assert out.loss.item() == pytest.approx((-1.2 + 0.8) / 2)  # both clipped: -1.2 and +0.8
    assert out.clip_fraction.item() == pytest.approx(1.0)
    out.loss.backward()
    assert logp.grad.abs().sum().item() == 0.0  # clipped tokens pass no gradient


def test_gspo_sequence_ratio():
    logp, mask, adv = setup()
    old = logp.detach() - torch.tensor([[0.3], [0.0]])
    out = policy_loss(logp, adv, mask, old_logp=old, loss_type="gspo", epsilon=0.2)
    # sequence 1: ratio e^0.3 = 1.35 clipped to 1.2, A = 1 -> -1.2; sequence 2: ratio 1, A = -1 -> +1
    assert out.loss.item() == pytest.approx(-0.1)
    assert out.clip_fraction.item() == pytest.approx(0.5)
