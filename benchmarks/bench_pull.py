"""PullArchive at scale: throughput and peak memory of pulling a large pooled archive over mTLS.

    .venv/bin/python benchmarks/bench_pull.py --images 100000 --work /tmp/bench-pull

Builds an archive of ``--images`` 32 px PNGs (sharded, 10,000 per shard), serves it from
a hub on loopback and pulls it as the operator, reporting MB/s and the peak resident
memory of this process (server and client together) before and during the pull: the
pull streams file by file, so the peak should not grow with the archive's size.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> None:
    """Build, serve, pull, report."""
    from helpers_pool import make_archive
    from test_registry_grpc import make_consortium

    from hub.pooling.archive import read_archive
    from hub.pooling.pool import PoolOptions, plan_pool
    from hub.pooling.writer import write_pooled_archive
    from hub.registry.server import start_server
    from shared.hub_client import ClientTLS, HubClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-pull"))
    args = parser.parse_args(argv)
    work = args.work
    t0 = time.time()
    findings = ["No Finding", "Effusion", "Pneumonia", "Cardiomegaly|Effusion"]
    source = make_archive(
        work / "source", [findings[i % 4] for i in range(args.images)], site_id="a"
    )
    sources = [read_archive(source)]
    pooled = write_pooled_archive(
        plan_pool(sources, PoolOptions()), sources, PoolOptions(), work / "hub" / "archives"
    )
    total_mb = sum(f.size_bytes for f in pooled.manifest.files.values()) / 2**20
    print(
        f"archive: {args.images} images, {len(pooled.manifest.files)} files, {total_mb:.1f} MB, "
        f"{len(pooled.manifest.shards)} shards; built in {time.time() - t0:.0f} s"
    )
    consortium = make_consortium(work / "consortium")
    server = start_server(consortium.hub_config(work / "hub"))
    before = _peak_rss_mb()
    try:
        t0 = time.time()
        with HubClient(
            f"127.0.0.1:{server.port}", ClientTLS.from_dir(consortium.tls, "operator")
        ) as hub:
            hub.pull_archive(pooled.archive_id, work / "pulled")
        elapsed = time.time() - t0
    finally:
        server.stop(grace_s=None)
    rate_mb, rate_images = total_mb / elapsed, args.images / elapsed
    print(f"pull: {elapsed:.1f} s, {rate_mb:.1f} MB/s, {rate_images:.0f} images/s")
    after = _peak_rss_mb()
    print(f"peak RSS: {before:.0f} MB before the pull, {after:.0f} MB after (server + client)")


if __name__ == "__main__":
    main()
