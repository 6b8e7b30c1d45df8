"""The arena (issue 27): every explainer against every model and perturbation under one protocol,
with the controls, through the result store; one long table, ranks with bootstrap intervals, and
the cases where a control ranks at or above a method.

- :mod:`.settings`: the axes as data and the profiles (``smoke``, ``book``, ``paper``);
- :mod:`.controls`: the random map, the edge map and the smoothed |gradient| as explainers;
- :mod:`.routes`: the scored maps and how each attack is aimed at them;
- :mod:`.perturb`, :mod:`.measures`, :mod:`.cells`, :mod:`.localisation`: one cell's work;
- :mod:`.harness`: :func:`run_arena`, the long table;
- :mod:`.ranking`: ranks with bootstrap intervals, controls at or above methods;
- :mod:`.strength`: how strong each attack was (:func:`.strength.strength_table`), and what a weak
  one does to a verdict (read by the chapter, not imported here: the store key leaves it out);
- :mod:`.estimate`: the CPU time of a profile from pass counts.

Nothing outside this package imports it (a chapter's run key hashes the modules it imports).
"""

from .controls import CONTROLS, edge_map, random_map, smoothed_gradient, sobel_magnitude
from .estimate import estimate, estimate_text
from .harness import COLUMNS, measures_of, run_arena
from .ranking import controls_at_or_above, rank_table
from .settings import (ATTACKS, CONTROL_NAMES, EXPLAINERS, HIGHER_IS_BETTER, MEASURES, METHODS, MODELS, PERTURBATIONS,
                       PROFILES, ArenaSettings, arena_settings)

__all__ = [
    "run_arena", "COLUMNS", "measures_of", "arena_settings", "ArenaSettings", "PROFILES",
    "rank_table", "controls_at_or_above", "estimate", "estimate_text",
    "EXPLAINERS", "METHODS", "CONTROL_NAMES", "MODELS", "PERTURBATIONS", "ATTACKS", "MEASURES", "HIGHER_IS_BETTER",
    "CONTROLS", "random_map", "edge_map", "smoothed_gradient", "sobel_magnitude",
]
