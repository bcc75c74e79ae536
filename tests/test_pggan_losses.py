"""WGAN-GP critic loss against finite differences; per-sample gradients under vmap for DP."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad, vmap

from shared.networks.generator import GeneratorConfig
from site_node.pggan.discriminator import Discriminator, DiscriminatorConfig
from site_node.pggan.losses import (
    autograd_input_grad,
    critic_loss,
    critic_loss_terms,
    func_input_grad,
    generator_loss,
    gradient_penalty,
)

CFG = GeneratorConfig(resolution_px=8, z_dim=8, fmap_base=32, fmap_max=8)


def _critic(use_minibatch_stddev: bool = True) -> Discriminator:
    torch.manual_seed(0)
    cfg = DiscriminatorConfig.mirror(CFG, use_minibatch_stddev=use_minibatch_stddev)
    return Discriminator(cfg).double()


def _finite_difference_grad(score_sum, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """d score_sum(x) / dx by central differences, one pixel at a time (no autograd)."""
    grad_fd = torch.zeros_like(x)
    flat, out = x.reshape(-1), grad_fd.reshape(-1)
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        out[i] = (score_sum(plus.view_as(x)) - score_sum(minus.view_as(x))) / (2 * h)
    return grad_fd


def _inputs(n: int = 4, res_px: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    real = torch.rand(n, 1, res_px, res_px, generator=g, dtype=torch.float64) * 2 - 1
    fake = torch.rand(n, 1, res_px, res_px, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.rand(n, 1, 1, 1, generator=g, dtype=torch.float64)
    return real, fake, eps


@pytest.mark.parametrize(("res_log2", "alpha"), [(3, 0.4), (3, 1.0), (2, 1.0)])
def test_critic_loss_matches_finite_differences(res_log2: int, alpha: float) -> None:
    D = _critic()
    real, fake, eps = _inputs(res_px=2**res_log2)
    with torch.no_grad():
        mixed = real + eps * (fake - real)
        grad_fd = _finite_difference_grad(lambda x: D(x, res_log2, alpha).sum(), mixed)
        penalty = ((grad_fd.flatten(1).norm(dim=1) - 1) ** 2).mean()
        real_scores, fake_scores = D(real, res_log2, alpha), D(fake, res_log2, alpha)
        expected = (
            fake_scores.mean() - real_scores.mean() + 10 * penalty + 1e-3 * (real_scores**2).mean()
        )
    terms = critic_loss_terms(D, real, fake, eps, res_log2, alpha)
    torch.testing.assert_close(terms["gradient_penalty"], penalty, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(terms["loss"], expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(
        critic_loss(D, real, fake, eps, res_log2, alpha), expected, rtol=1e-6, atol=1e-8
    )


def test_generator_loss_is_minus_mean_fake_score() -> None:
    D = _critic()
    _, fake, _ = _inputs()
    with torch.no_grad():
        expected = -D(fake, 3, 0.7).mean()
    torch.testing.assert_close(generator_loss(D, fake, 3, 0.7), expected)


def test_functorch_input_grad_gives_the_same_penalty_gradients() -> None:
    D = _critic()
    real, fake, eps = _inputs()
    grads = []
    for input_grad in (autograd_input_grad, func_input_grad):
        D.zero_grad(set_to_none=True)
        critic_loss(D, real, fake, eps, 3, 0.5, input_grad=input_grad).backward()
        grads.append([p.grad.clone() for p in D.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 0
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_per_sample_gradients_under_vmap_match_a_loop() -> None:
    """The DP contract: critic_loss is a pure function that vmap(grad(...)) can take apart."""
    D = _critic(use_minibatch_stddev=False)
    real, fake, eps = _inputs(n=5)
    params = {name: p.detach() for name, p in D.named_parameters()}

    def loss_one(p, r, f, e):
        def D_fn(x, res_log2, alpha):
            return functional_call(D, p, (x, res_log2, alpha))

        return critic_loss(D_fn, r[None], f[None], e[None], 3, 0.5, input_grad=func_input_grad)

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0, 0))(params, real, fake, eps)
    for i in range(5):
        D.zero_grad(set_to_none=True)
        critic_loss(D, real[i : i + 1], fake[i : i + 1], eps[i : i + 1], 3, 0.5).backward()
        for name, p in D.named_parameters():
            expected = p.grad if p.grad is not None else torch.zeros_like(p)
            torch.testing.assert_close(per_sample[name][i], expected, rtol=1e-9, atol=1e-12)


def test_gradient_penalty_of_a_linear_critic_is_known() -> None:
    """A critic D(x) = <w, x> has grad w everywhere: penalty (||w|| - 1)^2 per sample."""
    w = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    real, fake, eps = (t[:, :, :4, :4] for t in _inputs())
    penalty = gradient_penalty(lambda x: (x * w).sum(dim=(1, 2, 3)), real, fake, eps)
    torch.testing.assert_close(penalty, ((w.norm() - 1) ** 2).expand(4), rtol=1e-9, atol=1e-12)
