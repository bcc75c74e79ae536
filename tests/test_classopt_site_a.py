"""Class optimisation on a small PGGAN and a labeller, both trained on real site-A radiographs.

The generator is the PGGAN trainer's ``tiny`` profile (32 px, CPU); the labeller is the
DenseNet-121 of ``test_labeller_site_a.py`` (built once per session, shared).
"""

from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_cache import built_once
from test_labeller_site_a import site_a_labeller, site_cache

from hub.synthesis.class_optimisation import (
    BatchedClassOptimiser,
    ClassOptimisationSettings,
    Converged,
    make_start,
    truncated_normal,
)
from hub.synthesis.local_sampling import quantise
from hub.synthesis.pipeline import usable_thresholds
from hub.synthesis.sources import check_compatible, resolve_generator, resolve_labeller
from site_node.pggan.train import train_tiny

pytestmark = pytest.mark.realdata

STARTS_PER_CLASS = 8


def site_a_generator(tmp_path_factory, site_a: Path, site: str = "a") -> Path:
    """A tiny PGGAN (32 px, 7 kimg) trained on site A (or ``site``, folder ``site_a``);
    returns its run folder (once per session)."""
    cache = site_cache(tmp_path_factory, site_a, site)
    with built_once(tmp_path_factory, f"site-{site}-pggan-32") as run:
        if not (run / "export" / "generator.json").is_file():
            train_tiny(cache, run, progress_bar=False, kimg_per_phase=1.0)  # 7 kimg, about 1 min
    return run


@pytest.fixture(scope="module")
def optimised(tmp_path_factory, site_a):
    generator = resolve_generator(
        str(site_a_generator(tmp_path_factory, site_a)), trust_local_export=True
    )
    labeller = resolve_labeller(
        str(site_a_labeller(tmp_path_factory, site_a)), trust_local_export=True
    )
    check_compatible(generator, labeller)
    settings = ClassOptimisationSettings(batch_size=128, max_steps=100, plateau_patience_steps=30)
    # The classes synthesis may target: a threshold and a validation AUC above chance.
    thresholds = usable_thresholds(labeller.card, min_val_auc=0.5)
    starts = [
        make_start(c * STARTS_PER_CLASS + k, 0, c, threshold, base_seed=11, settings=settings)
        for c, threshold in enumerate(thresholds) if threshold is not None
        for k in range(STARTS_PER_CLASS)
    ]  # fmt: skip
    optimiser = BatchedClassOptimiser(
        generator.G, labeller.labeller, generator.config.z_dim, settings
    )
    outcomes = list(optimiser.run(deque(starts)))
    return generator, labeller, starts, outcomes


@torch.no_grad()
def _logits(generator, labeller, z):
    return labeller.labeller(quantise(generator.G(z))).numpy()


def test_optimisation_lifts_most_starts_to_their_threshold(optimised):
    generator, labeller, starts, outcomes = optimised
    names = labeller.card.labeller_config.class_names
    assert sorted(o.start.task for o in outcomes) == sorted(s.task for s in starts)
    converged = [o for o in outcomes if isinstance(o, Converged)]
    # Independent check: a fresh forward pass of each z* reaches its T_c.
    with torch.no_grad():
        z_star = torch.stack([o.z for o in converged])
        logits = labeller.labeller(generator.G(z_star)).numpy()
    for o, row in zip(converged, logits, strict=True):
        assert row[o.start.target] >= o.start.threshold_logit - 1e-4
    # Before optimisation: how many of the very same starts already reach T_c.
    z0 = torch.stack([truncated_normal(s.seed, generator.config.z_dim) for s in starts])
    initial = _logits(generator, labeller, z0)
    already = np.mean([initial[i, s.target] >= s.threshold_logit for i, s in enumerate(starts)])
    success = len(converged) / len(outcomes)
    print(f"\n{'target class':20s} converged  plateau  step-limit   (of {STARTS_PER_CLASS} starts)")
    for c in sorted({s.target for s in starts}):
        mine = [o for o in outcomes if o.start.target == c]
        counts = [sum(getattr(o, "reason", "converged") == r for o in mine)
                  for r in ("converged", "plateau", "step_limit")]  # fmt: skip
        print(f"{names[c]:20s} {counts[0]:9d} {counts[1]:8d} {counts[2]:11d}")
    print(f"success {success:.0%} after optimisation vs {already:.0%} of the same starts before")
    assert success >= 0.5, f"only {success:.0%} of starts converged"
    assert success >= already + 0.25


def test_optimised_images_score_higher_than_unoptimised_samples_for_every_class(optimised):
    generator, labeller, _, outcomes = optimised
    names = labeller.card.labeller_config.class_names
    z_random = torch.stack(
        [truncated_normal(10_000 + i, generator.config.z_dim) for i in range(256)]
    )
    baseline = 1 / (1 + np.exp(-_logits(generator, labeller, z_random)))  # probabilities
    converged = [o for o in outcomes if isinstance(o, Converged)]
    targets = sorted({o.start.target for o in converged})
    assert len(targets) >= 0.5 * len({o.start.target for o in outcomes})
    print(f"\n{'target class':20s} optimised  unoptimised  (mean labeller probability)")
    for c in targets:
        z = torch.stack([o.z for o in converged if o.start.target == c])
        score = 1 / (1 + np.exp(-_logits(generator, labeller, z)[:, c]))
        print(f"{names[c]:20s} {score.mean():9.3f} {baseline[:, c].mean():12.3f}")
        assert score.mean() > baseline[:, c].mean(), names[c]
