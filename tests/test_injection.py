"""User text stays text: script, HTML, markdown and Streamlit tricks render inert everywhere.

A project whose name, classes and sentences are made of tricks is opened on every page
of app.py. In AppTest, every field Streamlit renders as markdown (bodies, labels, help,
options of radios and segmented controls) is checked twice: it must not hold a trick
verbatim (which would be interpreted), and rendered as CommonMark it must show the trick
literally. In Chromium, no dialog may open and no live element may come from user text.
Also here: CSV exports neutralise formula cells (a hypothesis property), and a scan of
core/ that fails on any SQL built from values instead of ``?`` parameters.
"""

from __future__ import annotations

import ast
import csv
import html
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.export import FORMULA_PREFIXES, export_rows, to_csv
from core.store import Store
from core.store.rows import Label, Prediction
from tests.browser import IDLE, TIMEOUT_MS
from tests.helpers import record_figures

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"
# each holds a word "pwned-..." that must never be the whole text of a live element
TRICKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<iframe src=javascript:alert(1)></iframe>",
    "<a href='javascript:alert(1)'>pwned-a</a>",
    "**pwned-bold**",
    "[pwned-link](javascript:alert(1))",
    "![pwned-img](http://127.0.0.1:9/pwned.png)",
    ":red[pwned-red]",
    "$$pwned-math$$",
    "`pwned-code`",
    "~~pwned-strike~~",
    ":smile: :material/home:",
]
PROJECT_NAME = "<script>alert(1)</script> **pwned-bold** :red[pwned-red]"
CLASSES = ["<img src=x onerror=alert(1)> :red[pwned-red]", "[pwned-link](javascript:alert(1)) $$pwned-math$$"]
POS = [f"good movie {t}" for t in TRICKS]
NEG = [f"bad film {t}" for t in TRICKS]
N_LABELS = 4  # per class


def page_files() -> list[str]:
    """Every page of the app, read from app.py, so a new page is checked too."""
    return re.findall(r'st\.Page\("(pages/[\w/]+\.py)"', APP.read_text())


def populate(db: str, model_dir: str, *, versions: int = 2) -> int:
    """A project made of tricks, with labels and trained model versions."""
    from core.model.loading import load_backbone
    from core.project import retrain

    with Store.open(db) as store:
        project = store.create_project(PROJECT_NAME, CLASSES, settings={
            "backbone": model_dir, "prompt": None, "mode": "layer"})
        ids = store.add_texts(project.id, POS + NEG + ["it was fine " + t for t in TRICKS]).text_ids
        backbone = load_backbone(model_dir)
        for i in range(N_LABELS + 1):
            store.set_label(project.id, ids[i], CLASSES[1])
            store.set_label(project.id, ids[len(POS) + i], CLASSES[0])
            if i >= N_LABELS + 1 - versions:
                retrain(store, project, backbone)
    return project.id


# --- AppTest: every markdown field of every page --------------------------------------------

# element types whose body is shown as plain text, not markdown
_PLAIN_BODIES = {"code", "text", "json", "metric", "exception", "arrow_data_frame", "arrow_table"}


def markdown_fields(node, path: str = "") -> list[tuple[str, str]]:
    """(where, markdown) for every string the element tree renders as markdown."""
    found = []
    proto, kind = getattr(node, "proto", None), getattr(node, "type", "")
    if proto is not None:
        for name in ("body", "label", "help", "placeholder"):
            value = getattr(proto, name, None)
            if isinstance(value, str) and value and not (name == "body" and kind in _PLAIN_BODIES):
                found.append((f"{path}/{kind}.{name}", value))
        if kind in ("radio", "button_group"):  # radio and segmented-control options are markdown
            for option in getattr(proto, "options", []):
                found.append((f"{path}/{kind}.option", getattr(option, "content", option)))
    children = getattr(node, "children", None)
    for key, child in (children.items() if isinstance(children, dict) else []):
        found += markdown_fields(child, f"{path}/{key}")
    return found


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.parts.append(data)


def render(markdown: str) -> tuple[str, list]:
    """CommonMark (raw HTML allowed, as a permissive renderer would) -> (text, tags)."""
    from markdown_it import MarkdownIt

    return _parse_html(MarkdownIt("commonmark").render(markdown))


def unescape_markdown(text: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


_DANGEROUS = {"script", "img", "iframe", "a", "object", "embed", "svg", "math", "form", "input",
              "link", "meta", "base", "style"}


def live_tricks(fields: list[tuple[str, str]]) -> tuple[list[str], int]:
    """Problems with user text in the fields, and how many fields showed user text.

    A field is markdown, except ``html.body`` (st.html), which is HTML: there user text
    must be HTML-escaped and no tag may be one that runs or loads something.
    """
    problems, shown = [], 0
    for where, value in fields:
        is_html = where.endswith("/html.body")
        plain = html.unescape(value) if is_html else unescape_markdown(value)
        hits = [t for t in TRICKS + CLASSES + [PROJECT_NAME] if t in plain]
        if not hits:
            continue
        shown += 1
        text, tags = _parse_html(value) if is_html else render(value)
        for trick in hits:
            if trick in value and not (is_html and "<" not in trick):
                problems.append(f"{where}: {trick!r} reaches the page unescaped: {value[:120]!r}")
            elif trick not in text:
                problems.append(f"{where}: {trick!r} does not render literally: {text[:120]!r}")
        allowed = (lambda tag, attrs: tag not in _DANGEROUS and not any(
            k.startswith("on") or "javascript:" in (v or "") for k, v in attrs.items())) if is_html \
            else (lambda tag, attrs: tag in ("p", "h4", "br", "strong"))
        if not all(allowed(tag, attrs) for tag, attrs in tags):
            problems.append(f"{where}: user text rendered tags {tags}")
    return problems, shown


def _parse_html(value: str) -> tuple[str, list]:
    parser = _Text()
    parser.feed(value)
    return html.unescape("".join(parser.parts)), parser.tags


def test_tricks_render_inert_on_every_page(fresh_workspace, tiny_model_dir, whole_app_reruns,
                                           tmp_path_factory):
    from streamlit.testing.v1 import AppTest

    pid = populate(fresh_workspace, tiny_model_dir)
    views, problems, shown = [], [], 0
    for script in page_files():
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["project_id"] = pid
        at.switch_page(script)
        at.run()
        assert not at.exception, (script, at.exception)
        runs = [(script, at)]
        if script == "pages/label.py":  # the table mode draws the same text differently
            at.segmented_control(key="label_mode").set_value("Table").run()
            runs.append((script + "#table", at))
        for name, state in runs:
            found, n = live_tricks(markdown_fields(state._tree))
            problems += found
            shown += n
            views.append(name)
            assert n > 0, f"{name} showed no user text at all: the check proved nothing"
    assert problems == [], '\n'.join(problems)
    assert len(views) >= 7
    record_figures(tmp_path_factory, "injection_pages",
                   f"{len(TRICKS)} tricks in the project name, classes and sentences; {len(views)} "
                   f"page views, {shown} markdown fields showing user text, all escaped",
                   len(problems))


def test_the_check_catches_live_text():
    from pages._shared import escape_markdown

    bad = [("/markdown.body", "Project: **pwned-bold** <script>alert(1)</script>"),
           ("/button.label", "**pwned\\-bold**"),  # escaped, yet it renders bold
           ("/html.body", "<span>away from <img src=x onerror=alert(1)></span>")]
    problems, shown = live_tricks(bad)
    assert shown == 3 and len(problems) == 6, problems
    every = f"Project: {PROJECT_NAME} {' '.join(TRICKS)}"
    assert live_tricks([("/caption.body", escape_markdown(every)),
                        ("/html.body", f"<span>{html.escape(every)}</span>")]) == ([], 2)


# --- Chromium: no dialog, no live element from user text ------------------------------------

_LIVE = """() => {
  const bad = [];
  for (const s of document.querySelectorAll('script'))
    if (s.textContent.includes('alert(')) bad.push('script: ' + s.textContent.slice(0, 60));
  for (const el of document.querySelectorAll('img[onerror], img[src="x"], img[src*="pwned"], iframe[src^="javascript"], a[href^="javascript"], svg a, .katex'))
    bad.push(el.tagName + ': ' + el.outerHTML.slice(0, 80));
  // a live formatting element wraps just the word; a chart may show a word alone as SVG text
  // (our own heatmap wraps every word, escaped, in a coloured span: those are not live markup)
  for (const el of document.querySelectorAll('body *:not(svg):not(svg *):not(.tenshot-heatmap span)'))
    if (/^(pwned-[a-z]+)$/.test((el.textContent || '').trim())) bad.push('live ' + el.tagName + ': ' + el.outerHTML.slice(0, 80));
  if (document.body.innerText.includes('\\u{1F604}')) bad.push('emoji shortcode rendered');
  return bad;
}"""


@pytest.mark.e2e
def test_tricks_stay_inert_in_the_browser(browser, server, page, tiny_model_dir, tmp_path_factory):
    url, db = server
    populate(db, tiny_model_dir, versions=1)
    titles = re.findall(r'st\.Page\("pages/[\w/]+\.py", title="([^"]+)"', APP.read_text())
    page.goto(url)
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    found, seen = {}, 0
    for title in titles:
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        page.get_by_role("heading", name=title).first.wait_for()
        page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(500)  # widgets hydrate after the script has finished
        found[title] = page.evaluate(_LIVE)
        text = page.locator("body").inner_text()
        seen += sum(t in text for t in TRICKS + CLASSES)
        assert "<script>alert(1)</script>" in text, f"{title}: the project name is not shown literally"
    assert page.dialogs == []
    assert {k: v for k, v in found.items() if v} == {}
    record_figures(tmp_path_factory, "injection_browser",
                   f"{len(titles)} pages in Chromium: 0 dialogs, 0 live script/img/iframe/link/"
                   f"formatting elements; tricks shown literally {seen} times", 0)


# --- CSV exports: formula cells are neutralised ------------------------------------------------

_ANY = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(texts=st.lists(st.tuples(st.sampled_from(["", *FORMULA_PREFIXES, " ", "'"]), _ANY), min_size=1,
                      max_size=6),
       classes=st.lists(st.tuples(st.sampled_from(["", *FORMULA_PREFIXES]), _ANY), min_size=2, max_size=3,
                        unique_by=lambda c: c[0] + c[1]))
def test_csv_exports_never_start_a_cell_with_a_formula(texts, classes):
    classes = [a + b for a, b in classes]
    labelled = [Label(i, a + b, classes[i % len(classes)]) for i, (a, b) in enumerate(texts)]
    preds = [Prediction(100 + i, b + a, classes[0], 0.5, {c: 1 / len(classes) for c in classes})
             for i, (a, b) in enumerate(texts)]
    rows = list(csv.reader(io.StringIO(to_csv(export_rows(labelled, preds), classes).decode("utf-8-sig"),
                                       newline="")))
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c.startswith(FORMULA_PREFIXES)]
    by_id = {row[0]: row for row in rows[1:]}
    for i, (a, b) in enumerate(texts):
        original = a + b
        text = by_id[str(i)][1]
        assert text == ("'" + original if original.startswith(FORMULA_PREFIXES) else original)


# --- SQL: values only ever travel as ? parameters ---------------------------------------------

_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|WHERE|VALUES|JOIN|"
                  r"ORDER BY|GROUP BY|LIMIT)\b")
# reviewed: each is a module constant or a choice between literals, never a value
_SAFE_NAMES = {"_PROJECT_COLUMNS", "_MODEL_COLUMNS", "_JOB_COLUMNS", "_BUSY_TIMEOUT_MS"}
_SAFE_BY_FILE = {("projects.py", "column")}  # `"id" if isinstance(key, int) else "name"`
_PLACEHOLDERS = re.compile(r"""^', '\.join\('\?' \* len\(\w+\)\)$""")


def built_sql(source: str, filename: str) -> list[str]:
    """Interpolations into SQL text that are not on the reviewed safe list."""
    tree = ast.parse(source)
    constants = {t.id for node in tree.body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if _SQL.search(text):
                for v in node.values:
                    if isinstance(v, ast.FormattedValue):
                        expr = ast.unparse(v.value)
                        safe = ((expr in _SAFE_NAMES and expr in constants)
                                or (filename, expr) in _SAFE_BY_FILE or _PLACEHOLDERS.match(expr))
                        if not safe:
                            found.append(f"line {node.lineno}: {{{expr}}} in an SQL f-string")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
            sides = [s for s in (node.left, node.right) if isinstance(s, ast.Constant)
                     and isinstance(s.value, str) and _SQL.search(s.value)]
            if sides:
                found.append(f"line {node.lineno}: SQL built with {type(node.op).__name__}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "format" and isinstance(node.func.value, ast.Constant)
              and isinstance(node.func.value.value, str) and _SQL.search(node.func.value.value)):
            found.append(f"line {node.lineno}: SQL built with str.format")
    return found


def test_the_sql_scan_catches_built_queries():
    bad = ('db.execute(f"SELECT * FROM texts WHERE text = \'{text}\'")\n'
           'db.execute("DELETE FROM texts WHERE id = %s" % text_id)\n'
           'db.execute("SELECT * FROM t WHERE name = " + name)\n'
           'db.execute("UPDATE t SET a = {}".format(a))\n'
           'db.execute(f"SELECT {_PROJECT_COLUMNS} FROM projects")\n')  # not a constant here
    assert len(built_sql(bad, "x.py")) == 5
    good = ('_COLS = "id, name"\n'
            'db.execute(f"SELECT {_COLS} FROM t WHERE id IN ({\', \'.join(\'?\' * len(ids))})", ids)\n')
    assert built_sql(good.replace("_COLS", "_JOB_COLUMNS"), "x.py") == []


def test_every_sql_statement_is_parameterised():
    found = {str(p.relative_to(ROOT)): built_sql(p.read_text(), p.name)
             for p in sorted((ROOT / "core").rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}
    assert any("?" in p.read_text() for p in (ROOT / "core" / "store").glob("*.py"))
