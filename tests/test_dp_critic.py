"""Per-sample gradients of the WGAN-GP critic loss (penalty included) against a per-example loop."""

from __future__ import annotations

import pytest
import torch

from shared.errors import ConfigError
from shared.networks.generator import GeneratorConfig
from site_node.pggan.discriminator import Discriminator, DiscriminatorConfig
from site_node.pggan.losses import autograd_input_grad, critic_loss
from site_node.privacy.dp_critic import (
    active_parameter_names,
    make_dp_optimizer,
    only_trainable,
    per_sample_critic_grads,
    per_sample_norms,
    write_grad_samples,
)

CFG = GeneratorConfig(resolution_px=16, z_dim=16, fmap_base=128, fmap_max=32)


def _critic(use_minibatch_stddev: bool = False) -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(DiscriminatorConfig.mirror(CFG, use_minibatch_stddev=use_minibatch_stddev))


def _batch(n: int, res_px: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    reals = torch.rand(n, 1, res_px, res_px, generator=g) * 2 - 1
    fakes = torch.rand(n, 1, res_px, res_px, generator=g) * 2 - 1
    eps = torch.rand(n, 1, 1, 1, generator=g)
    return reals, fakes, eps


def _per_example_loop(
    D: Discriminator, reals: torch.Tensor, fakes: torch.Tensor, eps: torch.Tensor,
    res_log2: int, alpha: float,
) -> list[dict[str, torch.Tensor]]:  # fmt: skip
    """Reference: one double backward per example (torch.autograd), gradients that exist."""
    out = []
    for i in range(reals.shape[0]):
        D.zero_grad(set_to_none=True)
        one = slice(i, i + 1)
        loss = critic_loss(
            D, reals[one], fakes[one], eps[one], res_log2, alpha, input_grad=autograd_input_grad
        )
        loss.backward()
        out.append({n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None})
    D.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize(("res_log2", "alpha"), [(4, 0.3), (4, 1.0), (3, 1.0), (2, 1.0)])
def test_per_sample_grads_match_a_per_example_loop(res_log2: int, alpha: float) -> None:
    D = _critic()
    reals, fakes, eps = _batch(6, 2**res_log2)
    names = active_parameter_names(D, res_log2, alpha)
    grads, terms = per_sample_critic_grads(D, names, reals, fakes, eps, res_log2, alpha)
    reference = _per_example_loop(D, reals, fakes, eps, res_log2, alpha)

    assert set(names) == set(reference[0])  # exactly the parameters the loss reaches
    max_diff = 0.0
    for i, expected in enumerate(reference):
        for name, g in expected.items():
            torch.testing.assert_close(grads[name][i], g, rtol=1e-5, atol=1e-5)
            max_diff = max(max_diff, float((grads[name][i] - g).abs().max()))
    print(f"res 2**{res_log2} alpha {alpha}: max |per-sample - loop| = {max_diff:.2e}")
    for i in range(reals.shape[0]):
        one = slice(i, i + 1)
        expected_loss = critic_loss(D, reals[one], fakes[one], eps[one], res_log2, alpha)
        torch.testing.assert_close(terms["loss"][i], expected_loss.detach(), rtol=1e-5, atol=1e-6)


def test_mean_of_per_sample_grads_is_the_batch_gradient() -> None:
    D = _critic()
    reals, fakes, eps = _batch(5, 16, seed=3)
    names = active_parameter_names(D, 4, 0.6)
    grads, _ = per_sample_critic_grads(D, names, reals, fakes, eps, 4, 0.6)
    D.zero_grad(set_to_none=True)
    critic_loss(D, reals, fakes, eps, 4, 0.6).backward()
    for name, p in D.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name].mean(dim=0), p.grad, rtol=1e-5, atol=1e-6)
        else:
            assert p.grad is None


def test_active_parameters_follow_resolution_and_fade() -> None:
    D = _critic()
    stable, fading = active_parameter_names(D, 3, 1.0), active_parameter_names(D, 3, 0.5)
    assert any(n.startswith("from_rgb.1.") for n in stable)
    assert not any(n.startswith("from_rgb.0.") for n in stable)
    assert any(n.startswith("from_rgb.0.") for n in fading)  # the fading-out level
    assert not any(n.startswith(("blocks.1.", "from_rgb.2.")) for n in fading)


def test_dp_step_without_noise_is_the_clipped_mean_of_the_loop() -> None:
    D = _critic()
    reals, fakes, eps = _batch(4, 16, seed=5)
    names = active_parameter_names(D, 4, 1.0)
    reference = _per_example_loop(D, reals, fakes, eps, 4, 1.0)
    norms = torch.stack([torch.cat([g.flatten() for g in r.values()]).norm() for r in reference])
    max_grad_norm, expected_batch = float(norms.median()), 8  # half the samples get clipped
    before = {n: p.detach().clone() for n, p in D.named_parameters()}

    optimizer = make_dp_optimizer(
        torch.optim.SGD(D.parameters(), lr=1.0),
        noise_multiplier=0.0, max_grad_norm=max_grad_norm, expected_batch_size=expected_batch,
    )  # fmt: skip
    with only_trainable(D, names):
        grads, _ = per_sample_critic_grads(D, names, reals, fakes, eps, 4, 1.0)
        torch.testing.assert_close(per_sample_norms(grads), norms, rtol=1e-5, atol=1e-6)
        write_grad_samples(D, grads)
        optimizer.step()

    factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # Opacus's flat clipping
    for name, p in D.named_parameters():
        if name not in names:
            torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
            continue
        clipped_sum = sum(f * r[name] for f, r in zip(factors, reference, strict=True))
        expected = before[name] - clipped_sum / expected_batch
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)


def test_dp_step_noise_has_std_sigma_c_over_expected_batch() -> None:
    D = _critic()
    names = active_parameter_names(D, 4, 1.0)
    sigma, clip, expected_batch = 2.0, 0.5, 16
    before = {n: p.detach().clone() for n, p in D.named_parameters()}
    optimizer = make_dp_optimizer(
        torch.optim.SGD(D.parameters(), lr=1.0),
        noise_multiplier=sigma, max_grad_norm=clip, expected_batch_size=expected_batch,
    )  # fmt: skip
    optimizer.generator = torch.Generator().manual_seed(0)
    reals, fakes, eps = _batch(0, 16)  # an empty Poisson batch: noise only
    with only_trainable(D, names):
        grads, terms = per_sample_critic_grads(D, names, reals, fakes, eps, 4, 1.0)
        assert terms["loss"].shape == (0,)
        write_grad_samples(D, grads)
        optimizer.step()
    steps = torch.cat(
        [(before[n] - p.detach()).flatten() for n, p in D.named_parameters() if n in names]
    )
    expected_std = sigma * clip / expected_batch
    assert steps.numel() > 20_000
    torch.testing.assert_close(steps.std().item(), expected_std, rtol=0.03, atol=0)
    torch.testing.assert_close(
        steps.mean().item(), 0.0, rtol=0, atol=3 * expected_std / steps.numel() ** 0.5
    )


def test_minibatch_stddev_is_refused() -> None:
    D = _critic(use_minibatch_stddev=True)
    reals, fakes, eps = _batch(2, 16)
    with pytest.raises(ConfigError, match="minibatch"):
        per_sample_critic_grads(D, active_parameter_names(D, 4, 1.0), reals, fakes, eps, 4, 1.0)
