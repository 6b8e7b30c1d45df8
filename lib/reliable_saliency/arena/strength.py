"""Which attacks of an arena run are shown at full strength, and what that does to a verdict.

An attack that does not reach its goal is no evidence that a map resists it (DESIGN.md, "honest
attacks"). :func:`full_strength` reads every row of :func:`strength_table` (one attack
aimed at one explainer on one model, read on the measure it aims at, :data:`PRIMARY`; PGD, aimed at
the label and at no map, on the labels it flips) against rules fixed before any run (:data:`RULES`):

- ``more_effort``: on the strength subset, twice the steps (Dombrowski's unbounded attack: at half
  the step size, so the same distance) and a random restart each strengthen the attack by at most
  10% of its effect beyond random noise (the extra effort per image is its gain where it gained,
  0 where it lost: a run that is worse on some images does not cancel one that is better on others) (``effect``: the attacked measure
  against the same measure under random sign noise of the same budget, positive when the attack
  did damage), or by at most 1% of the measure's range when that effect is smaller (``floor``;
  the range is 1 for the similarities, the retrieval rate and the region mass, the map's side,
  32 px, for the centre shift, :data:`SCALES`): the result no longer moves with more effort;
- ``plateau``: the second half of the steps added at most 10% of the attack's effect;
- ``surrogate``: where the attack differentiates a stand-in for the scored map (a shorter run of
  the same method, another formula, a Softplus copy of a ReLU model), the stand-in's map ranks the
  pixels as the scored map does, Spearman at least 0.8;
- no image without an attack gradient (checked per image; the image is left where it is and its
  attacked values are left out).

A row with no strength runs (no image in the strength subset) is not shown at full strength. Rows
of the random sign noise (the baseline itself), of an explainer that refuses the model, and of the
random map (not attackable: it does not depend on the image) get their own status instead.

:func:`guard` turns the weak cells behind a comparison into the ledger's arguments: a weak attack
on the map a claim says resists turns "holds" into "inconclusive" (``weakness_favours="holds"``),
a weak attack on the map it is compared with turns "does not hold" into "inconclusive", and weak
attacks on both sides void the comparison (``precondition_failed``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .settings import HIGHER_IS_BETTER

__all__ = ["RULES", "SCALES", "KINDS", "PRIMARY", "strength_table", "full_strength", "weak_cells", "weak_text", "cells_text", "weak_sentences",
           "guard"]

# the measure each attack aims at; PGD aims at the label: read on the labels it leaves
PRIMARY = {"random_sign": "topk_intersection", "pgd": "prediction_kept", "topk": "topk_intersection",
           "mass_center": "center_shift", "targeted": "region_mass", "dombrowski": "target_pearson",
           "frame": "frame_mse", "masked_retrieval": "retrieval"}
RULES = {"more_effort": 0.10, "floor": 0.01, "plateau": 0.10, "surrogate": 0.8}
SCALES = {"center_shift": 32.0}  # the measure's range where it is not 1 (pixels of a 32 x 32 map)
# the kinds of weakness, in the order they are reported, with their words
KINDS = {
    "no_strength": "no strength runs",
    "no_gradient": "images without an attack gradient",
    "surrogate": "a stand-in map that ranks the pixels unlike the scored map",
    "doubled": "twice the steps strengthened it further",
    "restart": "a random restart strengthened it further",
    "plateau": "the second half of its steps still added to its effect",
}


def strength_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per explainer x model x perturbation, how strong its attack was, read on the measure it aims
    at (:data:`PRIMARY`): the steps and starts, the mean value and that under random noise of the
    same budget, what twice the steps and a random restart gained on the strength subset (the mean
    over images of the gain in the direction of a stronger attack, 0 where the run did worse:
    positive means the main run had not levelled off), the share of its effect that the second half
    of the steps added, the surrogate distance, the labels kept, the mean and largest change per
    pixel, the share of images without an attack gradient, seconds per image and how it was aimed."""
    rows = []
    main = table[table.perturbation.isin(list(PRIMARY))]
    for (explainer, model, perturbation), group in main.groupby(["explainer", "model", "perturbation"],
                                                                 observed=True, sort=True):
        part = group[group.measure == PRIMARY[str(perturbation)]]
        if part.empty:
            continue
        sign = 1.0 if bool(part["higher_is_better"].iloc[0]) else -1.0  # stronger attack: lower if higher is better
        subset = part[part["doubled"].notna()]

        def gain(column, subset=subset, sign=sign):
            return (sign * (subset["value"] - subset[column])).clip(lower=0).mean() if len(subset) else np.nan

        rows.append({
            "explainer": explainer, "model": model, "perturbation": perturbation, "measure": PRIMARY[str(perturbation)],
            "steps": int(part["steps"].iloc[0]), "restarts": int(part["restarts"].iloc[0]), "images": len(part),
            "value": part["value"].mean(), "random": part["baseline"].mean(),
            "doubled_change": gain("doubled"), "restart_change": gain("restart"),
            "strength_images": len(subset), "plateau": part["plateau"].mean(),
            "surrogate_spearman": part["surrogate_spearman"].mean(), "label_kept": part["label_kept"].mean(),
            "delta_mean": part["delta_mean"].mean(), "delta_max": part["delta_max"].max(),
            "no_gradient": part["no_gradient"].mean(), "attack_seconds": part["attack_seconds"].mean(),
            "aimed": str(part["aimed"].iloc[0]), "reason": str(part["reason"].iloc[0]),
        })
    return pd.DataFrame(rows)


def _status(row, rules: dict, scales: dict) -> tuple[str, float, float, list[str], list[str]]:
    """(status, effect, tolerance, kinds, reasons) of one strength row."""
    if row["perturbation"] == "random_sign":
        return "baseline", math.nan, math.nan, [], []
    if str(row.get("reason", "")):
        return "refused", math.nan, math.nan, [], []
    if str(row.get("aimed", "")).startswith("not attackable"):
        return "not attacked", math.nan, math.nan, [], []
    higher = HIGHER_IS_BETTER[row["measure"]]
    effect = (row["random"] - row["value"]) if higher else (row["value"] - row["random"])
    scale = scales.get(row["measure"], 1.0)
    tolerance = max(rules["more_effort"] * abs(effect), rules["floor"] * scale) if np.isfinite(effect) else \
        rules["floor"] * scale
    kinds, reasons = [], []
    if row["no_gradient"] > 0:
        kinds.append("no_gradient")
        reasons.append(f"no attack gradient on {row['no_gradient']:.0%} of the images")
    if not np.isfinite(row["doubled_change"]):
        kinds.append("no_strength")
        reasons.append("no strength runs (twice the steps, a restart) on any image")
    elif row["doubled_change"] > tolerance:
        kinds.append("doubled")
        reasons.append(f"twice the steps strengthened it by {row['doubled_change']:.3g} (tolerance {tolerance:.3g})")
    if np.isfinite(row["restart_change"]) and row["restart_change"] > tolerance:
        kinds.append("restart")
        reasons.append(f"a random restart strengthened it by {row['restart_change']:.3g} (tolerance {tolerance:.3g})")
    if np.isfinite(row["plateau"]) and row["plateau"] > rules["plateau"]:
        kinds.append("plateau")
        reasons.append(f"the second half of its steps added {row['plateau']:.0%} of its effect")
    if np.isfinite(row["surrogate_spearman"]) and row["surrogate_spearman"] < rules["surrogate"]:
        kinds.append("surrogate")
        reasons.append(f"its stand-in map agrees with the scored map at Spearman {row['surrogate_spearman']:.2f} "
                       f"only (below {rules['surrogate']:g})")
    return ("weak" if kinds else "full"), effect, tolerance, kinds, reasons


def full_strength(strength: pd.DataFrame, rules: dict | None = None, scales: dict | None = None) -> pd.DataFrame:
    """``strength`` (:func:`strength_table`) with ``effect``, ``tolerance``, ``status``
    (``"full"``, ``"weak"``, ``"baseline"``, ``"refused"``, ``"not attacked"``), ``kinds`` (the
    keys of :data:`KINDS`, comma-separated) and ``why`` (the reasons in words) per row."""
    rules = {**RULES, **(rules or {})}
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"unknown strength rule(s) {unknown}; the rules are {sorted(RULES)}")
    scales = {**SCALES, **(scales or {})}
    out = strength.copy()
    found = [_status(row, rules, scales) for _, row in strength.iterrows()]
    out["effect"] = [f[1] for f in found]
    out["tolerance"] = [f[2] for f in found]
    out["status"] = [f[0] for f in found]
    out["kinds"] = [",".join(f[3]) for f in found]
    out["why"] = ["; ".join(f[4]) for f in found]
    return out


def weak_cells(checked: pd.DataFrame, cells) -> pd.DataFrame:
    """The rows of ``checked`` (:func:`full_strength`) among ``cells`` (explainer, model,
    perturbation) that are not at full strength; cells the run does not have are ignored."""
    wanted = {tuple(map(str, c)) for c in cells}
    keys = list(zip(checked["explainer"].astype(str), checked["model"].astype(str),
                    checked["perturbation"].astype(str)))
    pick = [(k in wanted) and s == "weak" for k, s in zip(keys, checked["status"])]
    return checked[pick]


def _explainer_text(rows: pd.DataFrame, names: dict) -> str:
    """``"3 cells (top-k on natural; ...): <kind> in 2 of them; ..."`` for one explainer's weak rows."""
    words = []
    for kind in KINDS:
        hit = rows["kinds"].str.split(",").apply(lambda found, kind=kind: kind in found)
        if not hit.any():
            continue
        text = KINDS[kind]
        if kind == "surrogate":
            rho = rows.loc[hit, "surrogate_spearman"]
            span = f"{rho.min():.2f}" if rho.min() == rho.max() else f"{rho.min():.2f} to {rho.max():.2f}"
            text = f"a stand-in map at Spearman {span} with the scored map (below {RULES['surrogate']:g})"
        words.append(f"{text} in {int(hit.sum())} of them" if len(rows) > 1 else text)
    plural = "s" * (len(rows) > 1)
    return f"{len(rows)} cell{plural} ({cells_text(rows, names)}): " + "; ".join(words)


def weak_text(weak: pd.DataFrame, names: dict | None = None) -> str:
    """The weak rows in a few words per explainer: how many cells, where, and of which kinds (the
    stand-in's Spearman range where that is the reason); explainers separated by " | "."""
    names = names or {}
    return " | ".join(f"{names.get(e, e)}: {_explainer_text(rows, names)}"
                      for e, rows in weak.groupby(weak["explainer"].astype(str), sort=True))


def weak_sentences(checked: pd.DataFrame, names: dict | None = None, worst: int = 3) -> list[str]:
    """One Markdown line per attack with cells not at full strength: how many cells on which
    models, the kinds of weakness, and the ``worst`` cells (the largest extra effort over its
    tolerance, then the lowest stand-in Spearman); at most one line per attack, whatever the size
    of the run."""
    names = names or {}
    weak = checked[checked["status"] == "weak"].copy()
    lines = []
    if weak.empty:
        return lines
    excess = np.fmax(weak["doubled_change"], weak["restart_change"]) / weak["tolerance"]
    weak["_score"] = np.where(weak["kinds"].str.contains("no_gradient|no_strength"), np.inf, excess.fillna(0))
    weak["_rho"] = weak["surrogate_spearman"].fillna(1.0)
    for p, rows in weak.groupby(weak["perturbation"].astype(str), sort=False):
        per_model = rows.groupby(rows["model"].astype(str), sort=False).size()
        kinds = [f"{KINDS[k]} ({int(rows['kinds'].str.split(',').apply(lambda f, k=k: k in f).sum())})"
                 for k in KINDS if rows["kinds"].str.split(",").apply(lambda f, k=k: k in f).any()]
        top = rows.sort_values(["_score", "_rho"], ascending=[False, True]).head(worst)
        said = "; ".join(f"{names.get(str(r.explainer), str(r.explainer))} on {names.get(str(r.model), str(r.model))}"
                         f" ({r.why})" for r in top.itertuples())
        lines.append(f"- **{names.get(p, p)}**: {len(rows)} cell{'s' * (len(rows) > 1)} not at full strength ("
                     + ", ".join(f"{names.get(m, m)} {c}" for m, c in per_model.items()) + "); "
                     + ", ".join(kinds) + f". Worst: {said}.")
    return lines


def cells_text(rows: pd.DataFrame, names: dict | None = None) -> str:
    """Cells (rows with ``perturbation`` and ``model``) in words, grouped by perturbation:
    ``"top-k on natural, fgsm; frame on natural"``, in the order they first appear."""
    names = names or {}
    grouped: dict[str, list[str]] = {}
    for model, perturbation in zip(rows["model"].astype(str), rows["perturbation"].astype(str)):
        grouped.setdefault(perturbation, [])
        if model not in grouped[perturbation]:
            grouped[perturbation].append(model)
    return "; ".join(f"{names.get(p, p)} on {', '.join(names.get(m, m) for m in models)}"
                     for p, models in grouped.items())


def guard(checked: pd.DataFrame, claimed, others, names: dict | None = None) -> dict:
    """The ledger's strength arguments for a comparison whose claim is that the maps of
    ``claimed`` cells resist better than those of ``others`` (module docstring): ``{}`` when every
    cell is at full strength, else ``below_strength`` with ``weakness_favours``, or
    ``precondition_failed`` when both sides have weak cells."""
    mine, theirs = weak_cells(checked, claimed), weak_cells(checked, others)
    if len(mine) and len(theirs):
        return {"precondition_failed": "attacks below full strength on both sides of the comparison, so no verdict "
                                       f"either way: {weak_text(pd.concat([mine, theirs]), names)}"}
    if len(mine):
        return {"below_strength": weak_text(mine, names), "weakness_favours": "holds"}
    if len(theirs):
        return {"below_strength": weak_text(theirs, names), "weakness_favours": "does not hold"}
    return {}
