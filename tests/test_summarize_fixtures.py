"""digest.summarize on the real LessWrong posts and the evaluation set built from them."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from digest.sentences import count_words
from digest.summarize import reading_minutes, summarize

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _cases_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("summaries_cases", BENCH / "summaries_cases.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["summaries_cases"] = module
    spec.loader.exec_module(module)
    return module


CASES_MODULE = _cases_module()
CASES = CASES_MODULE.load_cases()
FORBIDDEN = re.compile(
    r"mjx-|[{}<]|Published on|Discuss\W*$|^\W*(?:TL;?DR|Summary|Abstract)\b", re.I
)


def test_evaluation_set_covers_every_fixture_post() -> None:
    posts = CASES_MODULE.load_posts()
    assert len(posts) == 19
    assert {c.name.split("/")[0] for c in CASES} == set(posts)
    assert {c.kind for c in CASES} == {"post", "synthetic", "tldr-kept", "tldr-removed"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_no_markup_css_or_label_text_in_any_summary(case: object) -> None:
    summary = summarize(case.title, case.html)  # type: ignore[attr-defined]
    assert summary
    assert not FORBIDDEN.search(summary), summary


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_summary_length_is_bounded(case: object) -> None:
    summary = summarize(case.title, case.html)  # type: ignore[attr-defined]
    assert count_words(summary) <= 90
    # Only posts whose whole opening is shorter than 40 words may give a shorter summary.
    if count_words(summary) < 40:
        assert case.name.startswith(("hgW6Z6GyzQXrVnvRR",)), summary  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.kind != "tldr-removed"], ids=lambda c: c.name
)
def test_summary_does_not_start_with_labelled_boilerplate(case: object) -> None:
    summary = summarize(case.title, case.html)  # type: ignore[attr-defined]
    assert not CASES_MODULE.starts_with_boilerplate(summary, case), summary


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "tldr-kept"], ids=lambda c: c.name)
def test_author_tldr_becomes_the_summary(case: object) -> None:
    summary = summarize(case.title, case.html)  # type: ignore[attr-defined]
    reference = case.reference  # type: ignore[attr-defined]
    assert reference.startswith(summary.rstrip(".")[:60])


def test_synthetic_boilerplate_does_not_change_the_summary() -> None:
    """Prepending three opening notes to a post leaves its summary as it was."""
    by_post: dict[str, dict[str, str]] = {}
    for case in CASES:
        guid, kind = case.name.split("/")
        by_post.setdefault(guid, {})[kind] = summarize(case.title, case.html)
    same = [g for g, s in by_post.items() if "synthetic" in s and s["synthetic"] == s["post"]]
    total = [g for g, s in by_post.items() if "synthetic" in s]
    assert len(same) == len(total)


def test_reading_minutes_on_fixture_posts() -> None:
    posts = CASES_MODULE.load_posts()
    _, html = posts["GBKXr3AHTVbQqu2HK"]  # a long interview transcript
    assert reading_minutes(html) > 60
    _, html = posts["hgW6Z6GyzQXrVnvRR"]  # a three-paragraph question
    assert reading_minutes(html) == 1
