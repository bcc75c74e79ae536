"""Differential privacy at the site: DP-SGD for the PGGAN critic and the labeller, and audits.

Submodules (import them directly; this package stays import-light, so that
``site_node.pggan.options`` can use :mod:`.config` without pulling in Opacus):

* :mod:`.config` — :class:`~site_node.privacy.config.DPOptions`, the ``dp`` section of the
  training options.
* :mod:`.accountant` — ε from ``(noise multiplier, sample rate, steps)`` segments with
  Opacus's PRV or RDP accountant; the noise multiplier for a target ε; the step budget.
* :mod:`.dp_critic` — per-sample gradients of the WGAN-GP critic loss (penalty included)
  with ``torch.func``, written to ``p.grad_sample`` for Opacus's ``DPOptimizer``.
* :mod:`.dp_module` — :class:`~site_node.privacy.dp_module.DPPGGANModule`, the PGGAN
  LightningModule with a DP critic step and Poisson sampling.
* :mod:`.dp_labeller` — the standard Opacus path for the labeller.
* :mod:`.membership` — the membership-inference audit of a published generator.
"""

__all__ = ["accountant", "config", "dp_critic", "dp_labeller", "dp_module", "membership"]
