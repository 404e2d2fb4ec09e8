"""The digest HTML in a real browser (Debian's chromium, headless): at 375 px (a phone, with
mobile emulation so the viewport meta applies) and 1024 px (a desktop), light and dark.
Nothing may overflow sideways on the phone and every post title must be visible and
unobscured. Screenshots land in test-output/visual/ (or $DIGEST_TEST_OUTPUT/visual/).

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: NUL-framed
JSON on fds 3 and 4), which needs no extra dependency, opens no port, and waits on the page's
load event rather than on a clock. The `--window-size` route cannot do this: headless chromium
will not make a window narrower than 500 px."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from digest.render import DigestView, make_environment, render_bodies
from tests.golden.sample import fixture_view, golden_view

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = Path(os.environ.get("DIGEST_TEST_OUTPUT", ROOT / "test-output")) / "visual"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
]
# A safety net against a wedged browser, never a wait for something to happen.
DEADLINE = 60.0

# Runs in the page: what overflows the viewport sideways, and for each title whether the
# browser would actually show it there (size, style, and what is drawn at its first line).
MEASURE = """
(() => {
  const width = window.innerWidth;
  const report = {
    width,
    scrollWidth: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
    overflowing: [],
    titles: [],
  };
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > width + 0.5 || r.left < -0.5)) {
      report.overflowing.push(`${el.tagName}.${el.className} ${r.left}..${r.right}`);
    }
  }
  for (const el of document.querySelectorAll('.post-title, .more-post')) {
    el.scrollIntoView({block: 'center'});
    const first = el.getClientRects()[0];
    const style = getComputedStyle(el);
    let hit = null;
    if (first) {
      hit = document.elementFromPoint(first.left + Math.min(first.width / 2, 20),
                                      first.top + first.height / 2);
    }
    report.titles.push({
      text: el.textContent.trim(),
      width: first ? first.width : 0,
      height: first ? first.height : 0,
      left: first ? first.left : 0,
      right: first ? first.right : 0,
      visibility: style.visibility,
      opacity: parseFloat(style.opacity),
      color: style.color,
      unobscured: hit !== null && (el === hit || el.contains(hit) || hit.contains(el)),
    });
  }
  window.scrollTo(0, 0);
  return report;
})()
"""


_TRAMPOLINE = """
import fcntl, os, sys
high = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
os.dup2(high[0], 3)
os.dup2(high[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


class DevTools:
    """Just enough of the DevTools protocol over chromium's debugging pipe."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The protocol wants our pipes on fds 3 and 4 of the browser: a tiny Python trampoline
        # moves them there (first above 9, so neither can clobber the other) and execs it.
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _TRAMPOLINE,
                str(to_browser_r),
                str(from_browser_w),
                executable,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=(to_browser_r, from_browser_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session = ""

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], DEADLINE)
            if not ready:
                raise TimeoutError("chromium sent nothing for 60 s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if kw.get("session", True) and self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def wait_for(self, event: str) -> None:
        while True:
            for n, seen in enumerate(self._events):
                if seen["method"] == event and seen.get("sessionId") == self.session:
                    del self._events[: n + 1]
                    return
            self._events.clear()
            reply = self._read()
            if "method" in reply:
                self._events.append(reply)

    def open_page(self) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.call(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session = attached["sessionId"]
        self.call("Page.enable")
        self.call("Network.enable")
        # A digest must not need the network; if it tried, the picture would lie.
        self.call("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws*://*"]})

    def show(self, path: Path, width: int, *, mobile: bool, dark: bool) -> dict[str, Any]:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": mobile},
        )
        scheme = "dark" if dark else "light"
        self.call(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )
        self.call("Page.navigate", {"url": path.as_uri()})
        self.wait_for("Page.loadEventFired")
        result = self.call("Runtime.evaluate", {"expression": MEASURE, "returnByValue": True})
        report: dict[str, Any] = result["result"]["value"]
        return report

    def screenshot(self, width: int, height: int, target: Path) -> None:
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        target.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", session=False)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); visual checks skipped")
    with tempfile.TemporaryDirectory(prefix="digest-chromium-") as profile:
        tools = DevTools(executable, Path(profile))
        try:
            tools.open_page()
            yield tools
        finally:
            tools.close()


def _titles(view: DigestView) -> list[str]:
    featured = [i.title for group in view.groups for i in group.items]
    return featured + [i.title for i in view.more_listed]


CASES = {
    "golden-by-rank": lambda: golden_view("rank"),
    "golden-by-feed": lambda: golden_view("feed"),
    "lesswrong-20": lambda: fixture_view(20, 5),
}
SIZES = {"phone": (375, True), "desktop": (1024, False)}


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("case", list(CASES))
def test_digest_fits_and_shows_every_title(
    browser: DevTools, case: str, size: str, dark: bool
) -> None:
    """Guards the layout: no sideways scrolling on a phone (long words and URLs wrap), and no
    title hidden, clipped, invisible or covered, in light and dark mode."""
    view = CASES[case]()
    html, _ = render_bodies(make_environment(), view)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    name = f"{case}-{size}-{'dark' if dark else 'light'}"
    page = OUTPUT / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    width, mobile = SIZES[size]

    report = browser.show(page, width, mobile=mobile, dark=dark)
    browser.screenshot(width, int(report["height"]), OUTPUT / f"{name}.png")

    assert report["width"] == width
    assert report["scrollWidth"] <= width, f"page is {report['scrollWidth']} px wide"
    assert report["overflowing"] == []
    shown = report["titles"]
    assert [t["text"] for t in shown] == _titles(view)
    for title in shown:
        assert title["width"] > 0 and title["height"] > 0, title
        assert title["left"] >= 0 and title["right"] <= width, title
        assert title["visibility"] == "visible" and title["opacity"] == 1, title
        assert title["unobscured"], title
    assert (OUTPUT / f"{name}.png").stat().st_size > 1000
