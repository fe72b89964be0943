"""Named training recipes (``keras_resnet.presets.RECIPES``) resolved into ``train`` options.

A recipe is data: the ``TrainConfig`` values it sets. ``resolve_recipe`` lays the options a
caller gave explicitly over it, scales the learning rate with the batch size where the recipe
says so (Goyal et al. 2017: ``learning_rate x batch / learning_rate_batch_size``) and returns
the options ``TrainConfig`` takes, ``recipe`` included, so ``metrics.json`` records the
resolved values.
"""

from __future__ import annotations

from keras_resnet import checks, presets
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
        recipe: a name of ``keras_resnet.presets.RECIPES`` (``"cifar"``, ``"imagenet"``).
        options: the options the caller gave (``TrainConfig`` fields); ``model_options`` and
            ``data_options`` are merged key by key, a None for a value the recipe sets keeps
            the recipe's. A ``warmup_steps`` or a non-cosine ``schedule`` given without
            ``warmup_epochs`` drops the recipe's warm-up epochs.
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
    if "warmup_epochs" not in given and (given.get("warmup_steps")
                                         or given.get("schedule", "cosine") != "cosine"):
        resolved["warmup_epochs"] = 0  # the recipe's warm-up gives way to the caller's choice
    if reference and "learning_rate" not in given:
        batch = dataset_batch_size or resolved.get("batch_size") or DEFAULT_BATCH_SIZE
        resolved["learning_rate"] = values["learning_rate"] * batch / reference
    return resolved
