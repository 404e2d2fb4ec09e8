"""Config loading: each bad value is named with its field, owner and line; env overrides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from digest.cli import main
from digest.config import load_config
from digest.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
[digest]
database = "sqlite:///digest.db"
from = "Digest <digest@example.org>"

[delivery]
mode = "folder"

[[feeds]]
name = "lesswrong"
url = "https://www.lesswrong.com/feed.xml"

[[feeds]]
name = "local"
url = "feeds/local.xml"

[[subscribers]]
email = "ada@example.org"
schedule = "daily at 07:00"
timezone = "Europe/London"
feeds = ["lesswrong"]

[[subscribers]]
email = "bob@example.org"
"""


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_good_config_loads_and_resolves_paths_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD, encoding="utf-8")
    settings = load_config(path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'digest.db'}"
    local = next(f for f in settings.feeds if f.name == "local")
    assert settings.feed_location(local) == str(tmp_path / "feeds/local.xml")
    bob = settings.subscribers[1]
    assert [f.name for f in settings.subscriber_feeds(bob)] == ["lesswrong", "local"]
    assert str(settings.subscriber_timezone(bob)) == "UTC"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'url = "https://www.lesswrong.com/feed.xml"',
            'url = "htps:/www.lesswrong.com"',
            "feeds[0] (lesswrong) -> url",
        ),
        (
            'email = "ada@example.org"',
            'email = "ada.example.org"',
            "subscribers[0] (ada.example.org) -> email",
        ),
        (
            'feeds = ["lesswrong"]',
            'feeds = ["lesswrong", "nope"]',
            "subscribers[0] (ada@example.org) -> feeds: unknown feed 'nope'",
        ),
        (
            'timezone = "Europe/London"',
            'timezone = "Europe/Londn"',
            "subscribers[0] (ada@example.org) -> timezone",
        ),
        (
            'schedule = "daily at 07:00"',
            'schedule = "every morning"',
            "subscribers[0] (ada@example.org) -> schedule",
        ),
        (
            'schedule = "daily at 07:00"',
            'schedule = "daily at 07:00"\nmax_itmes = 5',
            "subscribers[0] (ada@example.org) -> max_itmes: unknown setting",
        ),
        ('mode = "folder"', 'mode = "pigeon"', "delivery -> mode"),
        ('from = "Digest <digest@example.org>"', 'from = "nobody"', "digest -> from"),
        (
            'mode = "folder"',
            'mode = "folder"\n[collect]\nparse_timeout = 0',
            "collect -> parse_timeout",
        ),
    ],
)
def test_each_bad_value_is_named(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    problems = problems_for(tmp_path, GOOD.replace(old, new, 1))
    assert any(expected in p for p in problems), problems


def test_problems_carry_the_line_number(tmp_path: Path) -> None:
    text = GOOD.replace('timezone = "Europe/London"', 'timezone = "Nowhere/Land"')
    line = text.splitlines().index('timezone = "Nowhere/Land"') + 1
    (problem,) = problems_for(tmp_path, text)
    assert f"config.toml:{line}:" in problem


def test_password_in_the_file_is_refused(tmp_path: Path) -> None:
    text = GOOD + '\n[smtp]\nusername = "digest"\npassword = "hunter2"\n'
    (problem,) = problems_for(tmp_path, text)
    assert "DIGEST_SMTP__PASSWORD" in problem and "hunter2" not in problem


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD + '\n[smtp]\nusername = "digest"\nport = 587\n', encoding="utf-8")
    monkeypatch.setenv("DIGEST_SMTP__PASSWORD", "s3cret")
    monkeypatch.setenv("DIGEST_SMTP__PORT", "2525")
    monkeypatch.setenv("DIGEST_CONFIG", str(path))
    settings = load_config(path)
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "s3cret"
    assert settings.smtp.port == 2525
    assert "s3cret" not in repr(settings)


def test_smtp_username_without_password_is_an_error(tmp_path: Path) -> None:
    text = GOOD.replace('mode = "folder"', 'mode = "smtp"') + '\n[smtp]\nusername = "digest"\n'
    problems = problems_for(tmp_path, text)
    assert any("DIGEST_SMTP__PASSWORD" in p for p in problems)


def test_check_config_exits_2_on_bad_and_0_on_good(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD, encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 0
    path.write_text(GOOD.replace('"Europe/London"', '"Europe/Lndn"'), encoding="utf-8")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "timezone" in capsys.readouterr().err


def test_missing_config_and_broken_toml_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--config", str(tmp_path / "nope.toml")]) == 2
    (tmp_path / "bad.toml").write_text("[digest\n", encoding="utf-8")
    assert main(["check-config", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert "no such config file" in err and "not valid TOML" in err


def test_the_example_config_is_valid(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config.example.toml", tmp_path / "config.toml")
    settings = load_config(tmp_path / "config.toml")
    assert settings.feeds and settings.subscribers
