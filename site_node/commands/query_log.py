"""``radshare-site query-log``: what the hub asked this site, and what the site answered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

__all__ = ["query_log_command", "render_table"]

_COLUMNS = ("time (UTC)", "message", "artifact", "weights", "samples", "decision", "seconds",
            "reason")  # fmt: skip


def render_table(rows: list[list[str]]) -> str:
    """Rows under the column headers, padded (the last column, the reason, is not)."""
    widths = [max(len(r[i]) for r in [list(_COLUMNS), *rows]) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for row in [list(_COLUMNS), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def query_log_command(
    work_dir: Path = typer.Option(
        Path("/var/lib/radshare-site"), "--work-dir", help="the SuperNode's work-dir node config"
    ),
    since_hours: float = typer.Option(
        0.0, "--since-hours", min=0.0, help="only the last N hours (0: everything)"
    ),
) -> None:
    """Print the site's query log: every federated request answered, refused or skipped.

    The ClientApp appends one JSON line per event to WORK_DIR/query-log.jsonl
    (O_APPEND + fsync): 'accepted' when a request passes the query policy, then
    'answered' or 'failed' with its duration; 'refused' with the rule, value and
    limit; 'skipped' when the site was not asked. Ids and counts only: no pixel,
    no patient id. The daily caps are counted from this file.

    Example:

    \b
      radshare-site query-log --work-dir /var/lib/radshare-site --since-hours 24
    """
    from shared.errors import ConfigError
    from site_node.flower.query_policy import QUERY_LOG_FILE, QueryLog

    if not work_dir.is_dir():
        raise ConfigError(f"--work-dir {work_dir}: not a folder")
    path = work_dir / QUERY_LOG_FILE
    if not path.is_file():
        typer.echo(f"no federated query received yet ({path} does not exist)")
        return
    entries = QueryLog(path).entries()
    if since_hours > 0:
        since = datetime.now(UTC) - timedelta(hours=since_hours)
        entries = [e for e in entries if e.time >= since]
    rows = [
        [
            e.time.strftime("%Y-%m-%d %H:%M:%S"),
            e.message_type,
            (e.artifact_id or "-")[:12],
            (e.weights_sha256 or "-")[:12],
            "-" if e.requested_samples is None else str(e.requested_samples),
            e.decision,
            f"{e.duration_s:.1f}" if e.decision in ("answered", "failed") else "-",
            e.reason,
        ]
        for e in entries
    ]
    typer.echo(render_table(rows))
    counts = {d: sum(e.decision == d for e in entries) for d in ("answered", "refused", "failed")}
    typer.echo(", ".join(f"{n} {d}" for d, n in counts.items()) + f" ({path})")
