"""`digest templates export DIR`: the bundled templates copied out, to start your own from."""

from __future__ import annotations

import shutil
from pathlib import Path

from digest.errors import DigestError
from digest.render import bundled_templates_dir


class ExportError(DigestError):
    """The templates could not be written where asked."""


def bundled_templates() -> list[Path]:
    return sorted(p for p in bundled_templates_dir().iterdir() if p.is_file())


def export_templates(target: Path, *, force: bool = False) -> list[Path]:
    """Copy every bundled template into `target` (created if missing) and return the copies.
    Files already there are left alone unless `force`, so an export never eats your edits."""
    sources = bundled_templates()
    existing = [target / s.name for s in sources if (target / s.name).exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise ExportError(f"templates export: {names} already exist (use --force to overwrite)")
    try:
        target.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copyfile(s, target / s.name)) for s in sources]
    except OSError as exc:
        raise ExportError(f"templates export: cannot write to {target}: {exc}") from None
