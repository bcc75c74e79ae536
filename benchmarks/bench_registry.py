"""Upload and download throughput of the hub registry on loopback (mTLS) for a ~100 MB generator.

The hub runs as ``radshare-hub serve`` in its own process (as in production, so client and
server do not share a GIL). Upload time covers the whole publish: streaming, the hub's
sha256 and safetensors checks, and the atomic commit. Download time covers GetManifest,
streaming, the client's sha256 check and the signature check.

Usage: .venv/bin/python benchmarks/bench_registry.py [--chunk-kib 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from hub.certs import ensure_consortium_certs
from hub.registry.keyring import DirectoryKeyring
from shared.artifacts.generator import GENERATOR_FILE, write_generator_bundle
from shared.artifacts.signing import generate_signing_key, public_key_pem
from shared.errors import RegistryError
from shared.hub_client import ClientTLS, HubClient
from shared.networks.generator import Generator, GeneratorConfig

#: ≈100.6 MB of float32 weights (PGGAN at 256 px, 512 feature maps, z of 768).
CFG = GeneratorConfig(resolution_px=256, z_dim=768, fmap_base=8192, fmap_max=512)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_bundle(base: Path, key) -> Path:
    torch.manual_seed(0)
    fields = {
        "site_id": "a",
        "generator_config": CFG.model_dump(),
        "resolution_px": CFG.resolution_px,
        "z_dim": CFG.z_dim,
        "training": {"kimg": 0.0},
        "data": {"num_images": 0, "counts_per_label": {}},
    }
    write_generator_bundle(base / "bundle", Generator(CFG).state_dict(), fields, key)
    return base / "bundle"


def start_hub(base: Path, port: int, chunk_bytes: int) -> subprocess.Popen:
    config = base / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "root": str(base / "hub"),
                "port": port,
                "tls_dir": str(base / "tls"),
                "site_keys_dir": str(base / "site_keys"),
                "limits": {"chunk_bytes": chunk_bytes},
            }
        )
    )
    command = [sys.executable, "-c", "from hub.cli import main; main()", "serve", "--config"]
    log = open(base / "hub.log", "wb")  # noqa: SIM115 (lives as long as the process)
    proc = subprocess.Popen([*command, str(config)], stdout=log, stderr=subprocess.STDOUT)
    with HubClient(f"127.0.0.1:{port}", ClientTLS.from_dir(base / "tls", "operator")) as probe:
        for _ in range(600):
            try:
                if probe.health() == "SERVING":
                    return proc
            except RegistryError:
                time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"hub did not start; see {base / 'hub.log'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-kib", type=int, default=1024, help="upload and download chunk")
    parser.add_argument("--repeats", type=int, default=3, help="fresh registry per repeat")
    args = parser.parse_args()
    chunk_bytes = args.chunk_kib * 1024
    base = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    try:
        ensure_consortium_certs(base / "tls", ["site:a", "operator"])
        key = generate_signing_key()
        DirectoryKeyring(base / "site_keys").register("a", public_key_pem(key.public_key()))
        bundle = make_bundle(base, key)
        size_mb = (bundle / GENERATOR_FILE).stat().st_size / 1e6
        print(f"bundle: {size_mb:.1f} MB, chunk {args.chunk_kib} KiB, loopback mTLS")
        for repeat in range(args.repeats):
            shutil.rmtree(base / "hub", ignore_errors=True)
            shutil.rmtree(base / "pulled", ignore_errors=True)
            port = free_port()
            proc = start_hub(base, port, chunk_bytes)
            try:
                tls = base / "tls"
                address = f"127.0.0.1:{port}"
                with HubClient(
                    address, ClientTLS.from_dir(tls, "site:a"), chunk_bytes=chunk_bytes
                ) as site:
                    start = time.perf_counter()
                    result = site.publish_bundle(bundle)
                    upload_s = time.perf_counter() - start
                with HubClient(address, ClientTLS.from_dir(tls, "operator")) as operator:
                    start = time.perf_counter()
                    keys = DirectoryKeyring(base / "site_keys")
                    operator.pull(result.artifact.artifact_id, base / "pulled", trusted=keys)
                    download_s = time.perf_counter() - start
            finally:
                proc.terminate()
                proc.wait(30)
            print(
                f"repeat {repeat}: upload {size_mb / upload_s:7.1f} MB/s ({upload_s:.2f} s)   "
                f"download {size_mb / download_s:7.1f} MB/s ({download_s:.2f} s)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
