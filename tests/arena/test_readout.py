"""Reading the long table for a chapter: oriented per-image values, the images PGD misled, paper C's
orderings, paper A's retrieval measures, ranks pooled over attacks, the reader's rank table, the
leaders of a ranking, every control case in words, and the store key of the arena's code."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reliable_saliency.arena import controls_at_or_above, rank_table
from reliable_saliency.arena.readout import (control_sentences, floor_caveat, floor_shares, fooled, leaders, oriented,
                                             pooled, rank_cells, retrieval_rows, sigma_scores)

INF, NAN = math.inf, math.nan


def long(rows) -> pd.DataFrame:
    """A long table from (image, explainer, model, perturbation, measure, value, baseline, higher) tuples."""
    frame = pd.DataFrame(rows, columns=["image", "explainer", "model", "perturbation", "measure", "value", "baseline",
                                        "higher_is_better"])
    frame["control"] = frame["explainer"].isin(["random_map", "edge_map"])
    frame["reason"] = ""
    for column in ("explainer", "model", "perturbation", "measure"):
        frame[column] = frame[column].astype("category")
    return frame


def test_oriented_is_beyond_random_and_signed_for_the_explainer():
    t = long([(1, "g", "m", "topk", "topk_intersection", 0.5, 0.8, True),
              (0, "g", "m", "topk", "topk_intersection", 0.6, 0.7, True),
              (0, "g", "m", "mass_center", "center_shift", 3.0, 1.0, False),
              (1, "g", "m", "mass_center", "center_shift", 2.0, 2.5, False)])
    np.testing.assert_allclose(oriented(t, "g", "m", "topk", "topk_intersection"), [-0.1, -0.3])  # sorted by image
    np.testing.assert_allclose(oriented(t, "g", "m", "topk", "topk_intersection", beyond=False), [0.6, 0.5])
    np.testing.assert_allclose(oriented(t, "g", "m", "mass_center", "center_shift"), [-2.0, 0.5])  # lower is better
    masked = oriented(t, "g", "m", "topk", "topk_intersection", images=[False, True])
    assert math.isnan(masked[0]) and masked[1] == pytest.approx(-0.3)
    with pytest.raises(ValueError, match="no cell g x m x frame"):
        oriented(t, "g", "m", "frame", "topk_intersection")
    with pytest.raises(ValueError, match="one boolean per image"):
        oriented(t, "g", "m", "topk", "topk_intersection", images=[True])
    gap = long([(0, "g", "m", "pgd", "retrieval", 1, 0, True), (2, "g", "m", "pgd", "retrieval", 1, 0, True)])
    with pytest.raises(ValueError, match="images 0..n-1 once each"):
        oriented(gap, "g", "m", "pgd", "retrieval")


def test_a_floored_cell_is_named_with_what_the_attack_leaves():
    # the gradient's top-k intersection is driven to 0 on 3 of 4 images (one NaN left out); RelEx's on none
    rows = [(i, "gradient", "m", "topk", "topk_intersection", v, 0.4, True) for i, v in enumerate([0.0, 0.0, 0.0, 0.2])]
    rows += [(i, "relex", "m", "topk", "topk_intersection", v, 0.7, True) for i, v in enumerate([0.4, 0.5, NAN, 0.0])]
    rows += [(i, "gradient", "m", "topk", "spearman", -0.2, 0.5, True) for i in range(4)]
    t = long(rows)
    cells = [("relex", "m", "topk", "topk_intersection"), ("gradient", "m", "topk", "topk_intersection"),
             ("gradient", "m", "topk", "spearman")]
    shares = floor_shares(t, cells)
    assert set(shares) == set(cells[:2])  # Spearman has no floor an attack reaches
    assert shares[cells[1]] == pytest.approx((0.75, 0.05)) and shares[cells[0]] == pytest.approx((1 / 3, 0.3))
    [text] = floor_caveat(t, cells)
    assert "in 1 of the 2 cells" in text and "(gradient on m under top-k: 75%)" in text and "33%" not in text
    assert "what the attack leaves, as means: RelEx on m under top-k 0.30, gradient on m under top-k 0.05." in text
    assert floor_caveat(t, cells, most=0.8) == [] and floor_caveat(t, cells[2:]) == []


def test_paper_c_orderings_score_ties_and_infinite_budgets():
    # sigma_rel: value = sigma*_Rel, baseline = sigma*_RelShuf; sigma_irel: value = Irel, baseline = IrelShuf
    t = long([(0, "g", "m", "none", "sigma_rel", 0.1, 0.2, False), (1, "g", "m", "none", "sigma_rel", 0.2, 0.2, False),
              (2, "g", "m", "none", "sigma_rel", 0.3, 0.2, False), (3, "g", "m", "none", "sigma_rel", INF, INF, False),
              (4, "g", "m", "none", "sigma_rel", 0.1, INF, False), (5, "g", "m", "none", "sigma_rel", NAN, 0.2, False),
              (0, "g", "m", "none", "sigma_irel", 0.3, 0.2, True), (1, "g", "m", "none", "sigma_irel", INF, 0.2, True),
              (2, "g", "m", "none", "sigma_irel", 0.1, 0.2, True)])
    scores = sigma_scores(t)
    rel = scores[scores.measure == "rel_order"].sort_values("image")["value"].tolist()
    assert rel[:5] == [1.0, 0.5, 0.0, 0.5, 1.0] and math.isnan(rel[5])
    assert scores[scores.measure == "irel_order"].sort_values("image")["value"].tolist() == [1.0, 1.0, 0.0]
    assert scores["higher_is_better"].all() and set(scores.perturbation) == {"none"}


def test_retrieval_rows_hold_the_control_and_the_misled_images(toy_run):
    table, _ = toy_run
    rows = retrieval_rows(table)
    assert set(rows.measure) == {"retrieval_clean", "retrieval_wrong_class", "retrieval_pgd_fooled"}
    clean = table[(table.measure == "retrieval_clean") & (table.explainer == "relex") & (table.model == "relu")]
    wrong = rows[(rows.measure == "retrieval_wrong_class") & (rows.explainer == "relex") & (rows.model == "relu")]
    np.testing.assert_array_equal(wrong.sort_values("image")["value"], clean.sort_values("image")["baseline"])
    assert not wrong["higher_is_better"].any()  # a mask should not conjure a class
    misled = fooled(table, "relu")
    kept = table[(table.perturbation == "pgd") & (table.explainer == "gradient") & (table.model == "relu")
                 & (table.measure == "retrieval")].sort_values("image")
    np.testing.assert_array_equal(misled, kept["label_kept"].to_numpy() == 0)
    after = rows[(rows.measure == "retrieval_pgd_fooled") & (rows.explainer == "gradient") & (rows.model == "relu")]
    after = after.sort_values("image")["value"].to_numpy()
    assert np.isnan(after[~misled]).all()
    np.testing.assert_array_equal(after[misled], kept["value"].to_numpy()[misled])


def test_pooled_is_the_mean_beyond_random_per_image(toy_run):
    table, _ = toy_run
    out = pooled(table, ["topk", "frame"], ["ssim"])
    for explainer, model in (("gradient", "relu"), ("smoothgrad", "soft")):
        expected = np.mean([oriented(table, explainer, model, p, "ssim") for p in ("topk", "frame")], axis=0)
        got = out[(out.explainer == explainer) & (out.model == model)].sort_values("image")["value"].to_numpy()
        np.testing.assert_allclose(got, expected)
    assert set(out.perturbation) == {"attacks pooled"} and (out.baseline == 0).all()
    both = pooled(table, ["topk"], ["ssim"], over_models=True)
    lrp = both[both.explainer == "lrp_epsilon"].sort_values("image")["value"].to_numpy()
    np.testing.assert_allclose(lrp, oriented(table, "lrp_epsilon", "relu", "topk", "ssim"))  # refused on soft: left out
    assert "lrp_epsilon" not in set(pooled(table, ["topk"], ["ssim"], over_models=True, complete=True).explainer)
    assert set(pooled(table, ["topk"], ["ssim"], over_models=True, complete=True).explainer) == set(both.explainer) - {
        "lrp_epsilon"}
    plain = pooled(table, ["none"], ["deletion_auc"], beyond=False, label="none")
    rise = plain[(plain.explainer == "rise") & (plain.model == "soft")].sort_values("image")["value"]
    np.testing.assert_allclose(rise, -oriented(table, "rise", "soft", "none", "deletion_auc", beyond=False))
    with pytest.raises(ValueError, match="no rows"):
        pooled(table, ["nope"], ["ssim"])


def ranked(means: dict, n: int = 40, spread: float = 0.05, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(i, e, "m", "topk", "topk_intersection", mean + spread * z, 0.0, True)
            for e, mean in means.items() for i, z in enumerate(rng.standard_normal(n))]
    return rank_table(long(rows), column="beyond", rounds=200)


def test_rank_cells_reads_mean_rank_and_interval():
    ranks = ranked({"a": 0.9, "b": 0.5, "c": 0.5, "random_map": 0.1})
    cells = rank_cells(ranks, names={"a": "A", "m": "model m"}, order=["random_map", "a", "b", "c"])
    assert list(cells.index) == ["random map", "A", "b", "c"] and list(cells.columns) == ["model m"]
    assert cells.loc["A", "model m"] == "0.90 #1" and cells.loc["random map", "model m"].endswith(" #4")
    assert cells.loc["b", "model m"].endswith("(2-3)")  # tied with c: the interval is shown


def test_leaders_are_the_methods_that_reach_the_best_and_the_controls_that_do():
    assert leaders(ranked({"a": 0.9, "b": 0.5, "c": 0.5, "random_map": 0.1})) == (["a"], [])
    assert leaders(ranked({"a": 0.5, "b": 0.5, "c": 0.1, "random_map": 0.5})) == (["a", "b"], ["random_map"])
    assert leaders(ranked({"random_map": 0.5})) == ([], [])


def test_every_control_case_is_said():
    ranks = pd.concat([ranked({"a": 0.9, "b": 0.5, "random_map": 0.95}, seed=s).assign(model=f"m{s}")
                       for s in range(2)], ignore_index=True)
    ranks = pd.concat([ranks, ranked({"a": 0.9, "b": 0.2, "random_map": 0.5}).assign(model="m9")], ignore_index=True)
    cases = controls_at_or_above(ranks)
    lines = control_sentences(cases, {"random_map": "random map", "topk": "top-k"}, ranks)
    assert len(lines) == 1
    assert lines[0] == ("- The **random map** ranks at or above a (top-k on m0, m1; clearly above in 2), b (in all 3 "
                        "rankings; clearly above in 3) on top-k intersection beyond random noise.")
    assert control_sentences(cases.iloc[:0]) == []
    loose = control_sentences(cases)  # without the rankings: every cell is listed
    assert "b (top-k on m0, m1, m9; clearly above in 3)" in loose[0]


def test_the_store_key_hashes_the_harness_and_not_the_chapter():
    from reliable_saliency.arena import storekey
    from reliable_saliency.core.experiment import imported_modules, library_hash

    key = storekey.store_key()
    assert key.startswith("arena-") and key == storekey.store_key("arena")
    assert key == "arena-" + library_hash(imported_by=Path(storekey.__file__))
    closure = {p.relative_to(Path(storekey.__file__).parents[1]).as_posix() for p in
               imported_modules(Path(storekey.__file__))}
    assert {"arena/harness.py", "arena/cells.py", "arena/routes.py", "explainers/relex.py", "core/store.py"} <= closure
    assert not {"arena/readout.py", "arena/strength.py", "arena/storekey.py"} & closure  # the chapter's reading
    assert not any(p.startswith(("chapter/", "claims/")) for p in closure)
