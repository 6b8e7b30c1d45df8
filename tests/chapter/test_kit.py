"""The chapter kit (reliable_saliency.chapter.kit): sizes by profile with their checks, and one setup."""

from __future__ import annotations

import pytest

from reliable_saliency.chapter import kit

SIZES = {"smoke": dict(main_images=6, sweep_images=4), "book": dict(main_images=200, sweep_images=50)}


def test_sizes_come_from_the_profile_unless_given():
    S = kit.resolve_sizes(SIZES, "book", {"main_images": None, "sweep_images": 10})
    assert (S.main_images, S.sweep_images) == (200, 10)
    with pytest.raises(ValueError, match="ask for at most 6"):
        kit.resolve_sizes(SIZES, "smoke", {"sweep_images": 9}, within={"sweep_images": "main_images"})
    with pytest.raises(ValueError, match="no sizes for profile 'paper'"):
        kit.resolve_sizes(SIZES, "paper", {})
    with pytest.raises(ValueError, match="every profile must set the same sizes"):
        kit.resolve_sizes({"smoke": {"a": 1}, "book": {"b": 2}}, "smoke", {})


def test_setup_starts_the_run_and_the_ledger(tiny_cifar_root, isolated_cache):
    namespace = {"profile": "smoke", "device": "cpu", "seed": 3, "eval_images": 7, "main_images": None,
                 "sweep_images": None}
    ch = kit.setup("99_test", namespace, SIZES, within={"sweep_images": "main_images"}, show=False)
    assert ch.settings.eval_images == 7 and ch.S.main_images == 6 and ch.seed == 3
    assert ch.run.chapter == "99_test" and ch.ledger.run is ch.run and len(ch.data) > 0
    a, b = ch.generator(), ch.generator()
    assert a.initial_seed() == b.initial_seed() == 3


def test_the_store_key_follows_the_runner_or_the_run(tiny_cifar_root, isolated_cache, monkeypatch):
    from reliable_saliency.chapter.rerun import RUN_KEY_ENV

    monkeypatch.delenv(RUN_KEY_ENV, raising=False)
    namespace = {"profile": "smoke", "device": "cpu", "seed": 3, "main_images": None, "sweep_images": None}
    first = kit.setup("99_test", namespace, SIZES, show=False)
    assert first.store.folder.parent == isolated_cache / "results" / "99_test"
    again = kit.setup("99_test", namespace, SIZES, show=False)
    other = kit.setup("99_test", namespace | {"sweep_images": 2}, SIZES, show=False)
    assert again.store.folder == first.store.folder != other.store.folder
    monkeypatch.setenv(RUN_KEY_ENV, "abc123")
    assert kit.setup("99_test", namespace, SIZES, show=False).store.folder.name == "abc123"
