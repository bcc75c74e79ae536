"""The audit's SSIM searches: fused kernel with pruning = torch search; counts and time.

Site A's real radiographs at 64² (a cache built from the PNGs); the "generator"
replays noisy training images, so nearest neighbours are clear and pruning has
work to do. The torch search (``backend="torch"``) is the independent reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_cache import build_site_cache

from shared.artifacts.audit import AuditSettings, AuditSummary
from shared.metrics import ssim_fused
from shared.metrics.nn_search import SearchOptions
from site_node.audit.memorisation import run_memorisation_audit

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = AuditSettings(num_samples=30, num_permutations=199, reference_samples=10)


@pytest.fixture(scope="module")
def cache(site_a: Path, tmp_path_factory):
    return build_site_cache(site_a, tmp_path_factory.mktemp("cache"), resolutions_px=(64,))


def _replay_train(cache):  # type: ignore[no-untyped-def]
    train = cache.images(64)[cache.indices("train")]

    def sample(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        noisy = train[rng.choice(len(train), n)] + rng.normal(0, 3, (n, 64, 64))
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)

    return sample


def _audit(cache, options: SearchOptions) -> AuditSummary:  # type: ignore[no-untyped-def]
    return run_memorisation_audit(
        _replay_train(cache), cache, SETTINGS, options=options, progress_bar=False
    ).summary


@pytest.mark.realdata
@pytest.mark.skipif(not ssim_fused.NUMBA_AVAILABLE, reason="numba is not installed")
def test_pruned_fused_audit_equals_the_torch_audit_and_reports_its_counts(cache):
    reference = _audit(cache, SearchOptions(backend="torch"))
    pruned = _audit(cache, SearchOptions(backend="fused", prune=True, threads=1))
    num_train, num_holdout = cache.indices("train").size, cache.indices("test").size
    assert reference.ssim_search is not None and pruned.ssim_search is not None
    total = reference.ssim_search.pairs_compared
    # samples x (train + train subset + holdout) + reference x train; the subset has
    # whole patients just enough to reach the holdout's image count.
    assert total >= 30 * (num_train + 2 * num_holdout) + 10 * num_train
    assert (reference.ssim_search.backend, reference.ssim_search.pairs_skipped) == ("torch", 0)
    assert pruned.ssim_search.backend == "fused"
    assert pruned.ssim_search.pairs_compared + pruned.ssim_search.pairs_skipped == total
    assert pruned.ssim_search.pairs_skipped > total // 4  # noisy copies rule most reals out
    assert pruned.ssim_search.seconds > 0
    print(
        f"\naudit 64²: {pruned.ssim_search.pairs_skipped:,} of {total:,} pairs skipped; "
        f"{reference.ssim_search.seconds:.1f} s torch, {pruned.ssim_search.seconds:.1f} s fused"
    )
    # Same numbers, whichever search ran.
    assert pruned.near_copy_count == reference.near_copy_count > 0
    for name, value in reference.best_ssim_quantiles.items():
        assert pruned.best_ssim_quantiles[name] == pytest.approx(value, abs=1e-5)
    assert pruned.best_ssim_histogram == reference.best_ssim_histogram
    assert pruned.ssim_test.num_train_nearer == reference.ssim_test.num_train_nearer
    assert pruned.ssim_test.permutation_p_value == reference.ssim_test.permutation_p_value
    # The counts travel in the summary's JSON and parse back.
    assert AuditSummary.model_validate_json(pruned.model_dump_json()) == pruned


def test_summaries_without_search_counts_still_parse():
    from helpers_audit import make_report

    summary = make_report("g1", "site-a").summary
    assert summary.ssim_search is None
    assert "ssim_search" not in summary.model_dump_json()  # older JSON is unchanged
    assert AuditSummary.model_validate_json(summary.model_dump_json()) == summary


def test_cli_refuses_an_unknown_ssim_backend_before_loading_anything(tmp_path, capsys):
    from shared.cli_main import run_cli
    from site_node.cli import app

    argv = ["audit", "--run", str(tmp_path / "no-run"), "--cache", str(tmp_path / "no-cache"),
            "--ssim-backend", "numpyy"]  # fmt: skip
    assert run_cli(app, argv, prog="radshare-site") == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: radshare-site audit: backend='numpyy': one of auto, fused, torch"
