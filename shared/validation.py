"""One-line errors for bad files: YAML config mappings and pydantic validation.

Bad input is one line naming the file, the field and the value (``docs/style.md``)::

    hub.yaml: field 'port': Input should be less than or equal to 65535 (value 70000)

Used by every role's config loader (``hub.config``, ``site_node.config``,
``deployment.config``) and by the readers of manifests and keyrings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.errors import ConfigError

__all__ = ["field_error", "read_yaml_mapping"]


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (an empty file: ``{}``).

    Raises ConfigError naming the file: unreadable or not YAML (``what`` names the kind
    of file, e.g. ``hub config``), or not a mapping at the top level.
    """
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read {what}: {error}") from error
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return loaded


def field_error(
    error: ValidationError, where: object, *, whole: str = "", with_value: bool = False
) -> str:
    """``where: field 'a.b': message`` for the first problem of ``error``, one line.

    ``whole``: the field shown when the problem is the whole document (an empty
    location); ``with_value``: add `` (value …)``, the value that was given.
    """
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or whole
    line = f"{where}: field {field!r}: {first['msg']}"
    return f"{line} (value {first.get('input')!r})" if with_value else line
