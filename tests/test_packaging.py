"""The installed wheel works on its own: templates and example feeds travel with it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_templates_and_runs_the_demo_from_its_own_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("digest-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"digest/templates/digest.html.j2", "digest/templates/digest.txt.j2"} <= names
    assert "digest/examples/feed-1.xml" in names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-m", "digest", "demo", "--dir", "demo"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        str(target)
        in subprocess.run(
            [sys.executable, "-c", "import digest; print(digest.__file__)"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    htmls = list((work / "demo" / "outbox").glob("*.html"))
    assert len(htmls) == 1, done.stdout + done.stderr
    assert str(htmls[0].resolve()) in done.stdout
    assert "LessWrong" in htmls[0].read_text()
