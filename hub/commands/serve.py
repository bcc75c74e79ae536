"""``radshare-hub serve``: run the registry's gRPC service (mTLS) until SIGINT/SIGTERM."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["serve"]


def serve(
    config: Path | None = typer.Option(None, help="hub config YAML (see hub.config)"),
    root: Path | None = typer.Option(
        None, help="registry folder (SQLite + blobs); default hub-data"
    ),
    host: str | None = typer.Option(None, help="address to bind; default 127.0.0.1"),
    port: int | None = typer.Option(None, help="port to bind; default 50051, 0 = any"),
    tls_dir: Path | None = typer.Option(
        None, help="ca.crt, server.crt, server.key; default <root>/tls"
    ),
    max_upload_mb: int | None = typer.Option(None, help="largest bundle accepted, MB"),
    max_concurrent_uploads: int | None = typer.Option(None, help="uploads streaming at once"),
) -> None:
    """Serve publish / list / pull and gRPC health.

    Example:

    \b
      radshare-hub certs --out hub-data/tls -i site:a -i operator && radshare-hub serve
    """
    import logging

    from hub.config import load_hub_config
    from hub.registry.server import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = load_hub_config(config, root=root, host=host, port=port, tls_dir=tls_dir)
    limits = cfg.limits.model_copy(
        update={
            k: v
            for k, v in {
                "max_upload_bytes": max_upload_mb * 10**6 if max_upload_mb else None,
                "max_concurrent_uploads": max_concurrent_uploads,
            }.items()
            if v is not None
        }
    )
    run(cfg.model_copy(update={"limits": limits}))
