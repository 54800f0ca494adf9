"""Plugins: plain objects with hook methods, found through the ``ipsecscope.plugins`` entry-point group.

A plugin package declares in its pyproject.toml::

    [project.entry-points."ipsecscope.plugins"]
    rekeytiming = "ipsecscope_rekeytiming:plugin"

where ``plugin`` is an object (or a class / zero-argument factory returning one) with any of:

- ``rules() -> Iterable[callable]`` — extra diagnosis rules, same signature as the built-ins in
  :mod:`ipsecscope.analysis.rules`: ``rule(table: SaTable, ctx: RuleContext) -> Iterable[Finding]``.
- ``vendor_ids() -> dict[bytes, str]`` — extra known Vendor ID payloads (prefix bytes → name).
- ``on_event(event: dict)`` — called with each tracker event (live mode: SA created/rekeyed/...).

Discovery reads entry-point *metadata* only; a plugin module is imported the first time one of its
hooks is needed (``harlequin`` does the same), so a broken or slow plugin never delays
``ipsecscope summary``. A plugin that fails to import is reported in :func:`plugin_errors` and
skipped. ``IPSECSCOPE_NO_PLUGINS=1`` disables all plugins (reproducible output, bug reports).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

GROUP = "ipsecscope.plugins"


@dataclass(slots=True)
class PluginInfo:
    name: str
    value: str  # "module:attr"
    dist: str | None
    entry_point: EntryPoint | None = None
    _obj: object | None = None
    error: str | None = None
    loaded: bool = False
    extra: dict = field(default_factory=dict)

    def load(self) -> object | None:
        """Import the plugin (once). Returns None, with ``error`` set, if that fails."""
        if self.loaded:
            return self._obj
        self.loaded = True
        try:
            obj = self.entry_point.load() if self.entry_point is not None else None
            if isinstance(obj, type) or (callable(obj) and not _has_hooks(obj)):
                obj = obj()
            self._obj = obj
        except Exception as exc:  # noqa: BLE001 - a third-party plugin may fail any way it likes
            self.error = f"{type(exc).__name__}: {exc}"
            self._obj = None
        return self._obj


_HOOKS = ("rules", "vendor_ids", "on_event")


def _has_hooks(obj: object) -> bool:
    return any(hasattr(obj, h) for h in _HOOKS)


_REGISTRY: list[PluginInfo] | None = None
_EXTRA: list[PluginInfo] = []


def discover(refresh: bool = False) -> list[PluginInfo]:
    """Installed plugins (metadata only: nothing is imported here)."""
    global _REGISTRY
    if os.environ.get("IPSECSCOPE_NO_PLUGINS"):
        return list(_EXTRA)
    if _REGISTRY is None or refresh:
        found = []
        for ep in entry_points(group=GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None)
            found.append(PluginInfo(ep.name, ep.value, dist, ep))
        found.sort(key=lambda p: p.name)
        _REGISTRY = found
    return _REGISTRY + _EXTRA


def register(obj: object, name: str | None = None) -> PluginInfo:
    """Register a plugin without installing a package (scripts, tests): either the object itself,
    or a ``"module:attr"`` string that is imported lazily like an entry point."""
    if isinstance(obj, str):
        ep = EntryPoint(name=name or obj, value=obj, group=GROUP)
        info = PluginInfo(name or obj, obj, None, ep)
    else:
        info = PluginInfo(name or type(obj).__name__, f"<object {type(obj).__name__}>", None, None, obj,
                          loaded=True)
    _EXTRA.append(info)
    return info


def unregister(info: PluginInfo) -> None:
    if info in _EXTRA:
        _EXTRA.remove(info)


def _hook(name: str) -> Iterable[tuple[PluginInfo, Callable]]:
    for info in discover():
        obj = info.load()
        fn = getattr(obj, name, None) if obj is not None else None
        if callable(fn):
            yield info, fn


def plugin_rules() -> list[tuple[str, Callable]]:
    """(name, rule function) from every plugin's ``rules()`` hook."""
    out = []
    for info, fn in _hook("rules"):
        try:
            for i, r in enumerate(fn() or ()):
                out.append((f"{info.name}:{getattr(r, '__name__', i)}", r))
        except Exception as exc:  # noqa: BLE001
            info.error = f"rules(): {type(exc).__name__}: {exc}"
    return out


def plugin_vendor_ids() -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for info, fn in _hook("vendor_ids"):
        try:
            out.update(fn() or {})
        except Exception as exc:  # noqa: BLE001
            info.error = f"vendor_ids(): {type(exc).__name__}: {exc}"
    return out


def event_listeners() -> list[Callable[[dict], None]]:
    """``on_event`` hooks, to append to ``Tracker.listeners``."""
    return [fn for _info, fn in _hook("on_event")]


def plugin_errors() -> list[tuple[str, str]]:
    return [(p.name, p.error) for p in discover() if p.error]
