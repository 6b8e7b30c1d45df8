"""Chapter helpers: image selection, figures, the verdicts page, the nbval capture plugin's checks."""

from __future__ import annotations


import matplotlib
import pytest
import torch
from torch import nn

from reliable_saliency.chapter import figures, verdicts_page
from reliable_saliency.evaluation import selection
from reliable_saliency.chapter.run import claims_dir_for, count_figures, uncaptioned_cells
from reliable_saliency.core.inputs import SYNTHETIC
from reliable_saliency.data import make_synthetic

matplotlib.use("Agg")


class ByBrightness(nn.Module):
    """Predicts class 0 for dark images and 1 for bright ones, so correctness is known."""

    input_space = SYNTHETIC

    def forward(self, x):
        mean = x.mean((1, 2, 3))
        return torch.stack([-mean, mean], 1)


def two_class_set(n: int = 40):
    images = make_synthetic(n, size=8, object_size=(2, 4), seed=0)
    images.labels = (images.images.float().mean((1, 2, 3)) > images.images.float().mean()).long()
    images.labels[::3] = 1 - images.labels[::3]  # a third are wrong for ByBrightness
    return images


def test_correctly_classified_is_seeded_correct_and_stops_early():
    images = two_class_set()
    model = ByBrightness()
    chosen = selection.correctly_classified(model, images, 10, seed=3, batch_size=7)
    assert len(chosen) == 10
    assert torch.equal(model(chosen.normalized()).argmax(1), chosen.labels)
    again = selection.correctly_classified(model, images, 10, seed=3, batch_size=40)
    assert torch.equal(again.images, chosen.images)  # chunking does not change the choice
    other = selection.correctly_classified(model, images, 10, seed=4)
    assert not torch.equal(other.images, chosen.images)


def test_correctly_classified_by_several_models_and_too_many():
    images = two_class_set()
    class AlwaysOne(nn.Module):
        input_space = SYNTHETIC

        def forward(self, x):
            return torch.tensor([0.0, 1.0]).expand(len(x), 2)

    both = selection.correctly_classified([ByBrightness(), AlwaysOne()], images, 5, seed=0)
    assert len(both) == 5 and bool((both.labels == 1).all())
    assert torch.equal(ByBrightness()(both.normalized()).argmax(1), both.labels)
    with pytest.raises(ValueError, match="only .* classified correctly"):
        selection.correctly_classified(ByBrightness(), images, 40, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        selection.correctly_classified(ByBrightness(), images, 0, seed=0)


def test_map_grid_and_top_pixels():
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    top = figures.top_pixels(maps, 5)
    assert top.shape == maps.shape and top.flatten(1).sum(1).tolist() == [5, 5, 5]
    assert bool((maps[top].view(3, 5).min(1).values >= maps.masked_fill(top, -1).flatten(1).max(1).values).all())
    fig = figures.map_grid({"image": torch.rand(3, 3, 8, 8), "map": maps}, 5, title="t", marks={"map": top})
    assert len(fig.axes) == 2 * 3  # count capped at the 3 images
    with pytest.raises(ValueError, match="image"):
        figures.map_grid({"bad": torch.rand(3, 2, 8, 8)}, 2)


def test_verdicts_page_from_claims_files(tmp_path):
    from reliable_saliency.claims import Ledger
    from reliable_saliency.core import experiment

    claims_dir = tmp_path / "claims"
    assert "No chapter" in verdicts_page.render_page(claims_dir)
    for chapter in ("00_data_and_models", "02_relex"):
        run = experiment.start_run(chapter, experiment.resolve_profile("book"), "cpu", "synthetic shapes", 0)
        ledger = Ledger(run, bootstrap_rounds=1000)
        ledger.record("A1", paper="A", claim="x <b> y", verdict="holds", measured="m", reason="r")
        ledger.test("A2", paper="A", claim="z", measured="m", parts={"p": [0.5, 0.6, 0.4] * 12})
        if chapter == "02_relex":
            ledger.bottom_line("RelEx retrieves the *clean* class, by construction; 2 * 3 <b>.")
        ledger.save(claims_dir)
    page = verdicts_page.render_page(claims_dir)
    assert "## The five papers" in page and "## The book's own checks" in page
    # the chapter's bottom line, its Markdown emphasis as HTML (the card is raw HTML), the rest escaped
    assert "RelEx retrieves the <em>clean</em> class, by construction; 2 * 3 &lt;b&gt;." in page
    assert 'href="verdicts.html#claim-a1"' in page  # and beside it every claim, linked to its card
    assert "Not executed at any profile yet" in page  # chapters 3 to 6 have no claims here
    assert "x &lt;b&gt; y" in page  # claim text is escaped
    assert 'id="claim-a2"' in page and "<svg" in page  # a card per claim, with its forest plot
    assert 'href="chapters/02_relex.html"' in page and "02_relex.html#claim-a1" not in page  # no twin card yet
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "02_relex.ipynb").write_text('{"x": "<div class=\\"claim-card\\" id=\\"claim-a1\\">"}')
    assert 'href="chapters/02_relex.html#claim-a1"' in verdicts_page.render_page(claims_dir)
    assert "Re-tested in" not in verdicts_page.render_page(claims_dir)  # no arena run yet
    run = experiment.start_run("07_arena", experiment.resolve_profile("book"), "cpu", "CIFAR-10", 0)
    ledger = Ledger(run, bootstrap_rounds=1000)
    ledger.record("A7.1", paper="A", claim="retested", verdict="does not hold", measured="m", reason="r")
    ledger.record("B7.1", paper="B", claim="retested", verdict="holds", measured="m", reason="r")
    ledger.save(claims_dir)
    page = verdicts_page.render_page(claims_dir)
    titles = verdicts_page.PAPER_CHAPTERS
    relex_card, dance_card = (page.split(f"<h4>{title}")[1].split("</div>")[0] for title in (
        f'<a href="chapters/02_relex.html">{titles["02_relex"]}', titles["03_dance"]))
    # each paper's card names the arena's re-tests of its claims, an unexecuted chapter's too
    assert 'Re-tested in <a href="chapters/07_arena.html">the arena</a>' in relex_card
    assert 'does not hold: <a href="verdicts.html#claim-a7-1">A7.1</a>' in relex_card and "B7.1" not in relex_card
    assert "Not executed at any profile yet." in dance_card
    assert 'holds: <a href="verdicts.html#claim-b7-1">B7.1</a>' in dance_card


def test_run_helpers():
    assert claims_dir_for(__import__("pathlib").Path("/a/book/chapters")).as_posix() == "/a/book/claims"
    notebook = {"cells": [{"outputs": [{"data": {"image/png": "..."}}]}, {"outputs": []}]}
    assert count_figures(notebook) == 1
    kit_figure = {"data": {"text/html": ['<figure class="book-figure" id="figure-1-1">', "</figure>"]}}
    notebook["cells"].append({"outputs": [kit_figure, {"data": {"text/html": "<table></table>"}}]})
    assert count_figures(notebook) == 2
    for cell in notebook["cells"]:
        cell["cell_type"] = "code"
    assert uncaptioned_cells(notebook) == [0]  # the bare PNG, not the kit's figure


def test_publishable_folds_code_and_removes_default_parameters():
    from reliable_saliency.chapter.run import publishable

    notebook = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}},
        {"cell_type": "code", "metadata": {}},
        {"cell_type": "code", "metadata": {"tags": ["show-input"]}},
        {"cell_type": "markdown", "metadata": {}},
    ]}
    publishable(notebook)
    publishable(notebook)  # idempotent
    tags = [c["metadata"].get("tags", []) for c in notebook["cells"]]
    assert tags == [["parameters", "remove-cell"], ["injected-parameters"], ["hide-input"], ["show-input"], []]


def test_publishable_names_a_warning_cell_not_the_kernel_file():
    from reliable_saliency.chapter.run import publishable

    warning = "/tmp/ipykernel_1727/1293102669.py:19: UserWarning: DANCE: 1 of 600 decoys left out\n"
    notebook = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stderr", "text": [warning, "  pair.append(...)\n"]},
        {"output_type": "stream", "name": "stdout", "text": "data under /data/cifar10 stays as printed\n"}]}]}
    publishable(notebook)
    outputs = notebook["cells"][0]["outputs"]
    assert outputs[0]["text"] == "<cell>:19: UserWarning: DANCE: 1 of 600 decoys left out\n  pair.append(...)\n"
    assert outputs[1]["text"] == "data under /data/cifar10 stays as printed\n"


def test_rerun_box_names_command_hardware_and_checkpoints(monkeypatch):
    from reliable_saliency.chapter.rerun import RERUN_COMMAND_ENV, rerun_box
    from reliable_saliency.core import experiment

    run = experiment.start_run("02_x", experiment.resolve_profile("book"), "cpu", "synthetic shapes", 1)
    model = nn.Linear(2, 2)
    model.zoo_info = {"sha256": "ab" * 32}
    monkeypatch.setenv(RERUN_COMMAND_ENV, 'make chapter NB=02_x PROFILE=book ARGS="-p seed 1"')
    box = rerun_box(run, {"lenet": model, "other": nn.Linear(1, 1)}).data
    for part in ("Rerun this chapter", "NB=02_x PROFILE=book", "-p seed 1", "torch threads", "sha256 abababab",
                 "not from the zoo", "seed 1"):
        assert part in box
    monkeypatch.delenv(RERUN_COMMAND_ENV)
    assert "make chapter NB=02_x PROFILE=book" in rerun_box(run).data


def test_library_reference_page_lists_what_the_library_has():
    from reliable_saliency.chapter import api_page
    from reliable_saliency.explainers import EXPLAINERS
    from reliable_saliency.training.zoo import RECIPES

    page = api_page.render_page()
    assert all(f"### `{name}`" in page for name in EXPLAINERS)
    assert all(f"<code>{name}</code>" in page for name in RECIPES)
    assert "<code>iterations</code>" in page and "<code>samples</code>" in page  # RelEx's options
    assert "reliable_saliency.evaluation.deletion_auc(" in page and "reliable_saliency.maps.spearman(" in page
