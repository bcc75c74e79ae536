"""WGAN-GP losses with Karras et al.'s drift term, written as pure functions of the critic.

Critic (Gulrajani et al. 2017; Karras et al. 2018, appendix A.1)::

    L_D = E[D(fake)] - E[D(real)]
          + lambda * E[(||grad_x D(x_hat)||_2 - 1)^2]      x_hat = real + eps * (fake - real)
          + epsilon_drift * E[D(real)^2]                    eps ~ U[0, 1] per sample

Generator: ``L_G = -E[D(fake)]``.

``critic_loss`` reads only its arguments (no globals, no RNG: ``eps_uniform`` is passed
in), so the DP path can evaluate it per sample under ``torch.func.vmap(torch.func.grad(...))``
over ``functional_call(D, params, ...)``: pass ``input_grad=func_input_grad`` there (a
nested ``torch.func.grad``), since ``torch.autograd.grad`` on a ``requires_grad_`` input is
not allowed inside functorch transforms. Both give the same penalty gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "autograd_input_grad",
    "critic_loss",
    "critic_loss_terms",
    "func_input_grad",
    "generator_loss",
    "gradient_penalty",
]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
InputGrad = Callable[[ScoreFn, torch.Tensor], torch.Tensor]


def _full_precision(t: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16 tensors (autocast); float32/float64 unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def autograd_input_grad(score_fn: ScoreFn, x: torch.Tensor) -> torch.Tensor:
    """``d sum(score_fn(x)) / dx`` with ``torch.autograd.grad(create_graph=True)``."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(score_fn(x).sum(), x, create_graph=True)
    return grad


def func_input_grad(score_fn: ScoreFn, x: torch.Tensor) -> torch.Tensor:
    """The same gradient with ``torch.func.grad``; usable inside ``vmap``/``grad`` transforms."""
    return torch.func.grad(lambda inputs: score_fn(inputs).sum())(x)


def gradient_penalty(
    score_fn: ScoreFn,
    real: torch.Tensor,
    fake: torch.Tensor,
    eps_uniform: torch.Tensor,
    *,
    input_grad: InputGrad = autograd_input_grad,
) -> torch.Tensor:
    """Per-sample ``(||grad D(x_hat)||_2 - 1)^2``, ``[N]``; ``eps_uniform`` is ``[N, 1, 1, 1]``."""
    mixed = real + (fake - real) * eps_uniform
    grad = _full_precision(input_grad(score_fn, mixed))
    norm = grad.square().sum(dim=(1, 2, 3)).add(1e-12).sqrt()  # 1e-12: finite grad at 0
    return (norm - 1.0).square()


def critic_loss_terms(
    D: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    eps_uniform: torch.Tensor,
    res_log2: int,
    alpha: float,
    *,
    gp_lambda: float = 10.0,
    drift_epsilon: float = 1e-3,
    input_grad: InputGrad = autograd_input_grad,
) -> dict[str, torch.Tensor]:
    """Batch means of every term of ``L_D`` and their weighted sum under ``"loss"``."""

    def score_fn(images: torch.Tensor) -> torch.Tensor:
        return _full_precision(D(images, res_log2, alpha))

    real_scores, fake_scores = score_fn(real), score_fn(fake.detach())
    penalty = gradient_penalty(score_fn, real, fake.detach(), eps_uniform, input_grad=input_grad)
    terms = {
        "wasserstein": fake_scores.mean() - real_scores.mean(),
        "gradient_penalty": penalty.mean(),
        "drift": real_scores.square().mean(),
        "real_score": real_scores.mean(),
        "fake_score": fake_scores.mean(),
    }
    terms["loss"] = (
        terms["wasserstein"]
        + gp_lambda * terms["gradient_penalty"]
        + drift_epsilon * terms["drift"]
    )
    return terms


def critic_loss(
    D: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    eps_uniform: torch.Tensor,
    res_log2: int,
    alpha: float,
    *,
    gp_lambda: float = 10.0,
    drift_epsilon: float = 1e-3,
    input_grad: InputGrad = autograd_input_grad,
) -> torch.Tensor:
    """Scalar ``L_D`` (see the module docstring); a pure function of its arguments."""
    return critic_loss_terms(
        D,
        real,
        fake,
        eps_uniform,
        res_log2,
        alpha,
        gp_lambda=gp_lambda,
        drift_epsilon=drift_epsilon,
        input_grad=input_grad,
    )["loss"]


def generator_loss(D: nn.Module, fake: torch.Tensor, res_log2: int, alpha: float) -> torch.Tensor:
    """``L_G = -E[D(fake)]``."""
    return -_full_precision(D(fake, res_log2, alpha)).mean()
