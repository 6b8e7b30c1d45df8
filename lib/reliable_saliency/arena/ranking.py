"""Ranks of the explainers per measure with bootstrap intervals over images, and every case where a
control ranks at or above a method.

Within one group (model x perturbation x measure by default) the explainers are ranked by their
mean over the images (rank 1 is the best: the highest mean where a higher value is better). The
images are resampled with replacement, the same resample for every explainer (they are measured
on the same images), and each resample ranks them again; a rank's interval holds the central
``level`` of its bootstrap ranks. Explainers whose rank intervals overlap are tied.

``column="beyond"`` ranks ``value - baseline`` (the measure under an attack beyond the same measure
under random noise of the same budget, or beyond the row's own null), the quantity a method gets
credit for. NaN values (an image where a measure is undefined) are left out of that explainer's
mean; an explainer with no value in a group (it refuses the model) is not ranked there.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

__all__ = ["rank_table", "controls_at_or_above", "RANK_COLUMNS"]

RANK_COLUMNS = ["explainer", "control", "n", "mean", "mean_low", "mean_high", "rank", "rank_low", "rank_high",
                "tied_with"]


def _ranks(means: np.ndarray, higher: bool) -> np.ndarray:
    """Competition ranks (1 = best) along the last axis; NaN means rank last."""
    key = np.where(np.isnan(means), -np.inf, means if higher else -means)
    # rank = 1 + number of strictly better entries
    return 1 + (key[..., None, :] > key[..., :, None]).sum(-1)


def _group_ranks(wide: pd.DataFrame, higher: bool, controls: set, rounds: int, seed: int, level: float):
    values = wide.to_numpy(dtype=float)  # (images, explainers)
    keep = ~np.all(np.isnan(values), axis=0)
    values, names = values[:, keep], [name for name, k in zip(wide.columns, keep) if k]
    if not names:
        return []
    counts = (~np.isnan(values)).sum(0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample that drew only an image's NaN
        means = np.nanmean(values, axis=0)
        picks = np.random.default_rng(seed).integers(0, values.shape[0], size=(rounds, values.shape[0]))
        boot = np.nanmean(values[picks], axis=1)  # (rounds, explainers)
    ranks, boot_ranks = _ranks(means, higher), _ranks(boot, higher)
    tail = (1 - level) / 2
    rank_low = np.floor(np.quantile(boot_ranks, tail, axis=0, method="lower")).astype(int)
    rank_high = np.ceil(np.quantile(boot_ranks, 1 - tail, axis=0, method="higher")).astype(int)
    mean_low, mean_high = np.nanquantile(boot, tail, axis=0), np.nanquantile(boot, 1 - tail, axis=0)
    rows = []
    for j, name in enumerate(names):
        tied = [other for i, other in enumerate(names)
                if i != j and rank_low[i] <= rank_high[j] and rank_low[j] <= rank_high[i]]
        rows.append({"explainer": name, "control": name in controls, "n": int(counts[j]), "mean": means[j],
                     "mean_low": mean_low[j], "mean_high": mean_high[j], "rank": int(ranks[j]),
                     "rank_low": int(rank_low[j]), "rank_high": int(rank_high[j]),
                     "tied_with": ", ".join(sorted(tied))})
    return rows


def rank_table(table: pd.DataFrame, *, column: str = "value", by=("model", "perturbation", "measure"),
               rounds: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per group of ``by``, every explainer's mean, its bootstrap interval and its rank with its
    interval, ties where rank intervals overlap (module docstring). ``column``: ``"value"`` or
    ``"beyond"`` (``value - baseline``). Columns: ``by``, ``column``, :data:`RANK_COLUMNS`."""
    if column not in ("value", "beyond"):
        raise ValueError(f"column must be 'value' or 'beyond' (value - baseline), got {column!r}")
    needed = {"image", "explainer", "value", "higher_is_better", "control", *by} | ({"baseline"} if column == "beyond"
                                                                                      else set())
    missing = sorted(needed - set(table.columns))
    if missing:
        raise ValueError(f"the table lacks the column(s) {missing}")
    if not 0 < level < 1 or rounds < 10:
        raise ValueError(f"level must lie in (0, 1) and rounds be at least 10, got {level}, {rounds}")
    data = table.assign(_score=table["value"] - table["baseline"] if column == "beyond" else table["value"])
    controls = set(data.loc[data["control"].astype(bool), "explainer"].astype(str))
    out = []
    for key, group in data.groupby(list(by), observed=True, sort=True):
        higher = group["higher_is_better"].astype(bool).unique()
        if len(higher) != 1:
            raise ValueError(f"group {key} mixes measures of both directions; group by the measure")
        wide = group.pivot_table(index="image", columns="explainer", values="_score", aggfunc="first",
                                 dropna=False, observed=True)
        for row in _group_ranks(wide, bool(higher[0]), controls, rounds, seed, level):
            out.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "column": column, **row})
    return pd.DataFrame(out, columns=[*by, "column", *RANK_COLUMNS])


def controls_at_or_above(ranks: pd.DataFrame, by=("model", "perturbation", "measure")) -> pd.DataFrame:
    """Every (control, method) pair of a group of :func:`rank_table` where the control is not
    clearly below the method: ``"above"`` where the control's whole rank interval is better than the
    method's, ``"tied"`` where the intervals overlap. Columns: ``by``, column, control, method,
    relation, and both means and rank intervals."""
    by = [b for b in by if b in ranks.columns] + ["column"]
    rows = []
    for key, group in ranks.groupby(by, observed=True, sort=True):
        controls, methods = group[group["control"]], group[~group["control"]]
        for _, c in controls.iterrows():
            for _, m in methods.iterrows():
                if c["rank_low"] > m["rank_high"]:
                    continue  # clearly below
                relation = "above" if c["rank_high"] < m["rank_low"] else "tied"
                rows.append({**dict(zip(by, key)), "control": c["explainer"], "method": m["explainer"],
                             "relation": relation, "control_mean": c["mean"], "method_mean": m["mean"],
                             "control_rank": f"{c['rank']} ({c['rank_low']}-{c['rank_high']})",
                             "method_rank": f"{m['rank']} ({m['rank_low']}-{m['rank_high']})"})
    columns = [*by, "control", "method", "relation", "control_mean", "method_mean", "control_rank", "method_rank"]
    return pd.DataFrame(rows, columns=columns)
