"""Summary quality and speed on the evaluation set, against two baselines.

Run: PYTHONPATH=. python bench/summaries.py

Baselines get the post's text as a plain HTML-to-text stripper gives it (every text node
except <style>/<script>, blocks separated by spaces, feed furniture left in):
- lead-3: its first three sentences (split with digest.sentences);
- first-300-chars: its first 300 characters, as tt-rss does.
"lead-3 (cleaned)" is an extra row: lead-3 over our cleaned text (furniture, labels and
captions gone), to show how much of the gain is cleaning and how much is choosing.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rouge_score import rouge_scorer
from summaries_cases import Case, load_cases, starts_with_boilerplate

from digest.sentences import split_sentences
from digest.summarize import _body, summarize

REPEAT = 5
_FORBIDDEN = re.compile(
    r"mjx-|[{<]|published on|discuss\W*$|^\W*(?:tl;?dr|summary|abstract)\b", re.I
)


class _Stripper(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip = max(0, self._skip - 1)
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def stripped(html: str) -> str:
    parser = _Stripper()
    parser.feed(html)
    parser.close()
    return re.sub(r"\s+", " ", "".join(parser.parts)).strip()


def lead3(title: str, html: str) -> str:
    return " ".join(split_sentences(stripped(html))[:3])


def first300(title: str, html: str) -> str:
    text = stripped(html)
    return text[:300] + ("…" if len(text) > 300 else "")


def lead3_cleaned(title: str, html: str) -> str:
    sentences = [s for b in _body(html) if b.kind != "heading" for s in split_sentences(b.text)]
    return " ".join(sentences[:3])


def ours(title: str, html: str) -> str:
    return summarize(title, html)


def evaluate(name: str, system: Callable[[str, str], str], cases: list[Case]) -> dict[str, object]:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    summaries = [system(c.title, c.html) for c in cases]
    start = time.perf_counter()
    for _ in range(REPEAT):
        for c in cases:
            system(c.title, c.html)
    ms = (time.perf_counter() - start) * 1000 / (REPEAT * len(cases))
    scores = [scorer.score(c.reference, s) for c, s in zip(cases, summaries, strict=True)]
    by_kind: dict[str, list[float]] = {}
    for c, sc in zip(cases, scores, strict=True):
        by_kind.setdefault(c.kind, []).append(sc["rougeL"].fmeasure)
    return {
        "system": name,
        "r1": statistics.mean(s["rouge1"].fmeasure for s in scores),
        "r2": statistics.mean(s["rouge2"].fmeasure for s in scores),
        "rl": statistics.mean(s["rougeL"].fmeasure for s in scores),
        "boiler": sum(starts_with_boilerplate(s, c) for c, s in zip(cases, summaries, strict=True))
        / len(cases),
        "dirty": sum(bool(_FORBIDDEN.search(s)) for s in summaries),
        "ms": ms,
        "by_kind": {k: statistics.mean(v) for k, v in by_kind.items()},
        "summaries": summaries,
    }


def main() -> None:
    cases = load_cases()
    systems: list[tuple[str, Callable[[str, str], str]]] = [
        ("ours", ours),
        ("lead-3", lead3),
        ("first-300-chars", first300),
        ("lead-3 (cleaned)", lead3_cleaned),
    ]
    results = [evaluate(name, fn, cases) for name, fn in systems]
    kinds = sorted({c.kind for c in cases})
    print(
        f"{len(cases)} cases: " + ", ".join(f"{k} {sum(c.kind == k for c in cases)}" for k in kinds)
    )
    print()
    header = (
        f"{'system':<18}{'ROUGE-1':>9}{'ROUGE-2':>9}{'ROUGE-L':>9}"
        f"{'boiler-start':>14}{'markup/label':>14}{'ms/post':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['system']!s:<18}{r['r1']:>9.3f}{r['r2']:>9.3f}{r['rl']:>9.3f}"
            f"{r['boiler']:>14.0%}{r['dirty']!s:>14}{r['ms']:>9.2f}"
        )
    print()
    print("ROUGE-L F1 by case kind")
    print(f"{'system':<18}" + "".join(f"{k:>14}" for k in kinds))
    for r in results:
        by_kind = r["by_kind"]
        assert isinstance(by_kind, dict)
        print(f"{r['system']!s:<18}" + "".join(f"{by_kind[k]:>14.3f}" for k in kinds))
    if "-v" in sys.argv:
        print()
        summaries = results[0]["summaries"]
        assert isinstance(summaries, list)
        for c, s in zip(cases, summaries, strict=True):
            print(f"== {c.name}\n{s}\n")


if __name__ == "__main__":
    main()
