"""Claim cards (reliable_saliency.claims.cards): anchors, the forest plot's parts and lines."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from reliable_saliency import claims
from reliable_saliency.core import experiment


def ledger() -> claims.Ledger:
    run = experiment.start_run("99_test", experiment.resolve_profile("smoke"), "cpu", "synthetic shapes", 0)
    return claims.Ledger(run, bootstrap_rounds=1000)


def test_anchor_is_stable_and_url_safe():
    assert claims.anchor("A2.1") == "claim-a2-1" and claims.anchor("C4.10") == "claim-c4-10"


def test_a_card_shows_parts_lines_and_greys_what_cannot_decide():
    rng = np.random.default_rng(0)
    led = ledger()
    claim = led.test("X1", paper="P", claim="c <i>", measured="m", null=0.25, null_reason="chance",
                     parts={"big": rng.normal(0.6, 0.1, 60), "small": rng.normal(0.6, 0.1, 5)},
                     caveats=["by construction"])
    card = claims.card_html(asdict(claim), link="chapters/x.html#claim-x1")
    assert 'id="claim-x1"' in card and "c &lt;i&gt;" in card and "by construction" in card
    svg = claims.forest_svg(asdict(claim))
    assert svg.count("<circle") == 2 and "null 0.25" in svg
    assert 'fill="#bbbbbb"' in svg  # the underpowered part is greyed
    assert "chance level 0.25" in card and 'href="chapters/x.html#claim-x1"' in card
    assert led.line("X1").startswith("**X1: holds") and "(#claim-x1)" in led.line("X1")
    recorded = led.record("X2", paper="P", claim="c", verdict="inconclusive", measured="m", reason="r")
    assert claims.forest_svg(asdict(recorded)) == "" and 'id="claim-x2"' in claims.card_html(asdict(recorded))


def test_the_bottom_line_goes_to_the_file(tmp_path):
    led = ledger()
    led.record("X1", paper="P", claim="c", verdict="holds", measured="m", reason="r")
    led.bottom_line("It held.")
    led.save(tmp_path)
    assert claims.load_bottom_lines(tmp_path) == {"99_test": "It held."}
    assert "It held." in led.summary(items=False) and "X1" not in led.summary(items=False)
