"""Where a cold `rank()` of a 500-post digest spends its time, and what would be left if parts
of it cost nothing: the measurements behind the "under 50 ms" ranking target.

Run from the repository root: ``PYTHONPATH=. python bench/rank_floor.py [--repeats N]``

`bench/rank.py` times `digest.rank.rank` on its 500-post digest cold (the first call in a fresh
process), with the posts uncached (every word already analysed by this process) and warm (every
post's features cached). This script breaks a cold call down. N times, it starts two fresh
processes; each builds that digest (not timed). The first times

1. a cold `rank()`: the first call in the process, every cache empty;

the second times the per-post steps of the same call one at a time, as `rank._analyse` runs
them, and then two `rank()` calls:

2. reading each post's HTML opening (`textindex.opening_span`);
3. tokenizing and stemming the openings, every word and chunk new to the process
   (`textindex.term_seq`), and the stemmer alone on the new words it found (`textindex._stem`);
4. the same for freshly split openings, every chunk known (what tokenizing costs once words
   and chunks are cached);
5. the alternative of one regular expression over each lower-cased opening, words known
   (`textindex.words` on the joined opening, then the per-word term lookup);
6. the de-duplication records (`dedup.Record`: URL key, title analyses, shingles, sketch);
7. `rank()` with every word known and no post's features cached: the cold call as it would be
   with a tokenizer and stemmer that cost nothing on first sight;
8. `rank()` again, every post's features cached: the cold call as it would be with per-post
   analysis that cost nothing (what remains is scoring, clustering, diversity ordering and
   building the result).

Medians over the N processes, wall-clock milliseconds (the processes are single-threaded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from itertools import chain

from bench.rank import FIXTURES, load_posts, timing_inputs
from digest import rank as rank_mod
from digest.dedup import Record
from digest.textindex import _TERM_OF, STOPWORDS, _stem, opening_span, term_seq, words

CHILD_FLAG = "--one-process"
STEPS = (
    ("cold", "rank(), cold (first call in a fresh process)"),
    ("html", "reading the HTML openings"),
    ("tokens_new", "tokenizing + stemming, words new"),
    ("stems", "  of which the stemming of those new words"),
    ("tokens_known", "tokenizing, chunks and words known"),
    ("regex_known", "the same with one re.findall per opening"),
    ("records", "de-duplication records"),
    ("words_known", "rank(), words known, posts' features not"),
    ("posts_known", "rank(), posts' features known"),
)


class _Clock:
    """Milliseconds of each step, by name."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self, step: str) -> None:
        self.times[step] = (time.perf_counter() - self._t0) * 1000


def _regex_terms(openings: list[list[str]]) -> list[list[str]]:
    """Terms of each opening through one regular expression over its whole text (`words`)."""
    get = _TERM_OF.__getitem__
    return [list(chain.from_iterable(map(get, words(" ".join(chunks))))) for chunks in openings]


def one_process(what: str) -> None:
    """Child: build the digest (untimed), time the steps of `what` and print them as JSON."""
    rank_mod.set_semantic(False)
    spec = json.loads((FIXTURES / "ranking" / "relevance.json").read_text())
    t = timing_inputs(load_posts(), spec)
    interests = list(t.interests)
    clock = _Clock()
    if what == "cold":
        clock.start()
        rank_mod.rank(interests, t.big)
        clock.stop("cold")
    else:
        contents = [p["content"] for p in t.big]
        clock.start()
        openings = [opening_span(c)[0] for c in contents]
        clock.stop("html")
        clock.start()
        bodies = [term_seq(o) for o in openings]
        clock.stop("tokens_new")
        # The stemmer alone on the same words (copies, so that no hash is cached yet).
        new_words = [(" " + w)[1:] for w in _TERM_OF if w not in STOPWORDS]
        clock.start()
        for word in new_words:
            _stem(word)
        clock.stop("stems")
        again = [opening_span(c)[0] for c in contents]  # new chunk strings, not yet hashed
        clock.start()
        known = [term_seq(o) for o in again]
        clock.stop("tokens_known")
        again = [opening_span(c)[0] for c in contents]
        clock.start()
        by_regex = _regex_terms(again)
        clock.stop("regex_known")
        if not by_regex == known == bodies:
            raise SystemExit("the tokenizers disagree")
        leads = [" ".join(o[: rank_mod.SEMANTIC_WORDS]) for o in openings]
        clock.start()
        for c, lead, body in zip(t.cands, leads, bodies, strict=True):
            Record(url=c.url, title=c.title, published=c.published, text=lead, tokens=body)
        clock.stop("records")
        for step in ("words_known", "posts_known"):
            clock.start()
            rank_mod.rank(interests, t.big)
            clock.stop(step)
    print(json.dumps(clock.times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=11, help="fresh processes per kind")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {key: [] for key, _ in STEPS}
    for _ in range(args.repeats):
        for what in ("cold", "steps"):
            out = subprocess.run(
                [sys.executable, __file__, CHILD_FLAG, what],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for key, ms in json.loads(out).items():
                rows[key].append(ms)
    med = {key: statistics.median(v) for key, v in rows.items()}
    print(f"500-post digest, 6 interests, semantic extra off; median of {args.repeats} fresh")
    print("processes each, wall-clock ms:")
    for key, label in STEPS:
        print(f"  {label:44s} {med[key]:6.1f}")
    print("what a cold call would cost if a part of it were free:")
    print(f"  a tokenizer and stemmer costing nothing on first sight: {med['words_known']:.1f} ms")
    print(f"  per-post analysis costing nothing:                       {med['posts_known']:.1f} ms")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == CHILD_FLAG:
        one_process(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
