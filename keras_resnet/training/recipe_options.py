"""Named training recipes (``keras_resnet.modeling.presets.RECIPES``) resolved into ``train`` options.

A recipe is data: the ``TrainConfig`` values it sets. ``resolve_recipe`` lays the options a
caller gave explicitly over it, scales the learning rate with the batch size where the recipe
says so (Goyal et al. 2017: ``learning_rate x batch / learning_rate_batch_size``) and returns
the options ``TrainConfig`` takes, ``recipe`` included, so ``metrics.json`` records the
resolved values.
"""

from __future__ import annotations

from keras_resnet import checks
from keras_resnet.modeling import presets
from keras_resnet.constants import DEFAULT_BATCH_SIZE, DEFAULT_RECIPE

# Keys of a recipe that are not TrainConfig fields.
_SCALING_KEY = "learning_rate_batch_size"


def recipe_values(recipe: str) -> dict:
    """The values ``recipe`` sets (a copy of ``presets.RECIPES[recipe]``).

    Raises:
        TypeError, ValueError: ``recipe`` is not a name of ``presets.RECIPES``.
    """
    if not isinstance(recipe, str):
        raise TypeError(f"recipe must be one of {', '.join(map(repr, presets.RECIPES))}; "
                        f"got {recipe!r}")
    checks.one_of(recipe, "recipe", presets.RECIPES)
    values = dict(presets.RECIPES[recipe])
    for key in ("model_options", "data_options"):
        values[key] = dict(values.get(key, {}))
    return values


def resolve_recipe(recipe: str = DEFAULT_RECIPE, options: dict | None = None, *,
                   dataset_batch_size: int | None = None) -> dict:
    """``train``'s options: ``recipe``'s values with the explicit ``options`` laid over them.

    Args:
        recipe: a name of ``keras_resnet.modeling.presets.RECIPES`` (``"cifar"``, ``"imagenet"``).
        options: the options the caller gave (``TrainConfig`` fields); ``model_options`` and
            ``data_options`` are merged key by key, a None for a value the recipe sets keeps
            the recipe's. A ``warmup_steps`` or a ``schedule`` other than the recipe's given
            without ``warmup_epochs`` drops the recipe's warm-up epochs (and another
            ``schedule`` its ``step_boundaries``).
        dataset_batch_size: the batch of a ``Dataset`` object the run trains on: it replaces
            the recipe's batch size, and the recipe's ``data_options`` do not apply.

    Returns:
        A dict of ``TrainConfig`` fields, ``"recipe"`` included. When the recipe scales the
        learning rate with the batch and ``learning_rate`` was not given, it is
        ``learning_rate * batch_size / learning_rate_batch_size``.

    Raises:
        TypeError, ValueError: for an unknown recipe.
    """
    values = recipe_values(recipe)
    given = {k: v for k, v in (options or {}).items() if not (v is None and k in values)}
    reference = values.pop(_SCALING_KEY, None)
    if dataset_batch_size is not None:
        values.pop("batch_size", None)
        values["data_options"] = {}
    resolved = {**values, **given, "recipe": recipe}
    for key in ("model_options", "data_options"):
        resolved[key] = {**values[key], **dict(given.get(key) or {})}
    recipe_schedule = values.get("schedule")
    other_schedule = given.get("schedule", recipe_schedule) != recipe_schedule
    if "warmup_epochs" not in given and (given.get("warmup_steps") or other_schedule):
        resolved["warmup_epochs"] = 0  # the recipe's warm-up gives way to the caller's choice
    if "step_boundaries" not in given and other_schedule:
        resolved.pop("step_boundaries", None)  # the recipe's decay epochs belong to its schedule
    if reference and "learning_rate" not in given:
        batch = dataset_batch_size or resolved.get("batch_size") or DEFAULT_BATCH_SIZE
        resolved["learning_rate"] = values["learning_rate"] * batch / reference
    return resolved


def check_step_boundaries(boundaries, schedule: str):
    """``TrainConfig.step_boundaries``: None, or increasing fractions of training in (0, 1)
    where a ``"step"`` schedule divides the rate by 10.

    Returns:
        None or a tuple of floats.

    Raises:
        TypeError: not a list/tuple of numbers.
        ValueError: not increasing, outside (0, 1), or given with another schedule.
    """
    if boundaries is None:
        return None
    accepted = "increasing fractions of training in (0, 1) (e.g. [0.5, 0.75]) or None"
    if not isinstance(boundaries, (list, tuple)):
        raise TypeError(f"step_boundaries must be {accepted}; got {boundaries!r}")
    values = tuple(checks.number(b, "step_boundaries", minimum=0, maximum=1,
                                 min_inclusive=False, max_inclusive=False) for b in boundaries)
    if not values or any(a >= b for a, b in zip(values, values[1:])):
        raise ValueError(f"step_boundaries must be {accepted}; got {boundaries!r}")
    if schedule != "step":
        raise ValueError(f"step_boundaries needs schedule 'step'; got {boundaries!r} with "
                         f"schedule {schedule!r}")
    return values


def schedule_options(config) -> dict:
    """The ``PaperSchedule`` keywords a ``TrainConfig`` sets beyond rate, steps and kind."""
    return {} if config.step_boundaries is None else {"boundaries": config.step_boundaries}
