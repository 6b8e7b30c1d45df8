"""Shipped result stores: packed shards come back byte for byte, the store reads them, nothing else
is trusted (a changed archive, a member outside the store's layout), files in the cache are kept."""

import io
import json
import tarfile

import pytest
import torch

from reliable_saliency.chapter import cli
from reliable_saliency.chapter.shipped_results import ShippedResultsError, pack_results, unpack_results
from reliable_saliency.core.store import ResultStore

KEY = "arena-0123456789ab"


def _computed_store(cache, calls):
    store = ResultStore(cache / "results" / "07_arena", KEY)

    def fn(a, b):
        calls.append((a, b))
        return {"value": torch.arange(a, b, dtype=torch.float64) ** 2}

    return store, store.compute("pair-natural-gradient", fn, 5, params={"p": 1}, shard_size=2, progress=False)


def test_round_trip_is_read_back_by_the_store_without_computing(tmp_path):
    calls = []
    _, first = _computed_store(tmp_path / "cache_a", calls)
    assert len(calls) == 3
    sidecar = pack_results("07_arena", KEY, cache=tmp_path / "cache_a", ship=tmp_path / "ship", note="test run")
    meta = json.loads(sidecar.read_text())
    assert (meta["shards"], meta["steps"], meta["note"]) == (3, 1, "test run")
    assert unpack_results("07_arena", cache=tmp_path / "cache_b", ship=tmp_path / "ship") == 3
    calls.clear()
    _, second = _computed_store(tmp_path / "cache_b", calls)
    assert calls == [] and torch.equal(first["value"], second["value"])
    assert unpack_results("07_arena", cache=tmp_path / "cache_b", ship=tmp_path / "ship") == 0  # kept, not rewritten


def test_partial_store_resumes_and_same_shards_give_the_same_archive(tmp_path):
    calls = []
    _computed_store(tmp_path / "cache", calls)
    pack_results("07_arena", KEY, cache=tmp_path / "cache", ship=tmp_path / "ship")
    archive = next((tmp_path / "ship" / "07_arena" / KEY).glob("pair-natural-gradient-*.tar.xz"))
    one = archive.read_bytes()
    pack_results("07_arena", KEY, cache=tmp_path / "cache", ship=tmp_path / "ship")
    assert one == archive.read_bytes()
    shard = next((tmp_path / "cache").rglob("shard-00001-of-00003.pt"))
    shard.unlink()  # a run stopped before this shard: the next one computes it alone
    pack_results("07_arena", KEY, cache=tmp_path / "cache", ship=tmp_path / "ship")
    assert unpack_results("07_arena", cache=tmp_path / "fresh", ship=tmp_path / "ship") == 2
    calls.clear()
    _computed_store(tmp_path / "fresh", calls)
    assert calls == [(2, 4)]


def test_a_new_key_replaces_the_old_archive(tmp_path):
    _computed_store(tmp_path / "cache", [])
    pack_results("07_arena", KEY, cache=tmp_path / "cache", ship=tmp_path / "ship")
    (tmp_path / "cache" / "results" / "07_arena" / KEY).rename(tmp_path / "cache" / "results" / "07_arena" / "arena-new")
    pack_results("07_arena", "arena-new", cache=tmp_path / "cache", ship=tmp_path / "ship")
    assert sorted(p.name for p in (tmp_path / "ship" / "07_arena").iterdir()) == ["arena-new", "arena-new.json"]


def test_a_changed_archive_is_refused(tmp_path):
    _computed_store(tmp_path / "cache", [])
    pack_results("07_arena", KEY, cache=tmp_path / "cache", ship=tmp_path / "ship")
    archive = next((tmp_path / "ship" / "07_arena" / KEY).glob("*.tar.xz"))
    archive.write_bytes(archive.read_bytes()[:-1] + b"x")
    with pytest.raises(ShippedResultsError, match="does not match the sha256"):
        unpack_results("07_arena", cache=tmp_path / "fresh", ship=tmp_path / "ship")
    assert not (tmp_path / "fresh" / "results").exists()


@pytest.mark.parametrize("name", [f"{KEY}/../../evil.pt", f"{KEY}/step/notes.txt", f"{KEY}/../shard-00000-of-00001.pt",
                                  f"{KEY}/other-step/shard-00000-of-00001.pt",
                                  "arena-other/step/shard-00000-of-00001.pt"])
def test_a_member_outside_the_store_layout_is_refused_before_anything_is_written(tmp_path, name):
    folder = tmp_path / "ship" / "07_arena"
    (folder / KEY).mkdir(parents=True)
    archive = folder / KEY / "step.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        good = tarfile.TarInfo(f"{KEY}/step/shard-00000-of-00001.pt")
        good.size = 1
        tar.addfile(good, io.BytesIO(b"x"))
        bad = tarfile.TarInfo(name)
        bad.size = 1
        tar.addfile(bad, io.BytesIO(b"x"))
    from reliable_saliency.chapter.shipped_results import _sha256

    (folder / f"{KEY}.json").write_text(json.dumps({"chapter": "07_arena", "key": KEY, "sha256": {"step": _sha256(archive)}}))
    with pytest.raises(ShippedResultsError, match="not a shard of step"):
        unpack_results("07_arena", cache=tmp_path / "cache", ship=tmp_path / "ship")
    assert not (tmp_path / "cache").exists()


def test_nothing_shipped_unpacks_nothing_and_bad_names_are_refused(tmp_path):
    assert unpack_results("07_arena", cache=tmp_path, ship=tmp_path / "none") == 0
    with pytest.raises(ValueError, match="chapter must be"):
        unpack_results("../x", cache=tmp_path, ship=tmp_path)
    with pytest.raises(FileNotFoundError, match="no finished shards"):
        pack_results("07_arena", "arena-missing", cache=tmp_path, ship=tmp_path / "ship")


def test_cli_pack_results_names_the_keys_in_the_cache_when_the_key_is_wrong(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RELIABLE_SALIENCY_CACHE", str(tmp_path / "cache"))
    _computed_store(tmp_path / "cache", [])
    assert cli.main(["pack-results", "07_arena", "--key", "arena-wrong"]) == 2
    assert KEY in capsys.readouterr().err
