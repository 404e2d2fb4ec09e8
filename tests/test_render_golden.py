"""Golden files: the HTML and text of a fixed digest, compared byte for byte.

A change to the templates or the CSS shows up here as a diff to review. To accept a change on
purpose, regenerate and commit the files with the change:

    UPDATE_GOLDEN=1 PYTHONPATH=. python -m pytest -q tests/test_render_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digest.render import make_environment, render_bodies
from tests.golden.sample import golden_view

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("group_by", ["rank", "feed"])
def test_bodies_match_the_golden_files(group_by: str) -> None:
    """Guards the rendered email against unreviewed changes (templates, CSS, inlining)."""
    html, text = render_bodies(make_environment(), golden_view(group_by))
    for suffix, body in (("html", html), ("txt", text)):
        path = GOLDEN / f"digest-by-{group_by}.{suffix}"
        if UPDATE:
            path.write_text(body, encoding="utf-8", newline="")
            continue
        assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 to create it"
        expected = path.read_text(encoding="utf-8")
        assert body == expected, f"{path.name} differs; if intended, regenerate (see docstring)"
