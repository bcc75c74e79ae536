"""Per-sample gradients of the WGAN-GP critic loss, penalty included, for Opacus's DPOptimizer.

DP-SGD clips each training image's whole contribution to the critic's gradient. The
gradient penalty reads the real image through the interpolate ``x̂ = x + ε (x̃ - x)``,
so it belongs inside each image's clipped loss::

    ℓ_i(θ) = D(x̃_i) - D(x_i) + λ (‖∇_x̂ D(x̂_i)‖₂ - 1)² + ε_drift D(x_i)²

and its per-sample gradient ``∇_θ ℓ_i`` is a gradient of a gradient. Opacus 1.6's
hook-based and functorch grad-sample modes crash on that double backward, and its
expanded-weights mode gives wrong per-sample gradients with it
(``docs/field-notes.md``). What works: ``torch.func.vmap(torch.func.grad(ℓ))`` over
``functional_call`` of the critic, with a nested ``torch.func.grad`` for the penalty
(``site_node.pggan.losses.func_input_grad``), written to each parameter's
``grad_sample``; Opacus's :class:`~opacus.optimizers.DPOptimizer` then clips to C, adds
``N(0, σ²C²)`` and divides by the expected batch size (the ``grad_sample_mode="no_op"``
recipe, without wrapping the critic).

Only the parameters the score depends on at the current resolution and fade get
per-sample gradients (:func:`active_parameter_names`); the others are left out of the
optimiser step, so no noise lands on levels not yet grown.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.func import functional_call, grad, vmap

from shared.errors import ConfigError
from site_node.pggan.discriminator import Discriminator
from site_node.pggan.losses import critic_loss_terms, func_input_grad

__all__ = [
    "active_parameter_names",
    "make_dp_optimizer",
    "only_trainable",
    "per_sample_critic_grads",
    "per_sample_norms",
    "write_grad_samples",
]


class _FunctionalCritic(nn.Module):
    """``D`` evaluated with the given parameter and buffer tensors (``functional_call``)."""

    def __init__(self, D: nn.Module, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.critic = (D,)  # a tuple: not registered as a submodule
        self.tensors = tensors

    def forward(self, images: torch.Tensor, res_log2: int, alpha: float) -> torch.Tensor:
        return functional_call(self.critic[0], self.tensors, (images, res_log2, alpha))


def active_parameter_names(D: Discriminator, res_log2: int, alpha: float) -> tuple[str, ...]:
    """Names of the critic's parameters that its score at ``(res_log2, alpha)`` depends on."""
    first = next(D.parameters())
    res_px = 2**res_log2
    x = torch.zeros(1, D.cfg.num_channels, res_px, res_px, device=first.device, dtype=first.dtype)
    names, params = zip(*D.named_parameters(), strict=True)
    with torch.enable_grad(), only_trainable(D, names):
        grads = torch.autograd.grad(D(x, res_log2, alpha).sum(), params, allow_unused=True)
    return tuple(name for name, g in zip(names, grads, strict=True) if g is not None)


@contextmanager
def only_trainable(D: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Within the block only ``names`` require grad (what DPOptimizer steps); restored after."""
    before = {name: p.requires_grad for name, p in D.named_parameters()}
    wanted = set(names)
    try:
        for name, p in D.named_parameters():
            p.requires_grad_(name in wanted)
        yield
    finally:
        for name, p in D.named_parameters():
            p.requires_grad_(before[name])


def per_sample_critic_grads(
    D: Discriminator,
    names: Sequence[str],
    reals: torch.Tensor,
    fakes: torch.Tensor,
    eps_uniform: torch.Tensor,
    res_log2: int,
    alpha: float,
    *,
    gp_lambda: float = 10.0,
    drift_epsilon: float = 1e-3,
    chunk_size: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``∇_θ ℓ_i`` for every sample ``i`` and every parameter in ``names``, and ``ℓ_i``'s terms.

    ``reals``, ``fakes``: ``[B, C, R, R]``; ``eps_uniform``: ``[B, 1, 1, 1]``. Returns
    ``({name: [B, *param.shape]}, {term: [B]})`` with the terms of
    :func:`~site_node.pggan.losses.critic_loss_terms` (``loss``, ``wasserstein``,
    ``gradient_penalty``, ``drift``, ``real_score``, ``fake_score``) per sample.
    ``chunk_size`` bounds memory (samples per vectorised chunk).

    Raises:
        ConfigError: the critic uses minibatch stddev (its score mixes samples).
    """
    if D.cfg.use_minibatch_stddev:
        raise ConfigError("a DP critic needs use_minibatch_stddev=False (it mixes samples)")
    wanted = set(names)
    params = dict(D.named_parameters())
    trainable = {name: params[name].detach() for name in names}
    fixed = {n: p.detach() for n, p in params.items() if n not in wanted}
    fixed.update(dict(D.named_buffers()))
    if reals.shape[0] == 0:
        return _empty_batch(trainable, reals)

    def loss_one(
        theta: dict[str, torch.Tensor], real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        critic = _FunctionalCritic(D, {**fixed, **theta})
        terms = critic_loss_terms(
            critic, real[None], fake[None], eps[None], res_log2, alpha,
            gp_lambda=gp_lambda, drift_epsilon=drift_epsilon, input_grad=func_input_grad,
        )  # fmt: skip
        return terms["loss"], terms

    per_sample = vmap(grad(loss_one, has_aux=True), in_dims=(None, 0, 0, 0), chunk_size=chunk_size)
    return per_sample(trainable, reals, fakes.detach(), eps_uniform)


def _empty_batch(
    trainable: dict[str, torch.Tensor], reals: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Zero-length per-sample gradients and terms (a Poisson batch may be empty)."""
    grads = {name: p.new_zeros((0, *p.shape)) for name, p in trainable.items()}
    keys = ("loss", "wasserstein", "gradient_penalty", "drift", "real_score", "fake_score")
    return grads, {key: reals.new_zeros(0) for key in keys}


def per_sample_norms(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each sample's gradient norm over all parameters, ``[B]`` (what DPOptimizer clips)."""
    per_param = [g.reshape(g.shape[0], -1).norm(dim=1) for g in grads.values()]
    return torch.stack(per_param, dim=1).norm(dim=1)


def write_grad_samples(D: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    """Set ``p.grad_sample`` (read by DPOptimizer) for the named parameters; None elsewhere."""
    for name, p in D.named_parameters():
        p.grad_sample = grads.get(name)  # type: ignore[attr-defined]


def make_dp_optimizer(
    optimizer: torch.optim.Optimizer,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: int,
) -> DPOptimizer:
    """Opacus's DPOptimizer around ``optimizer``: clip to C, add N(0, σ²C²), divide by E[B]."""
    return DPOptimizer(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
    )
