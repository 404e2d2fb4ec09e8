"""The deployment examples in deploy/ (and shown in the README) are valid as written."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from digest.cli import _parser
from digest.schedule import parse_schedule

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "digest.service"
CRONTAB = ROOT / "deploy" / "crontab"
INSTALLED = "/opt/digest/.venv/bin/digest"
_ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own checker, on the unit with only the install path pointed at this machine's
    interpreter (verify insists the program exists). It reports unknown keys and bad values as
    warnings with exit 0, so any line naming the unit fails the test too."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; test_systemd_unit_is_well_formed still runs")
    unit = tmp_path / "digest.service"
    here = f"{sys.executable} -m digest"
    unit.write_text(UNIT.read_text().replace(INSTALLED, here), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "digest.service" in line
    ]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr


def test_systemd_unit_is_well_formed() -> None:
    """Without systemd: sections and keys parse, and the commands are valid digest usage."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in UNIT.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(header.group(1), {})
            continue
        assert current is not None, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z]+", key), line
        current.setdefault(key, []).append(value)
    assert list(sections) == ["Unit", "Service", "Install"]
    service = sections["Service"]
    exec_start = shlex.split(service["ExecStart"][0])
    assert exec_start[0] == INSTALLED and exec_start[1] == "serve"
    args = _parser().parse_args(exec_start[1:])
    assert args.command == "serve"
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"], "SIGHUP reloads the config"
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["RestartPreventExitStatus"] == ["2"], "a bad config is not retried in a loop"


def test_crontab_lines_are_valid_cron_and_valid_digest_commands() -> None:
    entries = 0
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _ENV_LINE.match(line):
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"five time fields and a command: {line}"
        parse_schedule(" ".join(fields[:5]))  # raises on a bad field
        command = fields[5]
        assert "%" not in command, "cron turns % into newlines"
        subprocess.run(["sh", "-n", "-c", command], check=True, timeout=10)
        for part in re.split(r"\|\||&&|;|\|", command):
            words = shlex.split(part)
            if words and words[0] == INSTALLED:
                digest_args = [w for w in words[1:] if not w.startswith((">", "2>"))]
                _parser().parse_args(digest_args)  # exits 2 on a bad option
        entries += 1
    assert entries == 2


def _readme_block(language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Running as a service\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)\n```", section, re.DOTALL)
    assert match, f"no {language} block in the README's service section"
    return match.group(1)


def test_the_readme_shows_the_tested_files() -> None:
    """What a reader copies from the README is what the tests above checked."""
    assert _readme_block("ini") in UNIT.read_text()
    shown = _readme_block("cron").splitlines()
    crontab = [line for line in CRONTAB.read_text().splitlines() if not line.startswith("#")]
    assert shown == [line for line in crontab if line.strip()]
