"""Batched class optimisation against a one-start reference loop; give-up rules; local sampling."""

from collections import deque

import numpy as np
import pytest
import torch
from scipy import stats

from hub.synthesis.class_optimisation import (
    BatchedClassOptimiser,
    ClassOptimisationSettings,
    ClassOptimisationStats,
    Converged,
    GaveUp,
    Start,
    make_start,
    truncated_normal,
)
from hub.synthesis.local_sampling import (
    LocalSamplingSettings,
    PatientRequest,
    acceptance_mask,
    finding_labels,
    sample_patients,
)

Z_DIM, RES = 8, 8


class ToyG(torch.nn.Module):
    """z → tanh(W z) as an 8×8 image; records every batch size it is called with."""

    def __init__(self):
        super().__init__()
        self.W = torch.nn.Parameter(
            torch.randn(RES * RES, Z_DIM, generator=torch.Generator().manual_seed(0))
        )
        self.batch_sizes = []

    def forward(self, z):
        self.batch_sizes.append(z.shape[0])
        return torch.tanh(z @ self.W.T / 2).view(-1, 1, RES, RES)


class ToyLabeller(torch.nn.Module):
    """Logit of class c = 4 × mean brightness of its own row band (c = 0..3)."""

    def forward(self, x):
        return torch.stack([4 * x[:, 0, 2 * c : 2 * c + 2].mean(dim=(1, 2)) for c in range(4)], 1)


def _reference(G, L, start, settings):
    """Algorithm 1 for one start, with torch.optim.Adam (maximize) as the independent reference."""
    z = truncated_normal(start.seed, Z_DIM, settings.truncation).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=settings.learning_rate, maximize=True)
    best, since, steps = -np.inf, 0, 0
    while True:
        logit = L(G(z[None]))[0, start.target]
        if logit.item() > best + settings.plateau_min_delta_logit:
            best, since = logit.item(), 0
        else:
            since += 1
        if logit.item() >= start.threshold_logit:
            return "converged", z.detach().clone(), logit.item(), steps
        if since >= settings.plateau_patience_steps:
            return "plateau", None, best, steps
        if steps >= settings.max_steps:
            return "step_limit", None, best, steps
        opt.zero_grad()
        logit.backward()
        opt.step()
        steps += 1


@pytest.mark.parametrize("batch_size", [1, 5, 32])
def test_batched_outcomes_equal_the_one_start_reference(batch_size):
    G, L = ToyG(), ToyLabeller()
    settings = ClassOptimisationSettings(
        batch_size=batch_size, learning_rate=0.05, max_steps=60, plateau_patience_steps=15,
        plateau_min_delta_logit=1e-3,
    )  # fmt: skip
    starts = [make_start(t, 0, t % 4, 0.2 * (t % 7) - 0.6, 7, settings) for t in range(16)]
    outcomes = {
        o.start.task: o for o in BatchedClassOptimiser(G, L, Z_DIM, settings).run(deque(starts))
    }
    assert sorted(outcomes) == list(range(16))  # each start finishes exactly once
    kinds = set()
    for start in starts:
        kind, z, logit, steps = _reference(G, L, start, settings)
        got = outcomes[start.task]
        kinds.add(kind)
        if kind == "converged":
            assert isinstance(got, Converged)
            torch.testing.assert_close(got.z, z, rtol=1e-5, atol=1e-5)
        else:
            assert isinstance(got, GaveUp) and got.reason == kind
        assert got.steps == steps
        assert (got.logit if kind == "converged" else got.best_logit) == pytest.approx(
            logit, abs=1e-5
        )
    assert "converged" in kinds and len(kinds) >= 2  # the case mix exercises both branches


def test_device_stays_full_while_starts_are_pending():
    G, L = ToyG(), ToyLabeller()
    settings = ClassOptimisationSettings(batch_size=8, max_steps=20, plateau_patience_steps=8)
    starts = deque(make_start(t, 0, t % 4, 0.3, 1, settings) for t in range(40))
    seen = []
    for outcome in BatchedClassOptimiser(G, L, Z_DIM, settings).run(starts):
        seen.append(outcome.start.task)
        if outcome.start.task == 3 and outcome.start.attempt == 0:
            starts.append(Start(3, 1, 0, 123, 0.3))  # a retry appended while running is picked up
    assert sorted(seen) == sorted([*range(40), 3])
    sizes = G.batch_sizes
    # Full batches until the queue runs dry; then the batch shrinks as slots retire.
    first_partial = next(i for i, n in enumerate(sizes) if n < 8)
    assert all(n == 8 for n in sizes[:first_partial])
    assert sizes[first_partial:] == sorted(sizes[first_partial:], reverse=True)
    assert sum(sizes[:first_partial]) > 0.8 * sum(sizes)


def test_plateau_and_step_limit_give_ups():
    G = ToyG()

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=(1, 2, 3))[:, None] * 0.0  # gradient zero: never improves

    class Slow(torch.nn.Module):
        def forward(self, x):
            return 1e-3 * x.mean(dim=(1, 2, 3))[:, None]  # improves, but can never reach 1.0

    settings = ClassOptimisationSettings(
        batch_size=4, max_steps=25, plateau_patience_steps=7, plateau_min_delta_logit=0.0
    )
    flat = list(
        BatchedClassOptimiser(G, Flat(), Z_DIM, settings).run(deque([Start(0, 0, 0, 5, 1.0)]))
    )
    assert isinstance(flat[0], GaveUp) and flat[0].reason == "plateau" and flat[0].steps == 7
    slow = list(
        BatchedClassOptimiser(G, Slow(), Z_DIM, settings).run(deque([Start(0, 0, 0, 5, 1.0)]))
    )
    assert isinstance(slow[0], GaveUp) and slow[0].reason == "step_limit" and slow[0].steps == 25
    stats_ = ClassOptimisationStats()
    stats_.record(flat[0], "A")
    stats_.record(slow[0], "A")
    assert stats_.give_up_rate("A") == 1.0 and stats_.starts("A") == 2


def test_truncated_normal_matches_scipy_truncnorm_and_is_seeded():
    z = torch.cat([truncated_normal(s, 64, 0.7) for s in range(100)]).numpy()
    assert np.abs(z).max() <= 0.7
    assert stats.kstest(z, stats.truncnorm(-0.7, 0.7).cdf).pvalue > 0.01
    torch.testing.assert_close(truncated_normal(5, 64), truncated_normal(5, 64))
    assert not torch.equal(truncated_normal(5, 64), truncated_normal(6, 64))


def test_severity_jitter_is_abs_normal_1_1_on_top_of_youden():
    settings = ClassOptimisationSettings()
    jitter = np.array([make_start(t, 0, 0, 0.5, 0, settings).threshold_logit - 0.5
                       for t in range(3000)])  # fmt: skip
    # A retry (attempt > 0) keeps its task's severity; only z0 is new.
    retry = make_start(7, 2, 0, 0.5, 0, settings)
    assert (
        retry.threshold_logit - 0.5 == jitter[7]
        and retry.seed != make_start(7, 0, 0, 0.5, 0, settings).seed
    )
    assert jitter.min() >= 0
    # E|X| for X ~ N(1, 1): sqrt(2/pi) exp(-1/2) + (1 - 2 Phi(-1)) = 1.1666.
    expected = np.sqrt(2 / np.pi) * np.exp(-0.5) + (1 - 2 * stats.norm.cdf(-1))
    assert jitter.mean() == pytest.approx(expected, abs=0.05)
    folded = stats.foldnorm(c=1.0)  # |N(1, 1)|
    assert stats.kstest(jitter, folded.cdf).pvalue > 0.01


# --- local sampling ----------------------------------------------------------------------


class EchoG(torch.nn.Module):
    """Writes 0.4 z into the first pixels of a mid-grey image (so the labeller can read z back)."""

    def forward(self, z):
        x = torch.zeros(z.shape[0], RES * RES)
        x[:, : z.shape[1]] = 0.4 * z
        return x.view(-1, 1, RES, RES)


class EchoLabeller(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :Z_DIM] / 0.4


def test_neighbours_are_centre_plus_normal_noise_and_targets_are_enforced():
    centre = torch.linspace(-0.5, 0.5, Z_DIM)
    # Unlabelled: everything kept; the neighbours spread around z* with sd sigma.
    request = PatientRequest(task=1, z_centre=centre, num_images=400, seed=3)
    (series,) = sample_patients(
        EchoG(), EchoLabeller(), [request], LocalSamplingSettings(sigma=0.2)
    )
    z = np.stack(series.logits)  # the echo labeller reads back the 8-bit-rounded latent
    assert series.num_rejected == 0 and len(series.images) == 400
    assert np.abs(z.mean(0) - centre.numpy()).max() < 0.05
    assert np.std(z - centre.numpy()) == pytest.approx(0.2, rel=0.05)
    # Targeted: class 0's logit is z_0 (centre -0.5); keep only draws with z_0 >= -0.5: ~half.
    request = PatientRequest(1, centre, num_images=50, seed=4, target=0, threshold_logit=-0.5)
    (series,) = sample_patients(EchoG(), EchoLabeller(), [request])
    kept = np.stack(series.logits)[:, 0]
    assert series.complete and (kept >= -0.5).all()
    assert series.num_drawn == len(series.images) + series.num_rejected
    assert 0.3 < series.num_rejected / series.num_drawn < 0.7
    # Unreachable: gives up after max_draws_per_image * num_images draws.
    request = PatientRequest(1, centre, num_images=4, seed=5, target=0, threshold_logit=3.0)
    (series,) = sample_patients(
        EchoG(), EchoLabeller(), [request], LocalSamplingSettings(max_draws_per_image=3)
    )
    assert not series.complete and series.num_drawn == 12 and series.num_rejected == 12


def test_finding_labels_follow_the_nih_convention():
    names = ["Mass", "Nodule", "Hernia", "No Finding"]
    youden = [0.0, 1.0, None, -1.0]
    assert finding_labels(np.array([0.5, 1.0, 9.0, 2.0]), names, youden) == "Mass|Nodule"
    assert finding_labels(np.array([-0.1, 0.9, 9.0, 2.0]), names, youden) == "No Finding"
    assert finding_labels(np.array([-0.1, 0.9, 9.0, -5.0]), names, youden) == "No Finding"
    mask = acceptance_mask(torch.tensor([[0.0, 2.0], [1.0, -1.0]]), 1, 0.5)
    assert mask.tolist() == [True, False]
    assert acceptance_mask(torch.zeros(3, 2), None, None).all()


def test_overshoot_goes_past_the_threshold_before_retiring():
    G, L = ToyG(), ToyLabeller()
    plain = ClassOptimisationSettings(batch_size=8, max_steps=200, plateau_patience_steps=50)
    over = ClassOptimisationSettings(
        batch_size=8, max_steps=200, plateau_patience_steps=50, overshoot_logit=0.3
    )
    starts = [make_start(t, 0, t % 4, -0.3, 2, plain) for t in range(8)]
    a = {o.start.task: o for o in BatchedClassOptimiser(G, L, Z_DIM, plain).run(deque(starts))}
    b = {o.start.task: o for o in BatchedClassOptimiser(G, L, Z_DIM, over).run(deque(starts))}
    both = [t for t in a if isinstance(a[t], Converged) and isinstance(b[t], Converged)]
    assert len(both) >= 4
    for t in both:
        assert b[t].logit >= starts[t].threshold_logit + 0.3 > a[t].logit - 0.3
        assert b[t].steps >= a[t].steps
