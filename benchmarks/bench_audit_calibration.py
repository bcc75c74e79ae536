"""How often the memorisation audit flags clean and memorising generators, over many patient splits.

Site A's real radiographs at 64² are split by patient 60/20/20 (train/val/test)
with ``--splits`` different seeds. Per split, four replay "generators" draw
``--samples`` images: memorised (training images), holdout copies (test split),
fresh patients (val split: the ideal generator, which learnt the distribution
and no patient) and another site (site B). Each is audited with the audit's own
statistics (``site_node.audit.statistics``) on SSIM and on the default feature
space. The replays are noise-free, so that one SSIM matrix of every image
against site A serves all splits; ``tests/test_audit_memorisation.py`` runs the
full audit with noisy and shifted replays on a few splits.

Printed: the fraction of splits in which each check fires: the near-copy count,
the equal-size binomial test (p < 0.05 and p < alpha/2), the patient-level
permutation tests (SSIM, feature; p < alpha/2), and the verdict.

Run: ``python benchmarks/bench_audit_calibration.py --data ../shared/data [--splits 100]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from shared.artifacts.audit import AuditSettings
from shared.metrics.nn_search import ssim_matrix
from site_node.audit.memorisation import fixed_embedding, patient_matched_subsets
from site_node.audit.statistics import SplitNeighbours, decide, nearest_split_test

RES_PX = 64
GENERATORS = ("memorised", "holdout_copies", "fresh_patients", "other_site")


def load_64px(folder: Path, count: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Table and uint8 ``[N, 64, 64]`` images (4×4 area means of the 256² files)."""
    table = pd.read_csv(folder / "labels.csv").iloc[:count]
    full = np.stack(
        [
            np.asarray(Image.open(folder / "images" / n).convert("L"), np.float32)
            for n in table["Image Index"]
        ]
    )
    small = full.reshape(len(full), RES_PX, 4, RES_PX, 4).mean(axis=(2, 4))
    return table, np.clip(np.rint(small), 0, 255).astype(np.uint8)


def cosine_matrix(queries: np.ndarray, reals: np.ndarray) -> np.ndarray:
    """Cosine similarity in the audit's default feature space, ``[Q, R]``."""
    a, b = (torch.as_tensor(fixed_embedding(x), dtype=torch.float64) for x in (queries, reals))
    a, b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    return (a @ b.T).numpy()


def split_rows(patient_ids: pd.Series, seed: int) -> dict[str, np.ndarray]:
    """Patient-level 60/20/20 split, as in the tests."""
    patients = np.sort(patient_ids.unique())
    np.random.default_rng(seed).shuffle(patients)
    fraction = patient_ids.map({p: i / len(patients) for i, p in enumerate(patients)})
    names = np.select([fraction < 0.6, fraction < 0.8], ["train", "val"], "test")
    return {name: np.flatnonzero(names == name) for name in ("train", "val", "test")}


def nearest(similarity: np.ndarray, rows: np.ndarray, patients: np.ndarray):
    """Distance ``1 - s`` to, and patient of, each query's most similar image among ``rows``."""
    block = similarity[:, rows]
    best = block.argmax(axis=1)
    return 1.0 - block[np.arange(len(block)), best], patients[rows[best]]


def audit_split(similarity, rows, subset, patients, space, settings, seed):
    """The audit's holdout test on one similarity matrix (samples × site A)."""
    holdout = nearest(similarity, rows["test"], patients)
    train_subset = nearest(similarity, subset, patients)
    whole_train = nearest(similarity, rows["train"], patients)
    equal = SplitNeighbours(train_subset[0], holdout[0], train_subset[1], holdout[1])
    pooled = SplitNeighbours(whole_train[0], holdout[0], whole_train[1], holdout[1])
    return nearest_split_test(
        equal, pooled, space=space, distance="1 - similarity",
        subset_patients=(patients[subset], patients[rows["test"]]),
        split_patients=(patients[rows["train"]], patients[rows["test"]]),
        num_permutations=settings.num_permutations, seed=seed,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    settings = AuditSettings(num_permutations=999)
    # Every image against site A, once: SSIM and feature similarities.
    started = time.perf_counter()
    table, site_a = load_64px(args.data / "cxr-site-a")
    _, site_b = load_64px(args.data / "cxr-site-b", 300)
    patients = pd.factorize(table["Patient ID"])[0]
    ssim = {"a": ssim_matrix(site_a, site_a).numpy(), "b": ssim_matrix(site_b, site_a).numpy()}
    feature = {"a": cosine_matrix(site_a, site_a), "b": cosine_matrix(site_b, site_a)}
    print(f"# audit calibration: site A {len(site_a)} images at {RES_PX}², {args.splits} splits, "
          f"{args.samples} samples; matrices in {time.perf_counter() - started:.0f} s")  # fmt: skip
    # Audit every generator on every split.
    fired = {name: np.zeros(6) for name in GENERATORS}
    for seed in range(args.splits):
        rows = split_rows(table["Patient ID"], seed)
        subset, _ = patient_matched_subsets(rows["train"], rows["test"], patients, seed)
        rng = np.random.default_rng(seed)
        sources = {
            "memorised": ("a", rng.choice(rows["train"], args.samples)),
            "holdout_copies": ("a", rng.choice(rows["test"], args.samples)),
            "fresh_patients": ("a", rng.choice(rows["val"], args.samples)),
            "other_site": ("b", rng.choice(len(site_b), args.samples)),
        }
        for name, (site, picks) in sources.items():
            tests = [
                audit_split(matrix[site][picks], rows, subset, patients, space, settings, seed)
                for space, matrix in (("ssim", ssim), ("feature", feature))
            ]
            best = ssim[site][picks][:, rows["train"]].max(axis=1)
            near_copies = int(np.sum(best >= settings.near_copy_ssim))
            verdict = decide(near_copies, tests[0], tests[1], settings)
            fired[name] += [
                verdict.flags["near_copies"],
                tests[0].binomial_p_value < 0.05,
                tests[0].binomial_p_value < settings.alpha / 2,
                verdict.flags["ssim_holdout"],
                verdict.flags["feature_holdout"],
                not verdict.passed,
            ]
    print("\n| generator | near copies | binomial p<0.05 | binomial p<0.025 | "
          "permutation SSIM | permutation feature | verdict: flagged |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in GENERATORS:
        rates = " | ".join(f"{rate:.2f}" for rate in fired[name] / args.splits)
        print(f"| {name} | {rates} |")


if __name__ == "__main__":
    main()
