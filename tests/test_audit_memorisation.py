"""Planted memorisation is caught, clean generators are not (site_node.audit.memorisation).

Real site A radiographs at 64², split by patient 60/20/20 (train/val/test) with a
different seed per run. Fake "generators" replay real images:

* memorised: training images with light noise (sigma 3 grey levels), or shifted by one pixel;
* holdout copies: images of the test split (the holdout) with the same noise;
* fresh patients: images of the val split (patients in neither train nor holdout), the
  ideal generator that learnt the distribution and no patient;
* another site: site B's paediatric images.

False-positive rates over the seeds are printed (``pytest -s``); a wider study
with many more splits is ``benchmarks/bench_audit_calibration.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shared.artifacts.audit import AuditSettings, AuditSummary
from shared.labels import NIH_LABELS
from site_node.audit.memorisation import run_memorisation_audit
from site_node.data.cache import SiteCache, write_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RES_PX = 64
SEEDS = (0, 1, 2)
SETTINGS = {"num_samples": 60, "num_permutations": 1999, "reference_samples": 0}
NULL_GENERATORS = ("fresh_patients", "other_site")

Sampler = Callable[[int, int], np.ndarray]


def _load_64px(folder: Path, count: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    table = pd.read_csv(folder / "labels.csv").iloc[:count]
    full = np.stack(
        [
            np.asarray(Image.open(folder / "images" / name).convert("L"), np.float32)
            for name in table["Image Index"]
        ]
    )
    factor = full.shape[-1] // RES_PX  # 4×4 area averaging, as the cache's pyramid does
    small = full.reshape(len(full), RES_PX, factor, RES_PX, factor).mean(axis=(2, 4))
    return table, np.clip(np.rint(small), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def site_a_64(site_a: Path) -> tuple[pd.DataFrame, np.ndarray]:
    return _load_64px(site_a)


@pytest.fixture(scope="module")
def site_b_64(site_b: Path) -> np.ndarray:
    return _load_64px(site_b, 300)[1]


def _write_cache(folder: Path, table: pd.DataFrame, images: np.ndarray, seed: int) -> SiteCache:
    """A cache with a random patient-level 60/20/20 split."""
    patients = np.sort(table["Patient ID"].unique())
    np.random.default_rng(seed).shuffle(patients)
    position = {p: i / len(patients) for i, p in enumerate(patients)}
    fraction = table["Patient ID"].map(position)
    cache_table = pd.DataFrame(
        {
            "image_index": table["Image Index"],
            "patient_id": table["Patient ID"].astype(str),
            "split": np.select([fraction < 0.6, fraction < 0.8], ["train", "val"], "test"),
        }
    )
    for label in NIH_LABELS:
        cache_table[label] = 0
    write_cache(folder, {RES_PX: images}, cache_table, NIH_LABELS, split_seed=seed)
    return SiteCache(folder)


def _noisy(images: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 3.0, images.shape)
    return np.clip(np.rint(images + noise), 0, 255).astype(np.uint8)


def _shifted(images: np.ndarray, seed: int) -> np.ndarray:
    """Each image moved by one pixel (one of eight directions), edges replicated."""
    rng = np.random.default_rng(seed)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    moves = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    out = np.empty_like(images)
    for i, move in enumerate(rng.integers(len(moves), size=len(images))):
        dy, dx = moves[move]
        out[i] = padded[i, 1 + dy : 1 + dy + RES_PX, 1 + dx : 1 + dx + RES_PX]
    return out


def _replay(pool: np.ndarray, distort: Callable[[np.ndarray, int], np.ndarray]) -> Sampler:
    def sample(n: int, seed: int) -> np.ndarray:
        picks = np.random.default_rng(seed).choice(len(pool), n)
        return distort(pool[picks], seed + 1)

    return sample


def _generators(cache: SiteCache, images: np.ndarray, other: np.ndarray) -> dict[str, Sampler]:
    train, val, test = (images[cache.indices(s)] for s in ("train", "val", "test"))
    return {
        "memorised_noise": _replay(train, _noisy),
        "memorised_shift": _replay(train, _shifted),
        "holdout_copies": _replay(test, _noisy),
        "fresh_patients": _replay(val, _noisy),
        "other_site": _replay(other, _noisy),
    }


@pytest.fixture(scope="module")
def audits(site_a_64, site_b_64, tmp_path_factory) -> dict[tuple[str, int], AuditSummary]:
    """Every fake generator audited on every split seed."""
    table, images = site_a_64
    results = {}
    for seed in SEEDS:
        cache = _write_cache(tmp_path_factory.mktemp(f"cache{seed}"), table, images, seed)
        settings = AuditSettings(sample_seed=seed, holdout_seed=seed, **SETTINGS)
        for name, sample in _generators(cache, images, site_b_64).items():
            results[name, seed] = run_memorisation_audit(sample, cache, settings).summary
    _print_table(results)
    return results


def _print_table(results: dict[tuple[str, int], AuditSummary]) -> None:
    print(
        "\ngenerator         seed  maxSSIM  near  p_eq   binom_p   p_split/null  perm_p(ssim,feat)"
    )
    for (name, seed), s in results.items():
        t, f = s.ssim_test, s.feature_test
        assert f is not None
        print(
            f"{name:17s} {seed:4d}  {s.best_ssim_quantiles['max']:.3f}  {s.near_copy_count:4d}  "
            f"{t.fraction_train:.2f}  {t.binomial_p_value:8.1e}  "
            f"{t.split_fraction_train:.2f}/{t.split_null_fraction_train:.2f}  "
            f"{t.permutation_p_value:.1e},{f.permutation_p_value:.1e}  "
            f"{'FLAGGED' if not s.passed else 'pass'}"
        )
    for name in ("holdout_copies", *NULL_GENERATORS):
        flagged = [not results[name, seed].passed for seed in SEEDS]
        binomial = [results[name, seed].ssim_test.binomial_p_value < 0.05 for seed in SEEDS]
        print(
            f"false-positive rate {name}: verdict {np.mean(flagged):.2f}, "
            f"equal-size binomial alone {np.mean(binomial):.2f} over {len(SEEDS)} seeds"
        )


@pytest.mark.realdata
@pytest.mark.parametrize("generator", ["memorised_noise", "memorised_shift"])
def test_planted_memorisation_is_flagged_by_ssim_and_by_the_holdout_test(audits, generator):
    for seed in SEEDS:
        summary = audits[generator, seed]
        assert summary.feature_test is not None
        assert not summary.passed
        assert summary.verdict.flags == {
            "near_copies": True,
            "ssim_holdout": True,
            "feature_holdout": True,
        }
        assert summary.near_copy_count >= 6  # of 60 samples
        # Every sample is nearer the train split than the holdout; relabelling patients almost
        # never reaches that (the floor is 1 / (1 + 1999) = 5e-4).
        assert summary.ssim_test.split_fraction_train == 1.0
        assert summary.ssim_test.permutation_p_value < 0.005
        assert summary.feature_test.permutation_p_value < 0.005


@pytest.mark.realdata
def test_holdout_copies_are_never_flagged(audits):
    for seed in SEEDS:
        summary = audits["holdout_copies", seed]
        assert summary.passed, summary.verdict.reasons
        assert (summary.near_copy_count, summary.ssim_test.num_train_nearer) == (0, 0)


@pytest.mark.realdata
def test_clean_generators_false_positive_rate_is_at_the_test_level(audits):
    # Under "no memorisation" each audit fails with probability <= alpha = 0.05 (two tests
    # at alpha/2). Of 6 clean audits, 3 or more would fail with probability < 0.3%.
    verdicts = [audits[name, seed] for name in NULL_GENERATORS for seed in SEEDS]
    assert all(summary.near_copy_count == 0 for summary in verdicts)
    assert sum(not summary.passed for summary in verdicts) <= 2


@pytest.mark.realdata
def test_float_sampler_in_minus_one_one_gives_the_same_summary(site_a_64, tmp_path):
    table, images = site_a_64
    cache = _write_cache(tmp_path / "cache", table, images, seed=0)
    uint8_sampler = _replay(images[cache.indices("train")], _noisy)

    def float_sampler(n: int, seed: int) -> np.ndarray:
        return (uint8_sampler(n, seed).astype(np.float32) / 127.5 - 1.0)[:, None]

    settings = AuditSettings(num_samples=20, num_permutations=99, reference_samples=10)
    a, b = (
        run_memorisation_audit(s, cache, settings).summary for s in (uint8_sampler, float_sampler)
    )
    volatile = {"created": True, "seconds": True, "ssim_search": {"seconds"}}  # wall times
    assert a.model_dump(exclude=volatile) == b.model_dump(exclude=volatile)


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


@pytest.mark.realdata
def test_summary_holds_numbers_only_and_the_panel_stays_at_the_site(site_a_64, tmp_path):
    table, images = site_a_64
    cache = _write_cache(tmp_path / "cache", table, images, seed=0)
    settings = AuditSettings(num_samples=30, num_permutations=99, reference_samples=20)
    outcome = run_memorisation_audit(
        _replay(images[cache.indices("train")], _noisy), cache, settings, panel_dir=tmp_path / "p"
    )
    raw = json.loads(outcome.summary.model_dump_json())
    leaves = _leaves(raw)
    strings = {leaf for leaf in leaves if isinstance(leaf, str)}
    identifiers = set(table["Image Index"]) | set(table["Patient ID"].astype(str))
    assert not strings & identifiers
    assert all(isinstance(leaf, int | float | bool | str) for leaf in leaves)
    assert max(len(v) for v in raw["best_ssim_histogram"].values()) <= 201
    assert len(leaves) < 300  # a 30×64×64 pixel array would be 122,880 leaves
    # The panel is a PNG at the site, and nothing in the summary points to it.
    assert outcome.panel_path == tmp_path / "p" / "nearest_pairs.png"
    assert outcome.panel_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any("nearest_pairs" in s or str(tmp_path) in s for s in strings)
    # The summary round-trips through its own model.
    assert AuditSummary.model_validate_json(outcome.summary.model_dump_json()) == outcome.summary
