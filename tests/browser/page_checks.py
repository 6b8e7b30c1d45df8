"""The content checks of the site check that read a page's HTML (as written, or the DOM a browser
built): claim links that land on claim cards, captioned output figures, stderr outputs; and the
counts of the summary table. They work on a small element tree (:class:`Tree`), so they run with or
without a browser. Used by :mod:`check_site`.

The markup they expect is the library's:

- a claim card is ``<div class="claim-card" id="claim-a2-1">`` (``reliable_saliency.claims.cards``);
- a chapter figure is ``<figure class="book-figure" id="figure-2-3"><img ... data-natural-width="N"
  data-text-pt="10.00"><figcaption>...`` (``reliable_saliency.chapter.figures.figure_html``), a
  table ``<figure class="book-table" id="table-2-1"><figcaption>...`` (``chapter.tables``);
- myst-nb writes a cell as ``<div class="cell tag_NAME ...">`` (one ``tag_`` class per cell tag), its
  outputs in ``<div class="cell_output">``, a stderr stream as ``<div class="output stderr ...">``.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

CLAIM_PREFIX = "claim-"
CARD_CLASS = "claim-card"
VERDICTS_PAGE = "verdicts.html"
WARNING_TAG = "tag_expected-warning"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass(frozen=True)
class Problem:
    page: str
    kind: str  # see check_site.KINDS
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


class Node:
    __slots__ = ("tag", "attrs", "parent", "children", "content")

    def __init__(self, tag: str, attrs: dict[str, str], parent: "Node | None"):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.content: list[str | Node] = []  # text and child elements, in document order

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self):
        """This node and every descendant, in document order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def closest(self, test) -> "Node | None":
        node = self
        while node is not None and not test(node):
            node = node.parent
        return node

    def all_text(self) -> str:
        """The text inside, as a reader sees it (buttons, such as the copy button, left out)."""
        return "".join(c if isinstance(c, str) else c.all_text() for c in self.content
                       if isinstance(c, str) or c.tag != "button").strip()

    def describe(self) -> str:
        ident = f"#{self.attrs['id']}" if self.attrs.get("id") else ""
        return self.tag + ident + "".join(f".{c}" for c in sorted(self.classes)[:2])


class Tree(HTMLParser):
    """An element tree from HTML; lenient: an end tag closes up to its open element, stray ones are
    ignored (Sphinx writes well-formed HTML, and a browser's ``outerHTML`` always is)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self._open = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v or "") for k, v in attrs}, self._open[-1])
        self._open[-1].children.append(node)
        self._open[-1].content.append(node)
        if tag not in VOID:
            self._open.append(node)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self._open.pop()

    def handle_endtag(self, tag):
        for depth in range(len(self._open) - 1, 0, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data):
        if self._open[-1].tag not in ("script", "style"):
            self._open[-1].content.append(data)


def _section(node: Node) -> str:
    """Where a node is, for a reader: the id of its nearest enclosing section (or figure)."""
    holder = node.closest(lambda n: n.tag in ("section", "figure") and n.attrs.get("id"))
    return f"in #{holder.attrs['id']}" if holder else "before the first section"


def _image_name(src: str) -> str:
    if src.lower().startswith("data:"):
        return f"{src.partition(',')[0]} ({len(src) * 3 // 4 // 1024} kB)"
    return src.rsplit("/", 1)[-1][:60] or "(no src)"


def in_output(node: Node) -> bool:
    return node.closest(lambda n: "cell_output" in n.classes) is not None


# ---- the checks -------------------------------------------------------------------------------
def claim_link_problems(page: str, tree: Tree, links: list[tuple[str, str, Node | None, bool]]) -> list[Problem]:
    """``links``: (href, fragment, target element or None, whether it points into this page) for each
    internal link of the page whose fragment is a claim anchor (a missing anchor is check_site's
    "missing anchor"). On the verdicts page, each must land on a claim card, and every claim card
    must be the target of one; elsewhere, a link to a claim on the verdicts page must land on its
    card (a chapter's own section "Claim 1: ..." has the id ``claim-1-...``: not a card, not checked)."""
    verdicts = page.rsplit("/", 1)[-1] == VERDICTS_PAGE
    problems = []
    for href, fragment, target, _ in links:
        to_verdicts = href.split("#")[0].rsplit("/", 1)[-1] == VERDICTS_PAGE
        if (verdicts or to_verdicts) and target is not None and CARD_CLASS not in target.classes:
            problems.append(Problem(page, "claim link", f"{href} lands on <{target.describe()}>, not a claim card "
                                                        f"(class {CARD_CLASS!r})"))
    if verdicts:
        linked = {fragment for _, fragment, _, here in links if here}
        for node in tree.root.walk():
            ident = node.attrs.get("id", "")
            if CARD_CLASS in node.classes and ident.startswith(CLAIM_PREFIX) and ident not in linked:
                title = next((n.all_text() for n in node.walk() if n.tag == "h4"), "")[:60]
                problems.append(Problem(page, "claim link", f"claim card #{ident} ({title}) has no link "
                                                            f"to it on the page"))
    return problems


def caption_problems(page: str, tree: Tree) -> list[Problem]:
    """Every image of a notebook output inside a ``<figure>`` with a non-empty ``<figcaption>``."""
    problems = []
    for img in (n for n in tree.root.walk() if n.tag == "img" and in_output(n)):
        figure = img.closest(lambda n: n.tag == "figure")
        captions = [n for n in figure.walk() if n.tag == "figcaption"] if figure else []
        if not figure:
            why = "not in a <figure>"
        elif not any(c.all_text() for c in captions):
            why = "its <figure> has no caption text" if captions else "its <figure> has no <figcaption>"
        else:
            continue
        problems.append(Problem(page, "uncaptioned figure", f"output image {_image_name(img.attrs.get('src', ''))} "
                                                            f"{_section(img)}: {why}"))
    return problems


def stderr_problems(page: str, tree: Tree) -> list[Problem]:
    """An output written to stderr, unless its cell is tagged ``expected-warning``."""
    problems = []
    for node in tree.root.walk():
        if not {"output", "stderr"} <= node.classes:
            continue
        cell = node.closest(lambda n: "cell" in n.classes)
        if cell is not None and WARNING_TAG in cell.classes:
            continue
        text = "\n".join(n.all_text() for n in node.walk() if n.tag == "pre") or node.all_text()
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        shown = repr(lines[0][:100]) + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else "") if lines else "(blank)"
        problems.append(Problem(page, "stderr output", f"{_section(node)}: {shown}; tag the cell "
                                                       f"expected-warning if the reader should see it"))
    return problems


def counts(tree: Tree) -> dict[str, int]:
    """For the summary table: output images, the kit's figures and tables, other tables."""
    nodes = list(tree.root.walk())
    tables = [n for n in nodes if n.tag == "table" and n.closest(lambda m: "bd-article" in m.classes or m.tag == "article")]
    return {"images": sum(n.tag == "img" and in_output(n) for n in nodes),
            "figures": sum(n.tag == "figure" and "book-figure" in n.classes for n in nodes),
            "tables": sum(n.tag == "figure" and "book-table" in n.classes for n in nodes),
            "plain tables": sum(n.closest(lambda m: "book-table" in m.classes) is None for n in tables)}


def element_by_id(tree: Tree) -> dict[str, Node]:
    found = {}
    for node in tree.root.walk():
        if node.attrs.get("id"):
            found.setdefault(node.attrs["id"], node)
    return found
