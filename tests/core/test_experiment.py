"""Run settings (reliable_saliency.core.experiment): profiles, provenance, atomic writes."""

from pathlib import Path

import pytest

from reliable_saliency.core import experiment


def test_profiles_resolve_and_reject_bad_values():
    book = experiment.resolve_profile("book", eval_images=None, mc_samples=7)
    assert book.mc_samples == 7 and book.eval_images == experiment.PROFILES["book"].eval_images
    with pytest.raises(ValueError, match="unknown profile"):
        experiment.resolve_profile("huge")
    with pytest.raises(ValueError, match="unknown profile fields"):
        experiment.resolve_profile("smoke", epochs=3)
    with pytest.raises(ValueError, match="positive int"):
        experiment.resolve_profile("smoke", eval_images=0)


def test_run_record_names_everything_and_refuses_machine_paths():
    profile = experiment.resolve_profile("smoke")
    run = experiment.start_run("00_x", profile, "cpu", "offline CIFAR-10 JPEG copy test (JPEG quality ~75)", 3)
    line = run.line()
    for part in ("profile=smoke", "device=cpu", "data=offline CIFAR-10", "seed=3", "torch", "sources", "git",
                 "threads", "wall time"):
        assert part in line
    assert run.as_dict()["wall_seconds"] >= 0
    for path_like in ("CIFAR-10 (/work/data/cifar)", "/root/data", "~/data", "C:\\data"):
        with pytest.raises(ValueError, match="by kind"):
            experiment.start_run("00_x", profile, "cpu", path_like, 0)
    with pytest.raises(TypeError, match="Profile"):
        experiment.start_run("00_x", "smoke", "cpu", "synthetic", 0)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.txt"

    def failing(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        experiment.atomic_write(target, failing)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_atomic_write_gives_a_normal_file_mode(tmp_path):
    import os

    from reliable_saliency.core.experiment import atomic_write

    path = tmp_path / "out.txt"
    atomic_write(path, lambda tmp: tmp.write_text("x"))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # mkstemp's 0600 would hide it from the group


def test_library_hash_covers_every_subpackage(tmp_path):
    """The run key's library part changes when any file of the package changes, not only core/."""
    import shutil

    package = Path(experiment.__file__).resolve().parents[1]
    copy = tmp_path / "reliable_saliency"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert experiment.library_hash(copy) == experiment.library_hash()
    before = experiment.library_hash(copy)
    for relative in ("explainers/relex.py", "evaluation/reliability.py", "attacks/ghorbani.py", "claims/__init__.py"):
        target = copy / relative
        original = target.read_text()
        target.write_text(original + "\n# changed\n")
        assert experiment.library_hash(copy) != before, relative
        target.write_text(original)
    assert experiment.library_hash(copy) == before


def test_run_key_changes_with_the_shipped_checkpoints(tmp_path):
    from reliable_saliency.chapter.run import checkpoints_hash

    (tmp_path / "m-book-1.json").write_text('{"sha256": "a"}')
    first = checkpoints_hash(tmp_path)
    (tmp_path / "m-book-1.json").write_text('{"sha256": "b"}')
    assert checkpoints_hash(tmp_path) != first
    assert checkpoints_hash(tmp_path / "missing") == checkpoints_hash(tmp_path / "also-missing")
