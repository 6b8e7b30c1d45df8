"""Reading the arena's long table (:func:`.harness.run_arena`) for a chapter: per-image values
oriented for a claim, the derived measures the chapter ranks, ranks pooled over attacks, rank
tables as a reader reads them, the leaders of a ranking, and every case of a control at or above
a method in words.

- :func:`oriented`: one cell's per-image values, ``value - baseline`` (the measure beyond random
  noise of the same budget, or beyond the row's own null) or ``value``, signed so that higher is
  better for the explainer; :func:`fooled`: the images PGD misled (paper A's adversarial examples);
- :func:`sigma_scores`: paper C's two orderings per image (1 ordered, 0.5 tied, 0 not), so infinite
  budgets ("no flip within the bracket") compare without arithmetic on infinity;
- :func:`retrieval_rows`: paper A's retrieval on clean images, its wrong-class control and the
  retrieval on the images PGD misled, as measures of their own;
- :func:`pooled`: per image, the mean over attacks (and models) of a measure beyond random, so a
  method gets one number per image and the bootstrap still resamples images;
- :func:`floor_shares`, :func:`floor_caveat`: where an attack drove a measure to its floor, so
  that "beyond random noise" reads minus the map's stability under noise, not the attack's effect;
- :func:`rank_cells`, :func:`leaders`, :func:`control_sentences`: tables and words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .strength import cells_text

__all__ = ["NAMES", "FLOORS", "oriented", "fooled", "sigma_scores", "retrieval_rows", "pooled", "floor_shares",
           "floor_caveat", "rank_cells", "leaders", "control_sentences", "by_construction"]

# the words a reader knows, for the explainers, models, perturbations and measures of the arena
NAMES = {
    "gradient": "gradient", "smoothgrad": "SmoothGrad", "integrated_gradients": "Integrated Gradients",
    "gradcam": "Grad-CAM", "lrp_epsilon": "LRP-epsilon", "rise": "RISE", "relex": "RelEx", "dance": "DANCE",
    "mask_search": "mask search", "random_map": "random map", "edge_map": "edge map",
    "smoothed_gradient": "blurred |gradient|",
    "natural": "natural", "fgsm": "FGSM-trained", "softplus": "Softplus CE", "l2cosd": "l2 + cosd", "cosd": "cosd",
    "hessian": "Hessian", "shapes_cnn": "shapes CNN",
    "none": "clean images", "random_sign": "random noise", "pgd": "PGD", "topk": "top-k", "mass_center": "mass-centre",
    "targeted": "targeted", "dombrowski": "Dombrowski", "frame": "frame", "masked_retrieval": "masked retrieval",
    "topk_intersection": "top-k intersection", "spearman": "Spearman", "ssim": "SSIM", "retrieval": "retrieval",
    "center_shift": "centre shift", "region_mass": "region mass", "target_pearson": "Pearson with the target map",
    "frame_mse": "distance to the frame", "deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC",
    "sigma_rel": "sigma*_Rel", "sigma_irel": "sigma*_Irel", "rel_order": "Rel < RelShuf",
    "irel_order": "Irel > IrelShuf", "retrieval_clean": "retrieval on clean images",
    "retrieval_wrong_class": "retrieval of a wrong class asked for", "prediction_kept": "label kept",
    "retrieval_random_matched": "retrieval, the mask in a random map's pixel order",
    "retrieval_edge_matched": "retrieval, the mask in the edge map's pixel order", "retrieval_pgd_fooled":
        "retrieval after PGD (misled images)", "sanity_spearman": "Spearman with the randomised model's map",
    "pointing_game": "pointing game", "box_iou": "box IoU", "passes": "passes per image",
    "seconds": "seconds per image",
}

_KEEP = ["image", "explainer", "model", "perturbation", "measure", "value", "baseline", "higher_is_better", "control",
         "reason"]


def _cell(table: pd.DataFrame, explainer: str, model: str, perturbation: str, measure: str) -> pd.DataFrame:
    rows = table[(table["explainer"].astype(str) == explainer) & (table["model"].astype(str) == model)
                 & (table["perturbation"].astype(str) == perturbation) & (table["measure"].astype(str) == measure)]
    if rows.empty:
        raise ValueError(f"the table has no cell {explainer} x {model} x {perturbation} x {measure}")
    rows = rows.sort_values("image")
    if not np.array_equal(rows["image"].to_numpy(), np.arange(len(rows))):
        raise ValueError(f"cell {explainer} x {model} x {perturbation} x {measure} does not hold images 0..n-1 "
                         "once each")
    return rows


def oriented(table: pd.DataFrame, explainer: str, model: str, perturbation: str, measure: str, *,
             beyond: bool = True, images=None) -> np.ndarray:
    """One cell's per-image values, higher = better for the explainer: ``value - baseline`` with
    ``beyond`` (the measure under the perturbation beyond the same measure under random noise of
    the same budget; or beyond the row's null), else ``value``; negated where lower is better.
    ``images``: a boolean mask, NaN where it is False (images left out of a claim)."""
    rows = _cell(table, explainer, model, perturbation, measure)
    values = rows["value"].to_numpy(dtype=float)
    if beyond:
        values = values - rows["baseline"].to_numpy(dtype=float)
    if not bool(rows["higher_is_better"].iloc[0]):
        values = -values
    if images is not None:
        mask = np.asarray(images, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"images must be one boolean per image ({values.size}), got shape {mask.shape}")
        values = np.where(mask, values, np.nan)
    return values


def fooled(table: pd.DataFrame, model: str) -> np.ndarray:
    """Per image of the run, whether PGD changed ``model``'s label (the images every explainer
    sees attacked: PGD is aimed at the prediction, the same images for all)."""
    rows = table[(table["model"].astype(str) == model) & (table["perturbation"].astype(str) == "pgd")]
    if rows.empty:
        raise ValueError(f"the table has no PGD rows for model {model!r}")
    kept = rows.groupby("image")["label_kept"].max()  # one value per image (NaN where an explainer refused)
    return (kept.reindex(np.arange(int(rows["image"].max()) + 1)) == 0).to_numpy()


def _derived(rows: pd.DataFrame, measure: str, value, higher: bool, baseline=np.nan) -> pd.DataFrame:
    out = rows[[c for c in _KEEP if c in rows.columns]].copy()
    for column in ("explainer", "model", "perturbation", "measure"):
        out[column] = out[column].astype(str)
    out["measure"], out["value"], out["baseline"], out["higher_is_better"] = measure, value, baseline, higher
    return out


def sigma_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Paper C's orderings per image as measures of their own (higher is better): ``rel_order``, 1
    where sigma*_Rel < sigma*_RelShuf, 0.5 where they are equal (a tie at the search's resolution,
    or no flip for either), 0 otherwise; ``irel_order`` the same for sigma*_Irel > sigma*_IrelShuf.
    NaN where either budget is undefined."""
    frames = []
    for measure, name, sign in (("sigma_rel", "rel_order", -1.0), ("sigma_irel", "irel_order", 1.0)):
        rows = table[table["measure"].astype(str) == measure]
        a, b = rows["value"].to_numpy(dtype=float), rows["baseline"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            score = np.where(a == b, 0.5, np.where(sign * (a - b) > 0, 1.0, 0.0))  # inf == inf: a tie
        score = np.where(np.isnan(a) | np.isnan(b), np.nan, score)
        frames.append(_derived(rows, name, score, True))
    return pd.concat(frames, ignore_index=True)


def retrieval_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Paper A's retrieval as three measures: ``retrieval_clean`` (the mask of the clean image keeps
    its class), ``retrieval_wrong_class`` (the same explainer asked for a wrong class: its mask makes
    the model predict that class; lower is better, a mask should not conjure a class the image does
    not show) and ``retrieval_pgd_fooled`` (on PGD's images, only where PGD changed the label)."""
    clean = table[(table["measure"].astype(str) == "retrieval_clean")]
    frames = [_derived(clean, "retrieval_clean", clean["value"].to_numpy(dtype=float), True),
              _derived(clean, "retrieval_wrong_class", clean["baseline"].to_numpy(dtype=float), False)]
    for model in sorted(set(table.loc[table["perturbation"].astype(str) == "pgd", "model"].astype(str))):
        mask = fooled(table, model)
        rows = table[(table["model"].astype(str) == model) & (table["perturbation"].astype(str) == "pgd")
                     & (table["measure"].astype(str) == "retrieval")]
        value = np.where(mask[rows["image"].to_numpy()], rows["value"].to_numpy(dtype=float), np.nan)
        frames.append(_derived(rows, "retrieval_pgd_fooled", value, True).assign(perturbation="none"))
    return pd.concat(frames, ignore_index=True)


def pooled(table: pd.DataFrame, perturbations, measures, *, over_models: bool = False, beyond: bool = True,
           complete: bool = False, signed: bool = False, label: str = "attacks pooled") -> pd.DataFrame:
    """Per explainer, (model,) measure and image, the mean over ``perturbations`` (and over the
    models with ``over_models``) of ``value - baseline`` (with ``beyond``, else of ``value``): one
    number per image, so a rank table's bootstrap still resamples images. The perturbation is named
    ``label``, the baseline 0; an explainer's NaN cells (a model it refuses) are left out of its mean.
    ``complete``: only the explainers with a value on every model of the table, so that every mean
    pools the same models (an explainer that refuses some models is left out, not compared on fewer).
    ``signed``: negated where lower is better, so every value reads higher = better for the explainer."""
    part = table[table["perturbation"].astype(str).isin(list(perturbations))
                 & table["measure"].astype(str).isin(list(measures))].copy()
    if part.empty:
        raise ValueError(f"the table has no rows for perturbations {list(perturbations)} and measures {list(measures)}")
    for column in ("explainer", "model", "measure"):
        part[column] = part[column].astype(str)
    part["beyond"] = part["value"] - part["baseline"] if beyond else part["value"]
    if signed:
        part["beyond"] = part["beyond"].where(part["higher_is_better"].astype(bool), -part["beyond"])
        part["higher_is_better"] = True
    if complete:
        covered = part.dropna(subset=["beyond"]).groupby("explainer")["model"].nunique()
        everywhere = covered[covered == part["model"].nunique()].index
        part = part[part["explainer"].isin(everywhere)]
    keys = ["explainer", "measure", "image"] + ([] if over_models else ["model"])
    out = part.groupby(keys, sort=True).agg(value=("beyond", "mean"), higher_is_better=("higher_is_better", "first"),
                                           control=("control", "first")).reset_index()
    if over_models:
        out["model"] = "models pooled"
    out["perturbation"], out["baseline"] = label, 0.0
    return out


# the measures whose floor an attack can reach: none of the map's top-k pixels kept
FLOORS = {"topk_intersection": 0.0}


def floor_shares(table: pd.DataFrame, cells) -> dict[tuple, tuple[float, float]]:
    """Per cell ``(explainer, model, perturbation, measure)`` of a measure in :data:`FLOORS`: the
    share of images (NaN left out) whose value under the perturbation sits at the floor, and the
    mean value (what the perturbation leaves). Cells of measures without a floor are left out."""
    out = {}
    for cell in dict.fromkeys(tuple(map(str, c)) for c in cells):
        if cell[3] not in FLOORS:
            continue
        values = _cell(table, *cell)["value"].dropna().to_numpy(dtype=float)
        out[cell] = (float(np.mean(values <= FLOORS[cell[3]])) if values.size else np.nan,
                     float(values.mean()) if values.size else np.nan)
    return out


def floor_caveat(table: pd.DataFrame, cells, names: dict | None = None, most: float = 0.5) -> list[str]:
    """A claim's caveat (a list of one sentence, or empty) naming the ``cells`` (:func:`floor_shares`)
    where the measure sits at its floor on at least ``most`` of the images: there, the measure beyond
    random noise is minus the map's stability under noise, so the map that noise moves more looks
    more robust; what the attack leaves is said beside it."""
    names = {**NAMES, **(names or {})}
    shares = floor_shares(table, cells)
    hit = {c: v for c, v in shares.items() if np.isfinite(v[0]) and v[0] >= most}
    if not hit:
        return []
    said = "; ".join(f"{names.get(e, e)} on {names.get(m, m)} under {names.get(p, p)}: {share:.0%}"
                     for (e, m, p, _), (share, _) in hit.items())
    left = ", ".join(f"{names.get(e, e)} on {names.get(m, m)} under {names.get(p, p)} {mean:.2f}"
                     for (e, m, p, _), (_, mean) in shares.items())
    measures = sorted({names.get(c[3], c[3]) for c in hit})
    return [f"A floor: the attack leaves a {' and '.join(measures)} of 0 on at least {most:.0%} of the images in "
            f"{len(hit)} of the {len(shares)} cells behind the parts on it ({said}). There the measure beyond random "
            "noise is minus the map's stability under noise, not what the attack did, and a map that noise already "
            f"moves looks robust; what the attack leaves, as means: {left}."]


def rank_cells(ranks: pd.DataFrame, *, rows=("explainer",), column: str = "model", names: dict | None = None,
               digits: int = 2, order=None) -> pd.DataFrame:
    """A :func:`.ranking.rank_table` as a reader's table: one row per ``rows``, one column per
    value of ``column``, each cell ``"mean #rank (low-high)"`` (the rank's 95% bootstrap interval,
    left out where it is one rank). ``order``: the rows' order (default: the first column's ranks)."""
    names = {**NAMES, **(names or {})}
    rows = list(rows)

    def text(r):
        span = "" if r["rank_low"] == r["rank_high"] else f" ({r['rank_low']}-{r['rank_high']})"
        return f"{r['mean']:.{digits}f} #{r['rank']}{span}"

    frame = ranks.assign(_cell=ranks.apply(text, axis=1))
    wide = frame.pivot_table(index=rows, columns=column, values="_cell", aggfunc="first", observed=True)
    columns = [c for c in dict.fromkeys(ranks[column].astype(str)) if c in wide.columns]
    wide = wide[columns]
    if order is not None:
        wide = wide.reindex([o for o in order if o in wide.index])
    wide = wide.rename(index=lambda k: names.get(k, k), columns=lambda k: names.get(k, k))
    wide.columns.name = None
    wide.index.names = [names.get(r, r) for r in rows]
    return wide


def leaders(ranks: pd.DataFrame) -> tuple[list[str], list[str]]:
    """In one ranked group: the methods tied for first among the methods (the best method and every
    method whose rank interval reaches its rank interval), and the controls that reach it too."""
    methods, controls = ranks[~ranks["control"].astype(bool)], ranks[ranks["control"].astype(bool)]
    if methods.empty:
        return [], []
    best = methods.loc[methods["rank"].idxmin()]

    def reach(frame):
        return sorted(frame.loc[frame["rank_low"] <= best["rank_high"], "explainer"].astype(str))

    return reach(methods), reach(controls)


def control_sentences(cases: pd.DataFrame, names: dict | None = None, ranks: pd.DataFrame | None = None) -> list[str]:
    """Every case of :func:`.ranking.controls_at_or_above` in words, one Markdown line per control
    and measure: the methods it ranks at or above, each with the cells where (perturbation on
    models), and how many of those cells it ranks clearly above. With ``ranks`` (the rankings the
    cases come from), a method at or below the control in every ranking where both appear is said
    so ("in all 42 rankings") instead of cell by cell."""
    names = {**NAMES, **(names or {})}
    lines = []
    if cases.empty:
        return lines
    by = [c for c in ("measure", "column") if c in cases.columns]
    cell = [c for c in ("model", "perturbation") if c in cases.columns]
    both = None
    if ranks is not None and cell:
        keyed = ranks.assign(_group=list(zip(*(ranks[c].astype(str) for c in [*by, *cell]))))
        both = keyed.groupby(keyed["explainer"].astype(str))["_group"].agg(set)
    for key, group in cases.groupby(["control", *by], sort=True, observed=True):
        control, measure = str(key[0]), str(key[1])
        beyond = len(key) > 2 and key[2] == "beyond"
        said = []
        for method, rows in group.groupby(group["method"].astype(str), sort=True):
            above = int((rows["relation"] == "above").sum())
            total = None
            if both is not None:
                shared = {g for g in both.get(method, set()) & both.get(control, set()) if g[:len(by)] == tuple(
                    str(k) for k in key[1:])}
                total = len(shared) if len(shared) == len(rows) and len(rows) > 1 else None
            where = f"in all {total} rankings" if total else (cells_text(rows, names) if cell else "")
            said.append(f"{names.get(method, method)} ({where}" + (f"; clearly above in {above}" if above else "")
                        + ")")
        what = names.get(measure, measure) + (" beyond random noise" if beyond else "")
        lines.append(f"- The **{names.get(control, control)}** ranks at or above " + ", ".join(said) + f" on {what}.")
    return lines


# measures on which a map that never moves scores exactly its baseline (the random map does not depend
# on the image, so no perturbation moves it), and the measure on which a map that ignores the model
# scores 1 (the random and the edge map)
_STILL = ("topk_intersection", "spearman", "ssim", "center_shift", "region_mass", "target_pearson", "frame_mse")


def by_construction(cases: pd.DataFrame) -> np.ndarray:
    """Per case of :func:`.ranking.controls_at_or_above`, whether the control's place follows from
    how it is built rather than from the method: the random map on a stability or map goal (beyond
    random noise 0, as left by the attack perfect: nothing moves it) and the random and edge maps in
    the model-randomisation check (1 by construction: they ignore the model)."""
    control, measure = cases["control"].astype(str), cases["measure"].astype(str)
    still = (control == "random_map") & measure.isin(_STILL)
    sanity = control.isin(["random_map", "edge_map"]) & (measure == "sanity_spearman")
    return (still | sanity).to_numpy()
