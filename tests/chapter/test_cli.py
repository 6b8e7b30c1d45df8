"""The book's command line: list, a chapter's parameters, and refusal before anything executes."""

import pytest

from reliable_saliency.chapter import cli, run

SOURCE = '''# %% [markdown]
# # 7. A small chapter

# %% tags=["parameters"]
profile: str = "smoke"  # smoke | book | paper
images: int | None = None  # test images
'''


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    (tmp_path / "07_small.py").write_text(SOURCE)
    (tmp_path / "08_other_small.py").write_text(SOURCE.replace("7. A small", "8. Another small"))
    calls = []
    monkeypatch.setattr(run, "execute_chapter", lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(cli, "_paired_notebook", lambda source: source)
    return tmp_path, calls


def test_list_shows_chapters_and_titles(notebooks, capsys):
    folder, _ = notebooks
    assert cli.main(["--notebooks", str(folder), "list"]) == 0
    out = capsys.readouterr().out
    assert "07_small" in out and "7. A small chapter" in out and "08_other_small" in out


def test_run_help_shows_the_chapter_parameters(notebooks, capsys):
    folder, calls = notebooks
    assert cli.main(["--notebooks", str(folder), "run", "7", "--help"]) == 0
    out = capsys.readouterr().out
    assert "images" in out and "int | None" in out and "test images" in out and not calls
    assert "default 'smoke'" not in out and "default book" in out  # the profile is --profile's, default book


@pytest.mark.parametrize("argv, message", [
    (["run", "07_small", "-p", "imgs", "5"], "has no parameter 'imgs'"),
    (["run", "07_small", "-p", "images", "-5"], "must not be negative"),
    (["run", "07_small", "-p", "profile", "book"], "--profile"),
    (["run", "07_small", "--profile", "huge"], "--profile must be one of"),
    (["run", "small"], "no single chapter matches 'small'"),
    (["run", "42"], "no single chapter matches '42'"),
    (["run", "07_small", "--workers", "0"], "--workers must be at least 1"),
])
def test_bad_runs_fail_before_executing(notebooks, capsys, argv, message):
    folder, calls = notebooks
    assert cli.main(["--notebooks", str(folder), *argv]) == 2
    assert message in capsys.readouterr().err and not calls


def test_a_good_run_executes_with_the_checked_overrides(notebooks):
    folder, calls = notebooks
    assert cli.main(["--notebooks", str(folder), "run", "other", "--profile", "smoke", "-p", "images", "3"]) == 0
    (source, output, profile, overrides), _ = calls[0]
    assert source.name == "08_other_small.py" and profile == "smoke" and overrides == {"images": "3"}
    assert output == cli.PROJECT_ROOT / "book" / "chapters"


def test_output_is_a_book_folder_written_only_inside(notebooks, tmp_path, capsys):
    folder, calls = notebooks
    assert cli.main(["--notebooks", str(folder), "run", "7", "--output", str(tmp_path / "mine")]) == 0
    output = calls[0][0][1]
    assert output == tmp_path / "mine" / "chapters" and run.claims_dir_for(output) == tmp_path / "mine" / "claims"
    (tmp_path / "file").write_text("x")
    assert cli.main(["--notebooks", str(folder), "run", "7", "--output", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli.main(["--notebooks", str(folder), "run", "7", "--output", str(tmp_path / "file" / "below")]) == 2
    assert "is a file" in capsys.readouterr().err and len(calls) == 1


def test_workers_start_torchrun_with_the_same_command(notebooks, monkeypatch):
    folder, calls = notebooks
    started = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(cli.subprocess, "run", lambda command: started.append(command) or type("R", (), {"returncode": 0}))
    argv = ["--notebooks", str(folder), "run", "7", "--workers", "2", "--profile", "smoke"]
    assert cli.main(argv) == 0 and not calls
    command = started[0]
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert command[5:] == ["-m", "reliable_saliency", "--notebooks", str(folder), "run", "7", "--profile", "smoke"]
    monkeypatch.setenv("WORLD_SIZE", "2")  # inside torchrun: each worker executes the chapter itself
    assert cli.main(argv) == 0 and len(calls) == 1 and len(started) == 1


def test_workers_are_never_guessed(notebooks, monkeypatch, capsys):
    folder, calls = notebooks
    with pytest.raises(SystemExit):  # no abbreviations: "--work 2" is not "--workers 2"
        cli.main(["--notebooks", str(folder), "run", "7", "--work", "2"])
    monkeypatch.setenv("WORLD_SIZE", "1")  # a torchrun group of one cannot hold 2 workers
    assert cli.main(["--notebooks", str(folder), "run", "7", "--workers", "2"]) == 2
    assert "inside a torchrun group of 1" in capsys.readouterr().err and not calls
