"""make book resumes: a chapter whose source, library, profile and parameters are unchanged (its run
key) is not executed again; any change executes it, and so does a run without --if-changed."""

import json

import nbformat
import pytest

from reliable_saliency.chapter import run

KIT_FIGURE = '<figure class="book-figure" id="figure-9-1"><img src="data:image/png;base64,iVBOR"><figcaption>c</figcaption></figure>'

SOURCE = '''# %% [markdown]
# # 7. A small chapter

# %% tags=["parameters"]
profile: str = "smoke"  # smoke | book | paper
images: int | None = None  # test images
'''


@pytest.fixture
def chapter(tmp_path, monkeypatch):
    source = tmp_path / "notebooks" / "07_small.py"
    source.parent.mkdir()
    source.write_text(SOURCE)
    notebook = source.with_suffix(".ipynb")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)", metadata={"tags": ["parameters"]})])
    nb.cells[0].source = SOURCE.split('tags=["parameters"]')[1]
    nbformat.write(nb, str(notebook))
    calls = []

    def fake_execute(path, out, parameters, **kw):
        calls.append(parameters)
        done = nbformat.read(path, as_version=4)
        done.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"text/html": KIT_FIGURE})]
        done.metadata["papermill"] = {}
        return done

    import papermill
    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv("RELIABLE_SALIENCY_CLAIMS_DIR", str(tmp_path / "claims"))
    return notebook, tmp_path / "book" / "chapters", calls


def test_an_unchanged_chapter_is_skipped_and_a_changed_one_runs(chapter):
    notebook, out, calls = chapter
    written = run.execute_chapter(notebook, out, "smoke", {"images": "3"}, if_changed=True)
    key = run.recorded_run_key(written)
    assert len(calls) == 1 and key == run.run_key(notebook, "smoke", {"images": 3})
    run.execute_chapter(notebook, out, "smoke", {"images": "3"}, if_changed=True)
    assert len(calls) == 1  # same source, library, profile, parameters: kept
    run.execute_chapter(notebook, out, "smoke", {"images": "4"}, if_changed=True)
    assert len(calls) == 2  # a parameter changed
    notebook.with_suffix(".py").write_text(SOURCE + "\n# %%\nprint(2)\n")
    run.execute_chapter(notebook, out, "smoke", {"images": "4"}, if_changed=True)
    assert len(calls) == 3  # the source changed
    run.execute_chapter(notebook, out, "smoke", {"images": "4"})
    assert len(calls) == 4  # without if_changed it always runs


def test_a_damaged_executed_chapter_has_no_key(tmp_path):
    (tmp_path / "x.ipynb").write_text("{not json")
    assert run.recorded_run_key(tmp_path / "x.ipynb") is None
    (tmp_path / "y.ipynb").write_text(json.dumps({"metadata": {}}))
    assert run.recorded_run_key(tmp_path / "y.ipynb") is None


def test_only_worker_zero_writes_the_chapter(chapter, monkeypatch):
    notebook, out, calls = chapter
    monkeypatch.setenv("RANK", "1")
    written = run.execute_chapter(notebook, out, "smoke", {"images": "3"})
    assert len(calls) == 1 and written.exists() and not out.exists()  # executed, written to a throwaway folder
    monkeypatch.setenv("RANK", "0")
    assert run.execute_chapter(notebook, out, "smoke", {"images": "3"}) == out / notebook.name


def test_a_chapter_that_prints_to_stderr_is_not_published(chapter, monkeypatch):
    import papermill

    notebook, out, calls = chapter

    def executing(*outputs):  # papermill's stand-in: the chapter's first cell shows these outputs
        def execute(path, tmp, parameters, **kw):
            done = nbformat.read(path, as_version=4)
            done.cells[0].outputs = list(outputs)
            done.metadata["papermill"] = {}
            return done
        return execute

    monkeypatch.setattr(papermill, "execute_notebook", executing(
        nbformat.v4.new_output("display_data", data={"text/html": KIT_FIGURE}),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: x\n")))
    with pytest.raises(RuntimeError, match=r"cells \[0\] printed to stderr"):
        run.execute_chapter(notebook, out, "smoke", {"images": "3"})
    assert not (out / notebook.name).exists()
    assert run.stderr_cells({"cells": [{"cell_type": "code", "metadata": {"tags": ["expected-warning"]},
                                         "outputs": [{"output_type": "stream", "name": "stderr"}]}]}) == []

    monkeypatch.setattr(papermill, "execute_notebook", executing(
        nbformat.v4.new_output("display_data", data={"image/png": "iVBOR"})))
    with pytest.raises(RuntimeError, match=r"cells \[0\] show a figure without number or caption"):
        run.execute_chapter(notebook, out, "smoke", {"images": "3"})
    assert not (out / notebook.name).exists()


def test_shipped_results_are_unpacked_before_executing_and_not_for_a_kept_chapter(chapter, tmp_path, monkeypatch):
    import torch

    from reliable_saliency.chapter.shipped_results import pack_results

    notebook, out, calls = chapter
    shard = tmp_path / "made" / "results" / "07_small" / "run-key" / "step-abc" / "shard-00000-of-00001.pt"
    shard.parent.mkdir(parents=True)
    torch.save({"value": torch.ones(2)}, shard)
    pack_results("07_small", "run-key", cache=tmp_path / "made", ship=tmp_path / "ship")
    monkeypatch.setattr(run, "SHIPPED_RESULTS", tmp_path / "ship")
    monkeypatch.setenv("RELIABLE_SALIENCY_CACHE", str(tmp_path / "cache"))
    unpacked = tmp_path / "cache" / "results" / "07_small" / "run-key" / "step-abc" / shard.name
    run.execute_chapter(notebook, out, "smoke", {}, if_changed=True)
    assert len(calls) == 1 and unpacked.read_bytes() == shard.read_bytes()
    unpacked.unlink()
    run.execute_chapter(notebook, out, "smoke", {}, if_changed=True)
    assert len(calls) == 1 and not unpacked.exists()  # up to date: nothing executed, nothing unpacked
