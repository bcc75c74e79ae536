"""DP-SGD for the labeller (it is published too), the standard Opacus path.

The labeller is MONAI's DenseNet-121, whose BatchNorm layers mix samples; Opacus's
``ModuleValidator.fix`` replaces each with a ``GroupNorm(min(32, C), C)``
and turns off in-place activations (:func:`dp_compatible`), after which Opacus's
hook-based per-sample gradients are exact (no gradient penalty here, so hooks work). Then
:func:`make_labeller_private` runs ``PrivacyEngine.make_private`` with Poisson
sampling and ``wrap_model=False`` (the module keeps its class and state-dict keys),
calibrating σ to a target ε over ``epochs`` if no σ is given.

Lightning: build the module with a :func:`dp_compatible` labeller, then fit with
:class:`DPLabellerCallback` and the DP data loader it exposes::

    callback = DPLabellerCallback(dp, train_loader, epochs=max_epochs)
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[callback, ...])
    trainer.fit(module, callback.data_loader, val_loader)
    card_dp = callback.dp_parameters()          # the card's ``dp`` (ε spent, σ, C, δ)

Publishing a GroupNorm labeller needs the hub to rebuild it with GroupNorm: the
labeller's config must record the normalisation (``shared.networks.labeller``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from shared.artifacts.manifest import DPParameters, DPSegment
from shared.errors import ConfigError
from site_node.privacy.accountant import noise_multiplier_for_budget
from site_node.privacy.config import DPOptions

__all__ = ["DPLabellerCallback", "PrivateTraining", "dp_compatible", "make_labeller_private"]

log = logging.getLogger("radshare.site.privacy")


def dp_compatible(module: nn.Module) -> nn.Module:
    """``module`` with GroupNorm for BatchNorm and no in-place activations (Opacus's backward
    hooks cannot see through an in-place ReLU); ConfigError if still unsupported."""
    fixed = ModuleValidator.fix(module)
    for layer in fixed.modules():
        if getattr(layer, "inplace", False):
            layer.inplace = False
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ConfigError(f"labeller cannot be trained with DP-SGD: {errors[:3]}")
    return fixed


@dataclass
class PrivateTraining:
    """What ``make_private`` returns, with σ and the accountant's engine."""

    optimizer: Any  # opacus.optimizers.DPOptimizer
    data_loader: DataLoader
    engine: PrivacyEngine
    noise_multiplier: float
    dp: DPOptions

    def dp_parameters(self) -> DPParameters:
        """The labeller card's ``dp``: ε spent so far at δ, σ, C, the accountant and its
        history as segments (what an auditor recomputes ε from)."""
        segments = tuple(
            DPSegment(noise_multiplier=sigma, sample_rate=q, steps=steps)
            for sigma, q, steps in self.engine.accountant.history
        )
        return DPParameters(
            epsilon=float(self.engine.get_epsilon(self.dp.delta)),
            delta=self.dp.delta,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.dp.max_grad_norm,
            accountant=self.dp.accountant,
            target_epsilon=self.dp.target_epsilon,
            segments=segments,
        )


def make_labeller_private(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_loader: DataLoader,
    dp: DPOptions,
    *,
    epochs: int,
    poisson_loader: bool = False,
) -> PrivateTraining:
    """Opacus's ``make_private`` (hooks, Poisson sampling, the module left unwrapped).

    ``module`` must already be :func:`dp_compatible` and ``optimizer`` built on its
    parameters. σ is ``dp.noise_multiplier``, or calibrated to ``dp.target_epsilon``
    over ``epochs`` epochs of ``len(train_loader)`` steps at ``q = 1 / len(train_loader)``.
    ``poisson_loader``: ``train_loader`` already samples Poisson batches (a ``DPDataLoader``).
    """
    sample_rate = 1.0 / len(train_loader)
    steps = epochs * len(train_loader)
    sigma = dp.noise_multiplier
    if sigma is None:
        assert dp.target_epsilon is not None  # DPOptions requires one of the two
        sigma = noise_multiplier_for_budget(
            dp.target_epsilon, dp.delta, [(sample_rate, steps)], dp.accountant
        )
    engine = PrivacyEngine(accountant=dp.accountant)
    _, dp_optimizer, dp_loader = engine.make_private(
        module=module, optimizer=optimizer, data_loader=train_loader, noise_multiplier=sigma,
        max_grad_norm=dp.max_grad_norm, poisson_sampling=not poisson_loader,
        grad_sample_mode="hooks", wrap_model=False,
    )  # fmt: skip
    log.info(
        "DP-SGD labeller: sigma=%.4f C=%g q=%.4g, %d steps planned",
        sigma,
        dp.max_grad_norm,
        sample_rate,
        steps,
    )
    return PrivateTraining(dp_optimizer, dp_loader, engine, sigma, dp)


class DPLabellerCallback(pl.Callback):
    """Makes a Lightning labeller run private: DPOptimizer in place of its optimiser.

    Fit with :attr:`data_loader` (Poisson sampling over ``train_loader``'s dataset) as
    the train loader. The optimiser is swapped at ``on_train_start``, once Lightning
    has built it; the module's labeller must already be :func:`dp_compatible`.
    """

    def __init__(self, dp: DPOptions, train_loader: DataLoader, *, epochs: int):
        self.dp, self.epochs = dp, epochs
        self.data_loader: DataLoader = DPDataLoader.from_data_loader(train_loader)
        self.private: PrivateTraining | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise ConfigError(
                f"DP labeller training expects one optimiser, got {len(trainer.optimizers)}"
            )
        self.private = make_labeller_private(
            pl_module, trainer.optimizers[0], self.data_loader, self.dp, epochs=self.epochs,
            poisson_loader=True,
        )  # fmt: skip
        trainer.strategy.optimizers = [self.private.optimizer]

    def dp_parameters(self) -> DPParameters:
        """The card's ``dp`` after training (ConfigError before ``fit``)."""
        if self.private is None:
            raise ConfigError("DPLabellerCallback.dp_parameters: training has not started")
        return self.private.dp_parameters()
