"""The ledger (reliable_saliency.claims.ledger): what a claim refuses, the schema-2 file with every
key a reader or a later rule needs, and load_claims refusing anything else."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reliable_saliency import claims
from reliable_saliency.core import experiment


def run_record(chapter: str = "99_test") -> experiment.Run:
    return experiment.start_run(chapter, experiment.resolve_profile("smoke"), "cpu", "synthetic shapes", 0)


def sample(mean: float, n: int = 60, sd: float = 0.1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, sd, n)


def filled_ledger() -> claims.Ledger:
    ledger = claims.Ledger(run_record(), bootstrap_rounds=2000)
    ledger.test("A1", paper="A", claim="the effect is positive", measured="difference per image",
                parts={"model 1": sample(0.5), "model 2": (sample(0.0, seed=1), sample(1.0, seed=2))},
                caveats=["the method optimises this quantity (by construction)"])
    ledger.record("A2", paper="A", claim="an attack reaches its goal", verdict="inconclusive",
                  measured="attack loss", reason="attack not at full strength", numbers={"steps": 5},
                  qualifier="attack below strength")
    return ledger


@pytest.mark.parametrize("options, message", [
    ({"threshold": math.nan}, "threshold must be a finite number"),
    ({"threshold": "0.5"}, "threshold must be a finite number"),
    ({"threshold": True}, "threshold must be a finite number"),
    ({"direction": "up"}, "direction"),
    ({"combine": "most"}, "combine"),
    ({"min_n": 1}, "min_n"),
    ({"parts": {}}, "at least one"),
    ({"parts": {1: [0.1, 0.2, 0.3], "1": [0.1, 0.2, 0.3]}}, "same label"),
    ({"parts": {"a": ["x", "y"]}}, "must be numbers"),
    ({"caveats": [""]}, "caveat"),
])
def test_bad_claims_are_refused_clearly(options, message):
    ledger = claims.Ledger(run_record(), bootstrap_rounds=1000)
    kwargs = dict(paper="P", claim="c", measured="m", parts={"a": sample(0.2)}) | options
    with pytest.raises((ValueError, TypeError), match=message):
        ledger.test("X", **kwargs)
    with pytest.raises(ValueError, match="claim id"):
        ledger.test("", paper="P", claim="c", measured="m", parts={"a": sample(0.2)})
    with pytest.raises(ValueError, match="bootstrap_rounds"):
        claims.Ledger(run_record(), bootstrap_rounds=0)


def test_record_rules():
    ledger = filled_ledger()
    with pytest.raises(ValueError, match="already"):
        ledger.record("A2", paper="A", claim="again", verdict="holds", measured="x", reason="y")
    with pytest.raises(ValueError, match="verdict must be"):
        ledger.record("A3", paper="A", claim="c", verdict="partly holds", measured="x", reason="y")
    with pytest.raises(ValueError, match="reason"):
        ledger.record("A4", paper="A", claim="c", verdict="holds", measured="x", reason="")


def test_the_file_keeps_every_key_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.CLAIMS_DIR_ENV, str(tmp_path))
    ledger = filled_ledger()
    assert [c.verdict for c in ledger.claims] == ["does not hold", "inconclusive"]
    path = ledger.save()
    document = json.loads(path.read_text())
    assert document["schema"] == claims.SCHEMA and document["provenance"]["profile"] == "smoke"
    tested, recorded = document["claims"]
    assert set(claims.REQUIRED_KEYS) <= set(tested) and set(claims.REQUIRED_KEYS) <= set(recorded)
    assert tested["combine"] == "all" and tested["caveats"] and tested["counts"]["against"] == 1
    part = tested["evidence"]["parts"][1]
    assert set(claims.PART_KEYS) <= set(part) and len(part["values"]) == 60
    effect = sample(0.0, seed=1)[0] - sample(1.0, seed=2)[0]
    assert part["values"][0] == pytest.approx(effect, rel=1e-5)  # the per-image effect, kept for a later rule
    assert recorded["combine"] == "record" and "not a statistical test" in recorded["verdict_text"]
    loaded = claims.load_claims(tmp_path)
    assert [c["chapter"] for c in loaded] == ["99_test", "99_test"]
    html = claims.claims_html(loaded)
    assert "<table" in html and "Caveat" in html and "1 of 2 for" in html
    summary = ledger.summary()
    assert "does not hold (1 of 2 for, 1 against)" in summary and "by construction" in summary


def test_load_claims_refuses_old_or_incomplete_files(tmp_path):
    (tmp_path / "01_x.json").write_text(json.dumps({"claims": [{"id": "X", "verdict": "holds"}]}))
    with pytest.raises(ValueError, match="schema None"):
        claims.load_claims(tmp_path)
    claim = {k: "" for k in claims.REQUIRED_KEYS} | {"verdict": "holds", "evidence": {"parts": [{"label": "a"}]}}
    (tmp_path / "01_x.json").write_text(json.dumps({"schema": claims.SCHEMA, "claims": [claim]}))
    with pytest.raises(ValueError, match="parts.n"):
        claims.load_claims(tmp_path)


def test_ledger_without_a_folder_writes_nothing(monkeypatch):
    monkeypatch.delenv(claims.CLAIMS_DIR_ENV, raising=False)
    ledger = claims.Ledger(run_record())
    ledger.test("B1", paper="B", claim="c", measured="m", parts={"all": sample(1.0)})
    assert ledger.save() is None


def test_an_attack_below_strength_cannot_give_the_verdict_its_failure_would():
    ledger = claims.Ledger(run_record(), bootstrap_rounds=1000)
    claim = ledger.test("R1", paper="P", claim="the method resists the attack", measured="m",
                        parts={"a": sample(0.5)}, below_strength="20 of 1,500 steps", weakness_favours="holds")
    assert claim.verdict == "inconclusive" and "attack below full strength (20 of 1,500 steps)" in claim.verdict_text
    assert "as measured: holds" in claim.qualifier and claim.evidence["parts"][0]["n"] == 60
    claim = ledger.test("R2", paper="P", claim="the method resists the attack", measured="m",
                        parts={"a": sample(-0.5)}, below_strength="20 steps", weakness_favours="holds")
    assert claim.verdict == "does not hold"  # even a weak attack broke it
    with pytest.raises(ValueError, match="weakness_favours"):
        ledger.test("R3", paper="P", claim="c", measured="m", parts={"a": sample(0.5)}, below_strength="x")
