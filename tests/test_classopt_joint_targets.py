"""Joint target label vectors, No Finding exclusivity, and severity retries without bias."""

from collections import deque
from itertools import product

import numpy as np
import pytest
import torch
from scipy import optimize, stats

from hub.synthesis.class_optimisation import (
    BatchedClassOptimiser,
    ClassOptimisationSettings,
    Converged,
    make_start,
)
from hub.synthesis.joint_labels import fit_joint_model, plan_label_vectors, site_prevalence
from hub.synthesis.local_sampling import acceptance_mask
from hub.synthesis.prevalence import cluster_bootstrap_ci
from shared.errors import ConfigError

FINDINGS = ("Atelectasis", "Effusion", "Infiltration", "Mass", "Nodule")
# Site-A-like: No Finding 0.49; findings add up to 0.66 > 1 - 0.49 (co-occurrence needed).
PREVALENCE = {"Atelectasis": 0.09, "Effusion": 0.19, "Infiltration": 0.18, "Mass": 0.12,
              "Nodule": 0.08, "No Finding": 0.49}  # fmt: skip


def _brute_force(model):
    """Pattern probabilities by enumerating {0,1}^K with itertools (independent of numpy code)."""
    pi = model.finding_probs
    table = {}
    for bits in product((0, 1), repeat=len(pi)):
        w = np.prod([p if b else 1 - p for p, b in zip(pi, bits, strict=True)])
        table[bits] = 0.0 if not any(bits) else w
    total = sum(table.values())
    return {
        b: (model.p_no_finding if not any(b) else (1 - model.p_no_finding) * w / total)
        for b, w in table.items()
    }


def test_joint_model_meets_every_marginal_and_no_finding_exactly():
    model = fit_joint_model(PREVALENCE, FINDINGS)
    law = _brute_force(model)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-12)
    for k, name in enumerate(FINDINGS):
        assert sum(p for b, p in law.items() if b[k]) == pytest.approx(PREVALENCE[name], abs=1e-9)
    assert law[(0,) * len(FINDINGS)] == pytest.approx(PREVALENCE["No Finding"], abs=1e-12)
    assert not model.exclusive and model.note == ""


def test_joint_model_is_the_maximum_entropy_law_scipy_finds():
    # Dual of max H(p) s.t. E[y_k] = m_k, P(y = 0) = p0: min log Z(θ) - θ·m - θ0 p0.
    findings = FINDINGS[:4]
    m = np.array([PREVALENCE[f] for f in findings]) * 1.5
    p0 = 0.45
    ys = np.array(list(product((0, 1), repeat=4)), dtype=float)
    zero = (ys.sum(1) == 0).astype(float)

    def dual(theta):
        energy = ys @ theta[:4] + theta[4] * zero
        return np.log(np.exp(energy).sum()) - theta[:4] @ m - theta[4] * p0

    theta = optimize.minimize(dual, np.zeros(5), method="BFGS", options={"gtol": 1e-12}).x
    energy = ys @ theta[:4] + theta[4] * zero
    reference = np.exp(energy) / np.exp(energy).sum()
    model = fit_joint_model({**dict(zip(findings, m, strict=True)), "No Finding": p0}, findings)
    vectors, probs = model.patterns()
    order = [int("".join(map(str, v)), 2) for v in vectors]  # same binary order as ys
    np.testing.assert_allclose(probs, reference[order], atol=1e-6)


def test_planned_vectors_match_exact_expected_frequencies():
    model = fit_joint_model(PREVALENCE, FINDINGS)
    law = _brute_force(model)
    n = 4000
    vectors = plan_label_vectors(n, model, seed=5)
    counts = {b: 0 for b in law}
    for v in vectors:
        counts[tuple(int(f in v) for f in FINDINGS)] += 1
    expected = np.array([law[b] * n for b in counts])
    observed = np.array(list(counts.values()))
    # Systematic sampling: every pattern gets floor or ceil of its expected count.
    assert np.all(np.abs(observed - expected) < 1.0 + 1e-9)
    keep = expected >= 5  # chi-square against exact frequencies (pooled tail)
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 0.5
    # Another seed plans another order and offset, with the same law.
    assert plan_label_vectors(n, model, seed=6) != vectors


def test_no_finding_is_exclusive_in_every_planned_vector():
    model = fit_joint_model(PREVALENCE, FINDINGS)
    vectors = plan_label_vectors(3000, model, seed=1)
    for v in vectors:
        assert v == ("No Finding",) or (len(v) >= 1 and "No Finding" not in v)
    share = np.mean([v == ("No Finding",) for v in vectors])
    assert share == pytest.approx(PREVALENCE["No Finding"], abs=1 / 3000 + 1e-9)


def test_too_rare_callable_findings_fall_back_to_one_finding_each_and_say_so():
    low = {"Mass": 0.1, "Nodule": 0.05, "No Finding": 0.5}  # 0.15 < 1 - 0.5
    model = fit_joint_model(low, ("Mass", "Nodule"))
    assert model.exclusive and "0.150" in model.note
    assert model.marginals() == pytest.approx({"Mass": 0.1, "Nodule": 0.05, "No Finding": 0.85})
    with pytest.raises(ConfigError, match=r"'Mass' at 0\.600 exceeds"):
        fit_joint_model({"Mass": 0.6, "No Finding": 0.5}, ("Mass",))
    with pytest.raises(ConfigError, match=r"count 9 not in 0\.\.8"):
        site_prevalence({"Mass": 9}, 8)


def test_acceptance_needs_every_positive_and_no_negative():
    logits = torch.tensor([[2.0, -1.0, 0.5], [2.0, 0.3, 0.5], [0.9, -1.0, 0.5], [2.0, -1.0, 0.1]])
    keep = acceptance_mask(logits, 0, 1.0, also=((2, 0.4),), below=((1, 0.0),))
    assert keep.tolist() == [True, False, False, False]


class _Linear(torch.nn.Module):
    def __init__(self, weights):
        super().__init__()
        self.W = torch.nn.Parameter(torch.as_tensor(weights, dtype=torch.float32))

    def forward(self, z):
        return z @ self.W.T


def test_a_label_vector_start_reaches_positives_and_keeps_negatives_uncalled():
    # "Images" are z itself; class 0 and 1 rise with z0, z1; class 2 rises with z0 too, so
    # lifting class 0 calls class 2 unless the optimiser holds it down.
    G = torch.nn.Identity()
    labeller = _Linear([[1.0, 0, 0], [0, 1.0, 0], [0.8, 0, -1.0]])
    settings = ClassOptimisationSettings(batch_size=8, learning_rate=0.05, max_steps=300,
                                         plateau_patience_steps=100)  # fmt: skip
    starts = [make_start(t, 0, 0, 0.2, 3, settings, also_youden=((1, 0.2),), below=((2, 0.0),))
              for t in range(8)]  # fmt: skip
    outcomes = list(BatchedClassOptimiser(G, labeller, 3, settings).run(deque(starts)))
    converged = [o for o in outcomes if isinstance(o, Converged)]
    assert len(converged) == 8
    for o in converged:
        logits = labeller(o.z[None])[0].detach()
        for c, threshold in o.start.positives():
            assert logits[c] >= threshold - 1e-5
        assert logits[2] < 0.0


def _kept_severities(redraw: bool, num_tasks: int = 1500) -> np.ndarray:
    """A simulated optimiser: a start converges with probability 0.05 + 0.9 exp(-jitter / 2)."""
    settings = ClassOptimisationSettings()
    kept = []
    for task in range(num_tasks):
        for attempt in range(400):
            start = make_start(task, attempt, 0, 0.0, 9, settings, redraw_severity=redraw)
            jitter = start.threshold_logit
            if np.random.default_rng(start.seed).random() < 0.05 + 0.9 * np.exp(-jitter / 2):
                kept.append(jitter)
                break
    assert len(kept) == num_tasks  # nobody abandoned
    return np.array(kept)


def test_retries_keep_the_drawn_severity_so_kept_patients_follow_abs_normal():
    folded = stats.foldnorm(c=1.0)  # |N(1, 1)|
    fixed = _kept_severities(redraw=False)
    assert stats.kstest(fixed, folded.cdf).pvalue > 0.01
    # The biased behaviour (redraw on retry) fails the same test: kept patients skew mild.
    biased = _kept_severities(redraw=True)
    assert stats.kstest(biased, folded.cdf).pvalue < 1e-6
    assert np.median(biased) < folded.median() - 0.2


def test_cluster_bootstrap_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    sizes = rng.integers(3, 7, 120).astype(float)
    positives = (rng.random((120, 2)) < 0.3) * sizes[:, None]
    low, high = cluster_bootstrap_ci(positives, sizes, num_resamples=4000, seed=1)
    ref_rng = np.random.default_rng(2)
    draws = []
    for _ in range(4000):
        idx = ref_rng.integers(0, 120, 120)
        draws.append(positives[idx].sum(0) / sizes[idx].sum())
    ref_low, ref_high = np.quantile(np.array(draws), [0.025, 0.975], axis=0)
    np.testing.assert_allclose(low, ref_low, atol=0.015)
    np.testing.assert_allclose(high, ref_high, atol=0.015)
