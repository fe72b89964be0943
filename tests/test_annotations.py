"""Every public function and method of keras_resnet.modeling and of the top-level API is typed.

Public: a name without a leading underscore, plus ``__init__``. Every parameter but
``self``/``cls``, ``*args`` and ``**kwargs`` needs an annotation, and so does the return.
"""

import importlib
import inspect
import pkgutil
import typing

import keras_resnet
import keras_resnet.modeling


def _methods(cls):
    """``(qualified name, function)`` of the methods ``cls`` itself defines."""
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        if inspect.isfunction(value):
            yield f"{cls.__qualname__}.{name}", value


def _public_callables(objects):
    """``(qualified name, function)`` of the functions and the classes' methods in ``objects``."""
    for obj in objects:
        if inspect.isclass(obj):
            yield from ((f"{obj.__module__}.{name}", f) for name, f in _methods(obj))
        elif inspect.isfunction(obj):
            yield f"{obj.__module__}.{obj.__qualname__}", obj


def missing_annotations(function) -> list[str]:
    """What ``function`` leaves unannotated: parameter names, and ``"return"``."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    missing = [p.name for i, p in enumerate(parameters)
               if p.annotation is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               and not (i == 0 and p.name in ("self", "cls"))]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def _modeling_objects():
    for info in pkgutil.iter_modules(keras_resnet.modeling.__path__):
        module = importlib.import_module(f"keras_resnet.modeling.{info.name}")
        for name, value in vars(module).items():
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__:
                yield value


def _report(objects):
    return sorted(f"{name}: {', '.join(missing)}" for name, function in _public_callables(objects)
                  if (missing := missing_annotations(function)))


def test_every_public_function_of_modeling_is_annotated():
    assert _report(_modeling_objects()) == []


def test_the_annotations_of_modeling_name_real_types():
    for name, function in _public_callables(_modeling_objects()):
        typing.get_type_hints(function)  # a NameError names a type that was never imported


def test_every_name_of_the_top_level_api_is_annotated():
    objects = [getattr(keras_resnet, name) for name in keras_resnet.__all__]
    assert _report(objects) == []


def test_the_check_finds_a_missing_annotation():
    def typed(x: int, *args, y: str = "", **kwargs) -> int:
        return x

    def untyped(x, y: int = 1):
        return x

    class Layer:
        def __init__(self, units: int) -> None:
            self.units = units

        def call(self, inputs):
            return inputs

        @property
        def size(self):
            return self.units

    assert missing_annotations(typed) == []
    assert missing_annotations(untyped) == ["x", "return"]
    assert _report([typed, untyped, Layer]) == [
        f"{__name__}.test_the_check_finds_a_missing_annotation.<locals>.Layer.call: inputs, return",
        f"{__name__}.test_the_check_finds_a_missing_annotation.<locals>.Layer.size: return",
        f"{__name__}.test_the_check_finds_a_missing_annotation.<locals>.untyped: x, return"]
