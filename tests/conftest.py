"""Shared fixtures: the real sample data (skipped with a reason when absent), small threads.

Under ``pytest -n N --dist loadfile`` (``scripts/check`` runs the suite on two workers)
every file is one unit of work (its module fixtures are built once) and the longest files
start first, so that none of them is left for last.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# The longest files on two CPU cores (CI's ``--durations``), longest first; the three
# site-A model files build their models once per session (``helpers_cache.built_once``).
_LONGEST_FIRST = (
    "test_demo_e2e",
    "test_demo_real_data",
    "test_guides_run",
    "test_classopt_site_a",
    "test_classopt_prevalence_site_a",
    "test_labeller_site_a",
    "test_trust_e2e",
    "test_fedeval_flower",
    "test_pggan_train",
    "test_deployment_launcher",
    "test_audit_loopback",
    "test_pggan_ddp",
    "test_archive_synthesis",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (``--dist loadfile`` hands files out in this order)."""
    rank = {stem: i for i, stem in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: file order kept


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The team's real chest X-rays (``RADSHARE_SAMPLE_DATA``); CI always sets it."""
    root = os.environ.get("RADSHARE_SAMPLE_DATA")
    if not root:
        pytest.skip("RADSHARE_SAMPLE_DATA is unset: real-data tests need ../shared/data")
    path = Path(root).resolve()  # relative paths break in tests that change folders
    if not (path / "cxr-site-a" / "labels.csv").is_file():
        pytest.skip(f"RADSHARE_SAMPLE_DATA={root} has no cxr-site-a/labels.csv")
    return path


@pytest.fixture(scope="session")
def site_a(sample_data: Path) -> Path:
    """Real NIH ChestX-ray14 images of site A (adults)."""
    return sample_data / "cxr-site-a"


@pytest.fixture(scope="session")
def site_b(sample_data: Path) -> Path:
    """Real Guangzhou paediatric images of site B."""
    return sample_data / "cxr-site-b"


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread for a module: deterministic, and on a busy shared 2-core
    machine far faster (two OpenMP threads ran 10-40x slower). Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
