"""Drawing the points of a space with Optuna's samplers, deterministic for a seed.

random (RandomSampler), grid (GridSampler: every point of a finite space once, in the sampler's
seeded order), sobol (QMCSampler, scrambled Sobol' points: an even cover of the box; needs
scipy). tpe and nsga2 learn from trained errors (study.py); a space's points before any training
are their start, random draws, so counting draws them as random does.
"""

from __future__ import annotations

import warnings

from ..base.errors import SkdslError
from ..core.space import Choice, IntRange, Space

SAMPLERS = ("random", "grid", "sobol", "tpe", "nsga2")
ADAPTIVE = ("tpe", "nsga2")


def require_optuna():
    """The optuna module, or SK563 saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise SkdslError("skdsl explore needs Optuna, which is not installed", code="SK563",
                         hint="pip install 'skdsl[explore]'   (or: pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(space: Space) -> dict:
    """Each dimension as the Optuna distribution a sampler draws it from."""
    optuna = require_optuna()
    made = {}
    for dimension in space.dimensions:
        domain = dimension.domain
        if isinstance(domain, Choice):
            made[dimension.name] = optuna.distributions.CategoricalDistribution(domain.values)
        elif isinstance(domain, IntRange):
            made[dimension.name] = optuna.distributions.IntDistribution(
                domain.low, domain.high, step=domain.step, log=domain.log)
        else:
            made[dimension.name] = optuna.distributions.FloatDistribution(
                domain.low, domain.high, step=domain.step, log=domain.log)
    return made


def suggest(trial, space: Space) -> dict:
    """A point of `space` from an Optuna trial (its sampler decides), NAME -> value."""
    values = {}
    for dimension in space.dimensions:
        name, domain = dimension.name, dimension.domain
        if isinstance(domain, Choice):
            values[name] = trial.suggest_categorical(name, domain.values)
        elif isinstance(domain, IntRange):
            values[name] = trial.suggest_int(name, domain.low, domain.high, step=domain.step,
                                             log=domain.log)
        else:
            values[name] = trial.suggest_float(name, domain.low, domain.high, step=domain.step,
                                               log=domain.log)
    return values


def make_sampler(name: str, space: Space, seed: int, for_counting: bool = True):
    """The Optuna sampler called `name`, seeded. SK565 for a grid over an infinite space, or
    Sobol' points without scipy."""
    optuna = require_optuna()
    if name == "grid":
        axes = {d.name: d.domain.finite() for d in space.dimensions}
        endless = [n for n, values in axes.items() if values is None]
        if endless:
            raise SkdslError(f"--sampler grid walks finite domains, and {endless[0]} ranges "
                             "over all numbers of an interval", code="SK565",
                             hint="give it a step (0.5..2.0 step 0.25), or use "
                                  "--sampler random or sobol")
        return optuna.samplers.GridSampler({n: list(v) for n, v in axes.items()}, seed=seed)
    if name == "sobol":
        try:
            import scipy  # noqa: F401  (QMCSampler's points come from scipy.stats.qmc)
        except ImportError:
            raise SkdslError("--sampler sobol needs scipy, which is not installed",
                             code="SK565", hint="pip install 'skdsl[explore]'  (or: pip "
                                                "install scipy), or use --sampler random") from None
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                          warn_independent_sampling=False)
    if name == "random" or (for_counting and name in ADAPTIVE):
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise SkdslError(f"unknown sampler '{name}'", code="SK565",
                     hint=f"choose from {', '.join(SAMPLERS)}")


def draw(space: Space, count: int, sampler: str = "random", seed: int = 0) -> list[dict]:
    """`count` points of `space` (fewer for a grid smaller than that: each point once), as
    NAME -> value dicts, the same for the same seed."""
    optuna = require_optuna()
    if count <= 0 or not space:
        return []
    with warnings.catch_warnings():  # QMCSampler is "experimental" since Optuna 3.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=make_sampler(sampler, space, seed))
    points: list[dict] = []

    def drawn(trial) -> float:
        points.append(suggest(trial, space))
        # Pruned: done, with no value to learn from; the next draw knows it was drawn (a grid
        # moves on, Sobol' takes the next point of its sequence).
        raise optuna.TrialPruned()

    limit = min(count, space.size()) if sampler == "grid" else count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(drawn, n_trials=int(limit))
    return points
