"""Sphinx extension: the book's "Library reference" page, generated from the library itself.

Listed in ``_config.yml`` beside the verdicts page. At each build it writes ``<book>/api.md`` from
the explainer registry (every explainer, its options with their defaults and types, its
docstring, which states units and shapes), the zoo's recipes (what each model is, per profile), and
the public measures, map functions and attacks with their signatures: nothing on it is kept by
hand, so it cannot drift from the code.
"""

from __future__ import annotations

import html
import inspect
from pathlib import Path

__all__ = ["render_page", "setup"]

COMMON = ("create_graph", "generator", "batch_size")


def _doc(obj, whole: bool = False) -> str:
    text = inspect.cleandoc(obj.__doc__ or "(no docstring)")
    return text if whole else text.split("\n\n")[0].replace("\n", " ")


def _default(parameter: inspect.Parameter) -> str:
    return "required" if parameter.default is inspect.Parameter.empty else repr(parameter.default)


def _annotation(parameter: inspect.Parameter) -> str:
    a = parameter.annotation
    return "" if a is inspect.Parameter.empty else (a if isinstance(a, str) else getattr(a, "__name__", str(a)))


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = lambda row, tag: "".join(f"<{tag} style=\"text-align:left;vertical-align:top;overflow-wrap:anywhere\">"  # noqa: E731
                                     f"{c}</{tag}>" for c in row)
    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return (f'<div style="overflow-x:auto"><table class="api-table" style="font-size:0.9em"><thead><tr>{cells(head, "th")}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")  # scrolls on a phone instead of widening the page


def _explainers() -> str:
    from ..explainers import EXPLAINERS

    parts = []
    for name in sorted(EXPLAINERS):
        function = EXPLAINERS[name]
        options = [p for p in inspect.signature(function).parameters.values()
                   if p.kind is p.KEYWORD_ONLY and p.name not in COMMON]
        typed = any(_annotation(p) for p in options)
        rows = [[f"<code>{html.escape(p.name)}</code>", html.escape(_default(p))]
                + ([html.escape(_annotation(p))] if typed else []) for p in options] or [["(none)", ""]]
        parts.append(f"### `{name}`\n\n{_doc(function)}\n\n`get_explainer({name!r}, **options)`; every explainer "
                     f"also takes `create_graph`, `generator` and `batch_size`.\n\n```{{raw}} html\n"
                     f"{_table(['option', 'default', 'type'][:len(rows[0])], rows)}\n```\n\n"
                     f"```{{dropdown}} The full docstring (units, shapes, what the paper left open)\n"
                     f"{_literal(_doc(function, whole=True))}\n```\n")
    return "\n".join(parts)


def _literal(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _recipes() -> str:
    from ..training.zoo import RECIPES

    rows = []
    for name, recipe in sorted(RECIPES.items()):
        sizes = "; ".join(f"{p}: {recipe.epochs[p]} epochs, "
                          f"{'all' if recipe.train_images.get(p) is None else recipe.train_images[p]} images"
                          for p in recipe.epochs)
        rows.append([f"<code>{name}</code>", html.escape(recipe.description),
                     f"{recipe.architecture}, {recipe.dataset}", html.escape(sizes)])
    return ("`zoo.load_model(name, profile)`; the `book` models of the chapters ship verified in `book/checkpoints`.\n\n"
            f"```{{raw}} html\n{_table(['recipe', 'what it is', 'architecture, data', 'per profile'], rows)}\n```\n")


def _functions(module, names: list[str]) -> str:
    rows = []
    for name in names:
        obj = getattr(module, name)
        if not callable(obj) or inspect.isclass(obj):
            continue
        rows.append([f"<code>{html.escape(module.__name__)}.{name}{html.escape(str(inspect.signature(obj)))}</code>",
                     html.escape(_doc(obj))])
    return f"```{{raw}} html\n{_table(['function', 'what it computes (shapes, units)'], rows)}\n```\n"


def render_page() -> str:
    """The page's Markdown, from the library as imported now."""
    from .. import arena, attacks, evaluation, maps

    return (
        "# Library reference\n\n"
        "Generated from the library at every build (the explainer registry, the zoo's recipes, the public "
        "functions and their docstrings); do not edit it. Conventions: models take normalised input and carry "
        "`model.input_space`; budgets such as `eps=8/255` are in pixel units; tensors in, tensors out, batch "
        "axis first, on the model's device. The verdicts these methods get are on the verdicts page.\n\n"
        f"## Explainers\n\n{_explainers()}\n"
        f"## Models of the zoo\n\n{_recipes()}\n"
        f"## Measures that run the model\n\n{_functions(evaluation, evaluation.__all__)}\n"
        f"## Map measures (no model)\n\n{_functions(maps, maps.__all__)}\n"
        f"## Attacks\n\n{_functions(attacks, attacks.__all__)}\n"
        f"## The arena (every method against every attack)\n\n{_functions(arena, arena.__all__)}\n"
    )


def _write(app, config) -> None:
    page = Path(app.srcdir) / "book" / "api.md"
    text = render_page()
    if not page.exists() or page.read_text() != text:  # unchanged pages keep Sphinx's cache valid
        page.write_text(text)


def setup(app):
    app.connect("config-inited", _write, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
