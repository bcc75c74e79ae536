"""Progressive schedule, per-step data order, EMA decay and options against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.errors import ConfigError
from site_node.pggan.module import ema_beta, step_generator
from site_node.pggan.options import TrainOptions
from site_node.pggan.reals import batch_positions
from site_node.pggan.schedule import (
    DEFAULT_BATCH_SIZES,
    ProgressSchedule,
    build_phases,
    parse_batch_sizes,
)


@pytest.fixture
def schedule() -> ProgressSchedule:
    # 16 px, 2 kimg stabilise, 1 kimg fade; batches 10 / 20 / 40 at 4 / 8 / 16 px.
    # Phases (nimg): stab4 [0, 2000), fade8 [2000, 3000), stab8 [3000, 5000),
    #                fade16 [5000, 6000), stab16 [6000, 8000).
    return ProgressSchedule(build_phases(16, 2.0, 1.0, {4: 10, 8: 20, 16: 40}))


@pytest.mark.parametrize(
    ("cur_nimg", "kind", "res_px", "alpha", "batch_size", "phase_index"),
    [
        (0, "stabilise", 4, 1.0, 10, 0),
        (1999, "stabilise", 4, 1.0, 10, 0),
        (2000, "fade", 8, 0.0, 20, 1),
        (2500, "fade", 8, 0.5, 20, 1),
        (2999, "fade", 8, 0.999, 20, 1),
        (3000, "stabilise", 8, 1.0, 20, 2),
        (5250, "fade", 16, 0.25, 40, 3),
        (6000, "stabilise", 16, 1.0, 40, 4),
        (7999, "stabilise", 16, 1.0, 40, 4),
        (9000, "stabilise", 16, 1.0, 40, 4),  # past the end: the last phase
    ],
)
def test_schedule_at(schedule, cur_nimg, kind, res_px, alpha, batch_size, phase_index) -> None:
    state = schedule.at(cur_nimg)
    assert (state.phase.kind, state.phase.res_px, state.batch_size, state.phase_index) == (
        kind,
        res_px,
        batch_size,
        phase_index,
    )
    assert state.res_log2 == int(np.log2(res_px))
    assert state.alpha == pytest.approx(alpha, abs=1e-12)


def test_schedule_totals_and_ticks(schedule) -> None:
    assert schedule.total_nimg == 8000
    assert [p.kind for p in schedule.phases] == [
        "stabilise",
        "fade",
        "stabilise",
        "fade",
        "stabilise",
    ]
    assert schedule.steps_in_tick(0, 1000) == 100  # 1000 / 10
    # From 1990: one step of 10 (to 2000), then steps of 20 until >= 2090: 2100 → 1 + 5 steps.
    assert schedule.steps_in_tick(1990, 100) == 6
    # The last tick stops at the end of the schedule: 7900 → 8000 in steps of 40 → 3 steps.
    assert schedule.steps_in_tick(7900, 1000) == 3
    assert schedule.steps_in_tick(8000, 1000) == 0


def test_default_batch_sizes_are_han_et_al() -> None:
    assert DEFAULT_BATCH_SIZES == {
        4: 128, 8: 128, 16: 128, 32: 128, 64: 64, 128: 32, 256: 16, 512: 8, 1024: 4
    }  # fmt: skip
    phases = build_phases(1024, 600, 600)
    assert len(phases) == 17  # 1 + 2 * 8
    assert phases[-1].end_nimg == 17 * 600_000
    assert [(p.res_px, p.batch_size) for p in phases[-2:]] == [(1024, 4), (1024, 4)]


def test_parse_batch_sizes() -> None:
    assert parse_batch_sizes("4:128, 64:32") == {4: 128, 64: 32}
    with pytest.raises(ConfigError, match="'64-32'"):
        parse_batch_sizes("4:128,64-32")


def test_batch_positions_cover_each_data_epoch_once() -> None:
    n = 10
    # Chunked as training would chunk it (batch sizes change between phases).
    chunks, cur_nimg = [], 0
    for batch_size in (3, 3, 7, 4, 4, 4, 5):
        chunks.append(
            batch_positions(seed=5, cur_nimg=cur_nimg, batch_size=batch_size, num_images=n)
        )
        cur_nimg += batch_size
    stream = np.concatenate(chunks)
    assert len(stream) == 30
    for epoch in range(3):
        assert sorted(stream[epoch * n : (epoch + 1) * n]) == list(range(n))
    # Independent of chunking: one draw of 30 is the same stream.
    np.testing.assert_array_equal(batch_positions(5, 0, 30, n), stream)


def test_step_generator_depends_only_on_seed_and_step() -> None:
    a = step_generator(3, 17).get_state()
    assert (step_generator(3, 17).get_state() == a).all()
    assert not (step_generator(3, 18).get_state() == a).all()
    assert not (step_generator(4, 17).get_state() == a).all()


def test_ema_beta() -> None:
    # Half-life of 10 kimg at batch 16: beta ** (10000 / 16) == 0.5.
    beta = ema_beta(16, cur_nimg=10**9, halflife_kimg=10.0, rampup=None)
    assert beta ** (10_000 / 16) == pytest.approx(0.5)
    assert beta == pytest.approx(0.5 ** (16 / 10_000))
    # Ramp-up: at 2 kimg with rampup 0.05 the half-life is 100 images.
    assert ema_beta(16, 2000, 10.0, 0.05) == pytest.approx(0.5 ** (16 / 100))
    assert ema_beta(16, 0, 10.0, 0.05) == 0.0  # the first step copies G


def test_options_profiles_and_overrides(tmp_path: Path) -> None:
    options = TrainOptions.from_profile(
        "tiny", cache_dir=tmp_path, run_dir=tmp_path / "run", batch_sizes={32: 8}, seed=3
    )
    assert options.resolution_px == 32 and options.seed == 3 and options.profile == "tiny"
    assert options.batch_sizes[32] == 8 and options.batch_sizes[16] == 16  # profile kept
    assert options.batch_sizes[64] == 64  # completed from Han et al.
    assert TrainOptions.model_validate_json(options.model_dump_json()) == options
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        TrainOptions.from_profile("tiyn", cache_dir=tmp_path, run_dir=tmp_path)
    with pytest.raises(ValueError, match="does not split over devices=3"):
        TrainOptions(cache_dir=tmp_path, run_dir=tmp_path, devices=3)
    changed = options.model_copy(update={"seed": 4, "devices": 2})
    assert options.differences(changed) == {"seed": (3, 4)}  # devices is a runtime field
