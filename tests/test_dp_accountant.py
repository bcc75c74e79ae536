"""ε from DP segments against Opacus's own analysis; noise calibration and the step budget."""

from __future__ import annotations

import pytest
from opacus.accountants import create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.rdp import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from shared.artifacts.manifest import DPSegment
from shared.errors import ConfigError
from site_node.pggan.schedule import ProgressSchedule, build_phases
from site_node.privacy.accountant import (
    _search_noise_multiplier,
    epsilon_spent,
    make_accountant,
    noise_multiplier_for_budget,
    planned_segments,
    steps_within_budget,
    truncate_segments,
)

SEGMENTS = [
    DPSegment(noise_multiplier=1.1, sample_rate=0.05, steps=300),
    DPSegment(noise_multiplier=1.1, sample_rate=0.02, steps=0),
    DPSegment(noise_multiplier=0.9, sample_rate=0.025, steps=500),
]


def test_rdp_epsilon_is_opacus_rdp_analysis() -> None:
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(
        rdp_analysis.compute_rdp(
            q=s.sample_rate, noise_multiplier=s.noise_multiplier, steps=s.steps, orders=orders
        )
        for s in SEGMENTS
    )
    expected, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)
    assert epsilon_spent(SEGMENTS, 1e-5, "rdp") == pytest.approx(float(expected), rel=1e-12)


def test_prv_epsilon_is_an_accountant_stepped_one_step_at_a_time() -> None:
    segments = [DPSegment(noise_multiplier=1.0, sample_rate=0.1, steps=40),
                DPSegment(noise_multiplier=1.0, sample_rate=0.05, steps=60)]  # fmt: skip
    stepped = create_accountant(mechanism="prv")
    for segment in segments:
        for _ in range(segment.steps):
            stepped.step(noise_multiplier=segment.noise_multiplier, sample_rate=segment.sample_rate)
    expected = stepped.get_epsilon(delta=1e-5)
    assert epsilon_spent(segments, 1e-5, "prv") == pytest.approx(expected, rel=1e-9)
    assert epsilon_spent(segments, 1e-5, "prv") < epsilon_spent(
        segments, 1e-5, "rdp"
    )  # PRV is tighter


def test_no_steps_spend_nothing() -> None:
    assert epsilon_spent(truncate_segments(SEGMENTS, 0), 1e-5, "rdp") == 0.0


def test_search_matches_opacus_get_noise_multiplier_for_one_rate() -> None:
    expected = get_noise_multiplier(
        target_epsilon=4.0, target_delta=1e-5, sample_rate=0.01, steps=3000, accountant="rdp"
    )
    assert _search_noise_multiplier(
        4.0, 1e-5, [(0.01, 1000), (0.01, 2000)], "rdp", 0.01
    ) == pytest.approx(expected, rel=1e-12)
    assert noise_multiplier_for_budget(4.0, 1e-5, [(0.01, 3000)], "rdp") == pytest.approx(
        expected, rel=1e-12
    )


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_calibrated_noise_spends_the_budget_over_several_rates(accountant: str) -> None:
    rates = [(0.05, 200), (0.02, 300), (0.01, 400)]
    sigma = noise_multiplier_for_budget(3.0, 1e-5, rates, accountant)

    def eps(s: float) -> float:
        return epsilon_spent(
            [DPSegment(noise_multiplier=s, sample_rate=q, steps=n) for q, n in rates],
            1e-5,
            accountant,
        )

    assert 3.0 - 0.01 <= eps(sigma) <= 3.0  # uses the budget, never exceeds it
    assert eps(0.98 * sigma) > eps(sigma)


def test_planned_segments_follow_the_schedule() -> None:
    schedule = ProgressSchedule(build_phases(16, 0.5, 0.3, {4: 32, 8: 32, 16: 16}))
    segments = planned_segments(schedule, 400, 1.3)
    total_steps = schedule.steps_in_tick(0, schedule.total_nimg)
    assert sum(s.steps for s in segments) == total_steps
    assert [s.sample_rate for s in segments] == [p.batch_size / 400 for p in schedule.phases]
    assert [s.label for s in segments][:2] == ["stabilise 4px", "fade 8px"]
    # ceil(500 / 32) steps carry cur_nimg to 512; the fade then has ceil((800 - 512) / 32).
    assert [s.steps for s in segments][:2] == [16, 9]
    assert sum(s.steps for s in planned_segments(schedule, 400, 1.3, max_steps=20)) == 20
    with pytest.raises(ConfigError, match="exceeds the 20 training images"):
        planned_segments(schedule, 20, 1.3)


def test_steps_within_budget_is_the_last_step_under_the_target() -> None:
    k = steps_within_budget(SEGMENTS, 2.0, 1e-5, "rdp")
    assert 0 < k < sum(s.steps for s in SEGMENTS)
    assert epsilon_spent(truncate_segments(SEGMENTS, k), 1e-5, "rdp") <= 2.0
    assert epsilon_spent(truncate_segments(SEGMENTS, k + 1), 1e-5, "rdp") > 2.0
    assert steps_within_budget(SEGMENTS, 1e3, 1e-5, "rdp") == 800


def test_unknown_accountant_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="did you mean 'prv'"):
        make_accountant("prvv")
