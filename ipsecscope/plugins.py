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
``ipsecscope summary``. The metadata is read straight from the ``*.dist-info`` / ``*.egg-info``
directories on ``sys.path``, as :func:`importlib.metadata.entry_points` finds them: importing
``importlib.metadata`` itself (email, zipfile, csv...) cost every analysis command ~30 ms of
start-up; it is still used where that scan cannot see (zipped paths, other metadata finders). A plugin that fails to import is reported in :func:`plugin_errors` and
skipped. ``IPSECSCOPE_NO_PLUGINS=1`` disables all plugins (reproducible output, bug reports).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

GROUP = "ipsecscope.plugins"


@dataclass(slots=True)
class PluginInfo:
    """One plugin: its entry point (``value`` = "module:attr", imported by :meth:`load`) and the
    distribution that declares it."""

    name: str
    value: str  # "module:attr"
    dist: str | None
    importable: bool = True  # False: an object registered as it is (nothing to import)
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
            obj = _resolve(self.value) if self.importable else None
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

# An entry point's object reference: "module.sub:attr.attr" with optional "[extras]" (the
# packaging specification's grammar, as importlib.metadata.EntryPoint reads it).
_REF = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


def _resolve(value: str) -> object:
    m = _REF.match(value)
    if m is None:
        raise ValueError(f"entry point {value!r} is not 'module:attr'")
    obj = importlib.import_module(m.group("module"))
    for attr in filter(None, (m.group("attr") or "").split(".")):
        obj = getattr(obj, attr)
    return obj


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _scan(group: str) -> list[tuple[str, str, str]] | None:
    """(name, value, distribution) of ``group`` in every distribution on ``sys.path``, the first of
    a name winning, as :func:`importlib.metadata.entry_points` gives them; None where this scan
    cannot see everything (a zipped path entry, a finder that serves metadata of its own)."""
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if hasattr(finder, "find_distributions") and finder is not PathFinder:
            return None
    found: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    header = f"[{group}]"
    for entry in sys.path:
        try:
            children = os.listdir(entry or ".")
        except NotADirectoryError:
            return None  # a zip file or an egg: importlib.metadata reads those
        except OSError:
            continue
        for child in children:
            low = child.lower()
            if not low.endswith((".dist-info", ".egg-info")):
                continue
            dist = _norm(os.path.splitext(child)[0].partition("-")[0])
            if dist in seen:
                continue
            seen.add(dist)
            try:
                with open(os.path.join(entry or ".", child, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            if header in text:
                where = os.path.join(entry or ".", child)
                found += [(n, v, _dist_name(where) or dist) for n, v in _section(text, group)]
    return found


def _dist_name(where: str) -> str | None:
    """The ``Name:`` of a distribution's core metadata (METADATA, or PKG-INFO of an egg-info)."""
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(where, meta), encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Name:"):
                        return line[5:].strip()
                    if not line.strip():
                        break  # end of the headers
        except OSError:
            continue
    return None


def _section(text: str, group: str) -> Iterable[tuple[str, str]]:
    """The ``name = value`` lines of ``[group]`` in an entry_points.txt (an INI file)."""
    inside = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            inside = line[1:-1].strip() == group
        elif inside and "=" in line:
            name, _, value = line.partition("=")
            yield name.strip(), value.strip()


def discover(refresh: bool = False) -> list[PluginInfo]:
    """Installed plugins (metadata only: nothing is imported here)."""
    global _REGISTRY
    if os.environ.get("IPSECSCOPE_NO_PLUGINS"):
        return list(_EXTRA)
    if _REGISTRY is None or refresh:
        eps = _scan(GROUP)
        if eps is None:
            from importlib.metadata import entry_points

            eps = [(ep.name, ep.value, getattr(getattr(ep, "dist", None), "name", None))
                   for ep in entry_points(group=GROUP)]
        found = [PluginInfo(name, value, dist) for name, value, dist in eps]
        found.sort(key=lambda p: p.name)
        _REGISTRY = found
    return _REGISTRY + _EXTRA


def register(obj: object, name: str | None = None) -> PluginInfo:
    """Register a plugin without installing a package (scripts, tests): either the object itself,
    or a ``"module:attr"`` string that is imported lazily like an entry point."""
    if isinstance(obj, str):
        info = PluginInfo(name or obj, obj, None)
    else:
        info = PluginInfo(name or type(obj).__name__, f"<object {type(obj).__name__}>", None, False, obj,
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
