"""Score a reader study: accuracy, sensitivity, specificity, HYPE∞ with its CI, Fleiss' kappa.

One answer is one image judged by one reader (a grid yields six, a pair two: the
chosen image "real", the other "synthetic"). The positive class is *synthetic*
(Han et al.'s task: spot the artificial radiograph)::

    accuracy     = P(answer = truth)
    sensitivity  = P(answer = synthetic | synthetic)
    specificity  = P(answer = real | real)
    HYPE∞        = error rate over real and synthetic images = 1 - accuracy
                   (Zhou et al. 2019; 50% means readers cannot tell them apart),
                   with a percentile bootstrap CI over answers (10,000 resamples);
                   its two halves: synthetic judged real, real judged synthetic
    pair accuracy = P(the real image of a pair is picked) (Segal et al.'s 71%)

Fleiss' kappa (Fleiss 1971) measures agreement between readers over the images
that every reader judged exactly once::

    P_i = (Σ_j n_ij² - n) / (n (n - 1)),  p_j = Σ_i n_ij / (N n)
    κ = (mean P_i - Σ_j p_j²) / (1 - Σ_j p_j²)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shared.errors import DataError
from shared.stats import bootstrap_ci

__all__ = ["error_rate", "fleiss_kappa", "load_answers", "score_answers", "score_study"]


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of ``[subjects, categories]`` rating counts (equal raters per subject)."""
    table = np.asarray(counts, dtype=np.float64)
    raters = table.sum(axis=1)
    if table.ndim != 2 or len(table) == 0 or not np.all(raters == raters[0]) or raters[0] < 2:
        raise DataError(
            f"Fleiss' kappa needs >= 2 raters on every subject, got per-subject counts {raters[:5]}"
        )
    n = raters[0]
    agreement = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    shares = table.sum(axis=0) / table.sum()
    expected = float((shares**2).sum())
    if expected == 1.0:
        return float("nan")  # every rating in one category: kappa undefined
    return float((agreement.mean() - expected) / (1.0 - expected))


def error_rate(truth: np.ndarray, answer: np.ndarray) -> float:
    """Fraction of answers that differ from the truth (HYPE∞ on real + synthetic)."""
    return float(np.mean(np.asarray(truth) != np.asarray(answer)))


def load_answers(study_dir: Path | str, answers_csv: Path | str | None = None) -> pd.DataFrame:
    """Answers joined to the key: one row per (reader, image) with ``truth`` and ``answer``."""
    study_dir = Path(study_dir)
    answers_path = Path(answers_csv) if answers_csv else study_dir / "answers.csv"
    if not answers_path.is_file():
        raise DataError(f"{answers_path}: no answers yet")
    answers = pd.read_csv(answers_path, dtype={"reader_id": str, "image_id": str, "item_id": str})
    key = pd.read_csv(study_dir / "key.csv", dtype={"image_id": str, "item_id": str})
    merged = answers.merge(key[["image_id", "truth"]], on="image_id", how="left")
    if merged.truth.isna().any():
        unknown = merged.loc[merged.truth.isna(), "image_id"].iloc[0]
        raise DataError(f"{answers_path}: image_id {unknown!r} is not in {study_dir / 'key.csv'}")
    # A reader who answered an image twice (page reloaded) counts with the last answer.
    return merged.drop_duplicates(["reader_id", "image_id"], keep="last").reset_index(drop=True)


def _rates(truth: np.ndarray, answer: np.ndarray) -> dict[str, float]:
    synthetic, real = truth == "synthetic", truth == "real"
    with np.errstate(invalid="ignore"):
        return {
            "num_answers": len(truth),
            "accuracy": float(np.mean(truth == answer)),
            "sensitivity": float(np.mean(answer[synthetic] == "synthetic"))
            if synthetic.any()
            else float("nan"),
            "specificity": float(np.mean(answer[real] == "real")) if real.any() else float("nan"),
            "real_judged_real": float(np.mean(answer[real] == "real"))
            if real.any()
            else float("nan"),
            "synthetic_judged_real": float(np.mean(answer[synthetic] == "real"))
            if synthetic.any()
            else float("nan"),
        }


def _pair_accuracy(answers: pd.DataFrame) -> float:
    picked_real = answers[answers.answer == "real"]
    return float(np.mean(picked_real.truth == "real")) if len(picked_real) else float("nan")


def _kappa_across_readers(answers: pd.DataFrame) -> tuple[float, int]:
    readers = answers.reader_id.nunique()
    per_image = answers.groupby("image_id").reader_id.nunique()
    shared = per_image.index[per_image == readers]
    if readers < 2 or len(shared) == 0:
        return float("nan"), 0
    subset = answers[answers.image_id.isin(shared)]
    counts = pd.crosstab(subset.image_id, subset.answer).reindex(
        columns=["real", "synthetic"], fill_value=0
    )
    return fleiss_kappa(counts.to_numpy()), len(shared)


def score_answers(
    answers: pd.DataFrame, design: str, num_resamples: int = 10_000, seed: int = 0
) -> dict[str, object]:
    """Overall and per-reader scores of joined answers (reader_id, image_id, truth, answer)."""
    truth, answer = answers.truth.to_numpy(str), answers.answer.to_numpy(str)
    rates = _rates(truth, answer)
    overall: dict[str, object] = {**rates}
    ci = bootstrap_ci(truth, answer, error_rate, num_resamples=num_resamples, seed=seed)
    overall |= {"hype_infinity": ci.estimate, "hype_infinity_ci95": [ci.low, ci.high]}
    overall["hype_synthetic_judged_real"] = rates["synthetic_judged_real"]
    overall["hype_real_judged_synthetic"] = 1.0 - rates["real_judged_real"]
    per_reader = {
        str(reader): _rates(group.truth.to_numpy(str), group.answer.to_numpy(str))
        for reader, group in answers.groupby("reader_id")
    }
    accuracies = np.array([r["accuracy"] for r in per_reader.values()])
    kappa, num_shared = _kappa_across_readers(answers)
    result: dict[str, object] = {
        "design": design,
        "num_readers": len(per_reader),
        "overall": overall,
        "per_reader": per_reader,
        "reader_accuracy_mean": float(accuracies.mean()),
        "reader_accuracy_sd": float(accuracies.std(ddof=1))
        if len(accuracies) > 1
        else float("nan"),
        "fleiss_kappa": kappa,
        "fleiss_kappa_images": num_shared,
    }
    if design == "pairs":
        result["pair_accuracy"] = _pair_accuracy(answers)
    return result


def score_study(
    study_dir: Path | str, answers_csv: Path | str | None = None, **options
) -> dict[str, object]:
    """Load a study's answers and key, and score them with the study's design."""
    import json

    design = json.loads((Path(study_dir) / "study.json").read_text())["design"]
    return score_answers(load_answers(study_dir, answers_csv), design, **options)
