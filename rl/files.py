"""Files a run writes."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, value, **kwargs) -> None:
    """Write JSON so that a reader (or a run killed mid-write) sees the old file or the new one,
    never half of one: write a sibling, then rename it over the target."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, **{"default": float, **kwargs}))
    os.replace(tmp, path)
