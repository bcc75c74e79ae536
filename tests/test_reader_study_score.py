"""Reader-study scoring vs hand-computed values; Fleiss' kappa vs Fleiss 1971 and statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa as statsmodels_fleiss_kappa

from shared.errors import DataError
from site_node.reader_study.score import fleiss_kappa, load_answers, score_answers

# Wikipedia's "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories, kappa = 0.210.
WIKIPEDIA_TABLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_worked_example():
    assert fleiss_kappa(WIKIPEDIA_TABLE) == pytest.approx(0.20993, abs=5e-5)


def test_fleiss_kappa_equals_statsmodels():
    rng = np.random.default_rng(0)
    for raters, categories in ((3, 2), (6, 2), (5, 4)):
        table = rng.multinomial(raters, rng.dirichlet(np.ones(categories)), size=40)
        assert fleiss_kappa(table) == pytest.approx(statsmodels_fleiss_kappa(table), abs=1e-12)


def test_fleiss_kappa_needs_equal_raters():
    with pytest.raises(DataError):
        fleiss_kappa(np.array([[2, 1], [1, 1]]))


def _answers(rows):
    return pd.DataFrame(rows, columns=["reader_id", "image_id", "truth", "answer"])


def test_scores_equal_hand_computed_values():
    # 2 readers x 4 images (r1, r2 real; s1, s2 synthetic).
    rows = [
        ("A", "r1", "real", "real"), ("A", "r2", "real", "synthetic"),
        ("A", "s1", "synthetic", "synthetic"), ("A", "s2", "synthetic", "real"),
        ("B", "r1", "real", "real"), ("B", "r2", "real", "real"),
        ("B", "s1", "synthetic", "synthetic"), ("B", "s2", "synthetic", "synthetic"),
    ]  # fmt: skip
    result = score_answers(_answers(rows), "single", num_resamples=2000)
    overall = result["overall"]
    assert overall["accuracy"] == pytest.approx(6 / 8)
    assert overall["sensitivity"] == pytest.approx(3 / 4)  # synthetic called synthetic
    assert overall["specificity"] == pytest.approx(3 / 4)  # real called real
    assert overall["hype_infinity"] == pytest.approx(2 / 8)
    assert overall["hype_synthetic_judged_real"] == pytest.approx(1 / 4)
    assert overall["hype_real_judged_synthetic"] == pytest.approx(1 / 4)
    assert (
        result["per_reader"]["A"]["accuracy"] == 0.5
        and result["per_reader"]["B"]["accuracy"] == 1.0
    )
    assert result["reader_accuracy_sd"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    # Kappa by hand: agreement P_i = 1, 0, 1, 0 -> mean 0.5; p_real = 4/8 -> Pe = 0.5 -> kappa 0.
    assert (
        result["fleiss_kappa"] == pytest.approx(0.0, abs=1e-12)
        and result["fleiss_kappa_images"] == 4
    )
    low, high = overall["hype_infinity_ci95"]
    assert 0.0 <= low < 2 / 8 < high <= 1.0


def test_hype_ci_matches_the_binomial_interval_for_many_answers():
    rng = np.random.default_rng(1)
    truth = np.where(rng.random(1000) < 0.5, "real", "synthetic")
    wrong = rng.random(1000) < 0.3
    answer = np.where(wrong, np.where(truth == "real", "synthetic", "real"), truth)
    frame = _answers(
        [("A", f"i{k}", t, a) for k, (t, a) in enumerate(zip(truth, answer, strict=True))]
    )
    result = score_answers(frame, "single", num_resamples=4000)
    p = wrong.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / 1000)
    low, high = result["overall"]["hype_infinity_ci95"]
    assert low == pytest.approx(p - half, abs=0.006) and high == pytest.approx(p + half, abs=0.006)


def test_pair_accuracy_counts_pairs_where_the_real_image_was_picked():
    rows = [
        ("A", "r1", "real", "real"), ("A", "s1", "synthetic", "synthetic"),
        ("A", "r2", "real", "synthetic"), ("A", "s2", "synthetic", "real"),
        ("A", "r3", "real", "real"), ("A", "s3", "synthetic", "synthetic"),
    ]  # fmt: skip
    assert score_answers(_answers(rows), "pairs", num_resamples=100)[
        "pair_accuracy"
    ] == pytest.approx(2 / 3)


def test_load_answers_keeps_the_last_answer_of_a_reader(tmp_path):
    pd.DataFrame(
        {"image_id": ["a", "b"], "item_id": ["i1", "i2"], "truth": ["real", "synthetic"]}
    ).to_csv(tmp_path / "key.csv", index=False)
    pd.DataFrame(
        {"reader_id": ["R", "R", "R"], "item_id": ["i1", "i1", "i2"], "image_id": ["a", "a", "b"],
         "answer": ["synthetic", "real", "real"], "elapsed_ms": [1, 2, 3]}
    ).to_csv(tmp_path / "answers.csv", index=False)  # fmt: skip
    answers = load_answers(tmp_path)
    assert answers.set_index("image_id").answer.to_dict() == {"a": "real", "b": "real"}
