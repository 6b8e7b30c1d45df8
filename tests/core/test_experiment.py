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


def test_run_key_changes_when_a_model_is_retrained_into_the_cache(tmp_path, monkeypatch):
    from reliable_saliency.chapter.run import checkpoints_hash

    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    shipped.mkdir()
    (shipped / "m-book-1.json").write_text('{"sha256": "a"}')
    (shipped / "m-book-1.pt").write_bytes(b"weights")
    monkeypatch.setenv("RELIABLE_SALIENCY_CACHE", str(cache))
    first = checkpoints_hash(shipped)
    (cache / "zoo").mkdir(parents=True, exist_ok=True)
    (cache / "zoo" / "m-book-1.pt").write_bytes(b"other weights")  # the zoo loads the cache's copy first
    (cache / "zoo" / "m-book-1.json").write_text('{"sha256": "c"}')
    assert checkpoints_hash(shipped) != first


def _fake_package(root):
    files = {
        "__init__.py": "",
        "core/__init__.py": "from .numbers import add\n",
        "core/numbers.py": "def add(a, b):\n    return a + b\n",
        "core/unused.py": "X = 1\n",
        "explainers/__init__.py": "",
        "explainers/gradient.py": "from ..core import add\n\ndef late():\n    from reliable_saliency.maps import sizes\n",
        "maps/__init__.py": "",
        "maps/sizes.py": "Y = 2\n",
        "arena/__init__.py": "from . import table\n",
        "arena/table.py": "from ..explainers import gradient\n",
    }
    for relative, text in files.items():
        path = root / "reliable_saliency" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "reliable_saliency"


def test_library_hash_of_a_chapter_covers_exactly_what_it_imports(tmp_path):
    """A chapter's key follows every module it loads (relative imports, imports inside functions,
    the packages on the way) and ignores modules it never loads (a later chapter's harness)."""
    package = _fake_package(tmp_path)
    chapter = tmp_path / "chapter.py"
    chapter.write_text("import numpy\nfrom reliable_saliency.explainers.gradient import late\n")
    names = [p.relative_to(package).as_posix() for p in experiment.imported_modules(chapter, package)]
    assert names == ["__init__.py", "core/__init__.py", "core/numbers.py", "explainers/__init__.py",
                     "explainers/gradient.py", "maps/__init__.py", "maps/sizes.py"]
    before = experiment.library_hash(package, imported_by=chapter)
    for relative, counts in (("core/numbers.py", True), ("maps/sizes.py", True), ("core/unused.py", False),
                             ("arena/table.py", False)):
        target = package / relative
        original = target.read_text()
        target.write_text(original + "# changed\n")
        assert (experiment.library_hash(package, imported_by=chapter) != before) is counts, relative
        target.write_text(original)
    (package / "arena" / "extra.py").write_text("Z = 3\n")
    assert experiment.library_hash(package, imported_by=chapter) == before
    assert experiment.library_hash(package) != experiment.library_hash(package, imported_by=chapter)


def test_the_package_imports_its_modules_statically():
    """The import closure reads import statements; a dynamic import would hide a dependency."""
    package = Path(experiment.__file__).resolve().parents[1]
    for path in package.rglob("*.py"):
        text = path.read_text()
        for dynamic in ("import_module(", "__import__(", "importlib"):
            assert dynamic not in text, f"{path.relative_to(package)} uses {dynamic}"


def test_every_chapter_key_follows_its_explainers():
    """Each chapter's closure holds the modules behind its verdicts (the ledger's rule, the kit)."""
    root = Path(experiment.__file__).resolve().parents[3]
    for chapter in sorted((root / "notebooks").glob("[0-9]*.py")):
        names = {p.relative_to(root / "lib" / "reliable_saliency").as_posix()
                 for p in experiment.imported_modules(chapter)}
        assert {"claims/rule.py", "chapter/kit.py", "core/experiment.py"} <= names, chapter.name
        assert "chapter/run.py" not in names  # the runner decides what is accepted, not what is computed
