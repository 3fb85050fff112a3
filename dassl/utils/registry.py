"""Name -> object registries (trainers, datasets, evaluators)."""
from __future__ import annotations

from .tools import check_availability

__all__ = ["Registry", "build_from_registry"]


class Registry:
    """A named mapping filled by ``@REG.register()`` (decorator) or ``REG.register(obj)``.

    Objects are registered under ``obj.__name__``. A duplicate name raises KeyError unless
    ``force=True``, which overwrites.
    """

    def __init__(self, name: str):
        self._name = name
        self._obj_map: dict = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
            raise KeyError(
                'An object named "{}" was already registered in "{}" registry'.format(name, self._name)
            )
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        if obj is None:
            def wrapper(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class
            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError('Object name "{}" does not exist in "{}" registry'.format(name, self._name))
        return self._obj_map[name]

    def registered_names(self):
        return list(self._obj_map.keys())

    def __contains__(self, name):
        return name in self._obj_map

    def __repr__(self):
        return "Registry({!r}, {})".format(self._name, self.registered_names())


def build_from_registry(registry, name, kind, verbose, *args, **kwargs):
    """``registry.get(name)(*args, **kwargs)`` after an availability check that suggests the closest
    registered name; prints ``Loading <kind>: <name>`` when ``verbose``."""
    check_availability(name, registry.registered_names())
    if verbose:
        print("Loading {}: {}".format(kind, name))
    return registry.get(name)(*args, **kwargs)
