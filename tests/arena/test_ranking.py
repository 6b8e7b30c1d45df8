"""Ranks with bootstrap intervals over images and the list of controls at or above a method, on
hand-made tables whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reliable_saliency.arena.ranking import controls_at_or_above, rank_table


def table(means: dict, n: int = 40, spread: float = 0.05, higher: bool = True, controls=("ctrl",), seed: int = 0,
          baseline: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for explainer, mean in means.items():
        for image, noise in enumerate(rng.standard_normal(n)):
            rows.append({"image": image, "explainer": explainer, "model": "m", "perturbation": "topk",
                         "measure": "topk_intersection", "value": mean + spread * noise, "baseline": baseline,
                         "higher_is_better": higher, "control": explainer in controls})
    return pd.DataFrame(rows)


def test_clear_order_gets_point_intervals_and_close_means_tie():
    ranks = rank_table(table({"a": 0.9, "b": 0.5, "c": 0.5, "ctrl": 0.1})).set_index("explainer")
    assert ranks.loc["a", ["rank", "rank_low", "rank_high"]].tolist() == [1, 1, 1]
    assert ranks.loc["ctrl", ["rank", "rank_low", "rank_high"]].tolist() == [4, 4, 4]
    assert {ranks.loc["b", "rank"], ranks.loc["c", "rank"]} == {2, 3}
    assert ranks.loc["b", "rank_low"] == 2 and ranks.loc["b", "rank_high"] == 3  # overlapping: a tie
    assert ranks.loc["b", "tied_with"] == "c" and ranks.loc["c", "tied_with"] == "b"
    assert ranks.loc["a", "tied_with"] == ""
    assert ranks.loc["a", "mean_low"] < ranks.loc["a", "mean"] < ranks.loc["a", "mean_high"]
    assert (ranks["n"] == 40).all() and not ranks.loc["a", "control"] and ranks.loc["ctrl", "control"]
    # the interval of a mean: about mean +- 1.96 sd / sqrt(n)
    half = (ranks.loc["a", "mean_high"] - ranks.loc["a", "mean_low"]) / 2
    assert 0.5 * 1.96 * 0.05 / np.sqrt(40) < half < 1.5 * 1.96 * 0.05 / np.sqrt(40)


def test_lower_is_better_reverses_the_ranks_and_nan_is_left_out():
    t = table({"a": 0.9, "b": 0.1, "ctrl": 0.5}, higher=False)
    t.loc[(t.explainer == "a") & (t.image < 5), "value"] = np.nan
    ranks = rank_table(t).set_index("explainer")
    assert ranks["rank"].to_dict() == {"a": 3, "b": 1, "ctrl": 2}
    assert ranks.loc["a", "n"] == 35
    refused = t.assign(value=np.where(t.explainer == "b", np.nan, t.value))  # an explainer with no value
    assert "b" not in set(rank_table(refused)["explainer"])


def test_beyond_ranks_value_minus_baseline():
    t = table({"a": 0.9, "b": 0.5, "ctrl": 0.95})
    t.loc[t.explainer == "a", "baseline"] = 0.95  # a loses 0.05 beyond its noise, b nothing
    t.loc[t.explainer == "b", "baseline"] = 0.5
    t.loc[t.explainer == "ctrl", "baseline"] = 0.95
    plain = rank_table(t).set_index("explainer")["rank"].to_dict()
    beyond = rank_table(t, column="beyond").set_index("explainer")
    assert plain == {"ctrl": 1, "a": 2, "b": 3}
    assert beyond.loc["a", "rank"] == 3 and set(beyond["column"]) == {"beyond"}


def test_controls_at_or_above_a_method_are_all_listed():
    ranks = rank_table(table({"a": 0.9, "b": 0.5, "c": 0.1, "ctrl": 0.5, "edge": 0.95}, controls=("ctrl", "edge")))
    listed = controls_at_or_above(ranks)
    pairs = {(r.control, r.method): r.relation for r in listed.itertuples()}
    assert pairs[("edge", "a")] == "above" and pairs[("edge", "b")] == "above" and pairs[("edge", "c")] == "above"
    assert pairs[("ctrl", "b")] == "tied" and pairs[("ctrl", "c")] == "above"
    assert ("ctrl", "a") not in pairs  # clearly below: not listed
    assert set(listed["model"]) == {"m"} and set(listed["measure"]) == {"topk_intersection"}
    none = controls_at_or_above(rank_table(table({"a": 0.9, "ctrl": 0.1})))
    assert none.empty and list(none.columns)[:3] == ["model", "perturbation", "measure"]


def test_bad_calls_are_refused():
    t = table({"a": 0.9, "ctrl": 0.1})
    with pytest.raises(ValueError, match="'value' or 'beyond'"):
        rank_table(t, column="mean")
    with pytest.raises(ValueError, match="lacks the column"):
        rank_table(t.drop(columns="higher_is_better"))
    mixed = pd.concat([t, t.assign(higher_is_better=False, explainer=t.explainer + "2")])
    with pytest.raises(ValueError, match="both directions"):
        rank_table(mixed, by=("model",))


def test_the_strength_table_reads_each_attack_on_its_own_goal(toy_run):
    from reliable_saliency.arena.strength import strength_table

    table, _ = toy_run
    strength = strength_table(table)
    cells = table[table.model != "shapes_cnn"].groupby(["explainer", "model", "perturbation"], observed=True).ngroups
    assert len(strength) == cells - 12 * 2  # every cell but the "none" ones
    row = strength[(strength.explainer == "gradient") & (strength.model == "soft") & (strength.perturbation == "topk")]
    assert row["measure"].item() == "topk_intersection" and row["steps"].item() == 2
    assert row["strength_images"].item() == 2
    part = table[(table.explainer == "gradient") & (table.model == "soft") & (table.perturbation == "topk")
                 & (table.measure == "topk_intersection")]
    sub = part[part.image < 2]
    # the gain per image where the extra run gained, 0 where it lost (losses do not cancel gains)
    assert row["doubled_change"].item() == pytest.approx((sub["value"] - sub["doubled"]).clip(lower=0).mean())
    shift = strength[(strength.perturbation == "mass_center") & (strength.explainer == "gradient")
                     & (strength.model == "soft")]
    part = table[(table.explainer == "gradient") & (table.model == "soft") & (table.perturbation == "mass_center")
                 & (table.measure == "center_shift") & (table.image < 2)]
    assert shift["doubled_change"].item() == pytest.approx((part["doubled"] - part["value"]).clip(lower=0).mean())
    assert strength.loc[strength.perturbation == "masked_retrieval", "measure"].eq("retrieval").all()
    aimed = strength[(strength.explainer == "rise") & ~strength.perturbation.isin(["random_sign", "pgd"])]
    assert aimed["surrogate_spearman"].notna().all() and aimed["aimed"].str.startswith("surrogate").all()
