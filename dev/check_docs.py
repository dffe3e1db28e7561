"""`make docs-check`: open the built documentation in headless Chromium and check what a reader sees.

For the connection page: the UI form's screenshot is an ``<img>`` whose file was copied into the
site and is a PNG.  For every operator guide: a code block shows the example DAG's code between
its ``# [START name]`` / ``# [END name]`` markers, as the page's ``literalinclude`` asks.  The
pages are read from the DOM Chromium built (``--dump-dom``), not from the HTML files, so a page
that does not load or render fails the check.  Exits non-zero naming each problem.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The guides whose included examples are checked: docs/operators/*.rst but the index.
OPERATOR_GUIDES = sorted(p for p in (DOCS / "operators").glob("*.rst") if p.stem != "index")
_INCLUDE = re.compile(
    r"^\.\. literalinclude:: (?P<path>\S+)\n(?P<options>(?:[ \t]+:.*\n)+)",
    flags=re.MULTILINE,
)


class _Dom(HTMLParser):
    """The ``<img>`` sources and the text of each ``<pre>`` of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.blocks: list[str] = []
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        elif tag == "pre":
            if self._pre_depth == 0:
                self.blocks.append("")
            self._pre_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre" and self._pre_depth:
            self._pre_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._pre_depth:
            self.blocks[-1] += data


def dump_dom(chromium: str, page: Path) -> str:
    """The DOM of ``page`` after Chromium loaded it, as HTML."""
    profile = tempfile.mkdtemp(prefix="clubcollect-docs-chromium-")
    try:
        done = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--dump-dom",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if done.returncode != 0 or "<body" not in done.stdout:
        raise RuntimeError(f"Chromium could not render {page} (exit {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def parse(html: str) -> _Dom:
    dom = _Dom()
    dom.feed(html)
    return dom


def expected_examples(rst: Path) -> list[tuple[str, str]]:
    """``(marker name, code)`` for each marker-bounded ``literalinclude`` of a guide, as it should render."""
    found = []
    for match in _INCLUDE.finditer(rst.read_text()):
        options = dict(re.findall(r":(\S+):[ \t]*(.*)", match["options"]))
        start, end = options.get("start-after"), options.get("end-before")
        if not start or not end:
            continue
        source = (rst.parent / match["path"]).read_text()
        code = source.split(start, 1)[1].split("\n", 1)[1].split(end, 1)[0]
        code = code.rsplit("\n", 1)[0]  # drop the END marker's own indentation
        found.append((start.strip("[] ").removeprefix("START "), textwrap.dedent(code).strip()))
    return found


def check_connection_page(chromium: str, html_dir: Path) -> list[str]:
    page = html_dir / "connection.html"
    dom = parse(dump_dom(chromium, page))
    shots = [src for src in dom.images if src.endswith("connection-form.png")]
    if not shots:
        return [f"{page}: no <img> of connection-form.png (images: {dom.images})"]
    image = (page.parent / shots[0]).resolve()
    if not image.is_file() or not image.read_bytes().startswith(PNG_SIGNATURE):
        return [f"{page}: the form screenshot {shots[0]} is not a PNG file in the built site"]
    print(f"ok   {page.relative_to(html_dir)}: form screenshot <img src={shots[0]!r}>")
    return []


def check_guide(chromium: str, html_dir: Path, rst: Path) -> list[str]:
    page = html_dir / rst.relative_to(DOCS).with_suffix(".html")
    examples = expected_examples(rst)
    if not examples:
        return [f"{rst}: includes no example between [START]/[END] markers"]
    blocks = [block.strip() for block in parse(dump_dom(chromium, page)).blocks]
    problems = []
    for name, code in examples:
        if any(code in block for block in blocks):
            print(f"ok   {page.relative_to(html_dir)}: example {name} ({len(code.splitlines())} lines)")
        else:
            problems.append(f"{page}: the example {name} is not shown in any code block")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("html_dir", type=Path, help="the built site, e.g. docs/_build/html")
    parser.add_argument("--chromium", default="chromium", help="the Chromium executable")
    args = parser.parse_args(argv)
    if not (args.html_dir / "index.html").is_file():
        print(f"{args.html_dir} holds no built site: run 'make docs' first.", file=sys.stderr)
        return 2
    problems = check_connection_page(args.chromium, args.html_dir)
    for rst in OPERATOR_GUIDES:
        problems += check_guide(args.chromium, args.html_dir, rst)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
