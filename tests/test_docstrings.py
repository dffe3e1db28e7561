"""The API reference is complete: every public class and method documents its parameters, with
types, and points at its guide with ``.. seealso::``."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from airflow_provider_clubcollect.version_compat import AIRFLOW_V_3_3_PLUS

MODULES = [
    "airflow_provider_clubcollect.hooks.clubcollect",
    "airflow_provider_clubcollect.operators.tickets",
    "airflow_provider_clubcollect.sensors.tickets",
    "airflow_provider_clubcollect.triggers.tickets",
    "airflow_provider_clubcollect.exceptions",
    "airflow_provider_clubcollect.sandbox.handle",
]
EXTRA_CLASSES = [("airflow_provider_clubcollect.retry", "Backoff")]
if AIRFLOW_V_3_3_PLUS:  # task retry policies arrived in Airflow 3.3
    EXTRA_CLASSES.append(("airflow_provider_clubcollect.retry", "ClubCollectRetryPolicy"))
FIXTURES = ["clubcollect_sandbox", "clubcollect_sandbox_server"]
#: ``:param <type> <name>:``, the type being at least one word before the name.
TYPED_PARAM = re.compile(r"^\s*:param (?P<type>\S.*?) (?P<name>\w+):", flags=re.MULTILINE)
UNTYPED_PARAM = re.compile(r"^\s*:param (?P<name>\w+):", flags=re.MULTILINE)


def _public_classes() -> list[type]:
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        found += [
            obj
            for attr, obj in vars(module).items()
            if inspect.isclass(obj) and obj.__module__ == name and not attr.startswith("_")
        ]
    found += [getattr(importlib.import_module(module), attr) for module, attr in EXTRA_CLASSES]
    return found


def _own_public_methods(cls: type) -> list[tuple[str, object]]:
    """Methods the class defines itself, except overrides of a base class from outside the provider
    (``execute``, ``__init__`` ...): Airflow documents those."""
    methods = []
    for name, obj in vars(cls).items():
        func = obj.__func__ if isinstance(obj, (staticmethod, classmethod)) else obj
        if name.startswith("_") or not inspect.isfunction(func):
            continue
        inherited_from = [base for base in cls.__mro__[1:] if name in vars(base)]
        if any(not base.__module__.startswith("airflow_provider_clubcollect") for base in inherited_from):
            continue
        methods.append((f"{cls.__name__}.{name}", func))
    return methods


def _documented(qualname: str, doc: str | None, expected_params: set[str]) -> list[str]:
    if not doc:
        return [f"{qualname}: no docstring"]
    problems = []
    if ".. seealso::" not in doc:
        problems.append(f"{qualname}: no '.. seealso::'")
    untyped = set(UNTYPED_PARAM.findall(doc))
    if untyped:
        problems.append(f"{qualname}: :param: without a type: {sorted(untyped)}")
    missing = expected_params - {m["name"] for m in TYPED_PARAM.finditer(doc)} - untyped
    if missing:
        problems.append(f"{qualname}: parameters not documented: {sorted(missing)}")
    return problems


def _signature_params(func: object) -> set[str]:
    params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    return {
        p.name
        for p in params
        if p.name not in ("self", "cls", "kwargs", "args") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def _cases() -> list[tuple[str, str | None, set[str]]]:
    cases = []
    for cls in _public_classes():
        init = vars(cls).get("__init__")
        cases.append((cls.__name__, cls.__doc__, _signature_params(init) if init else set()))
        methods = _own_public_methods(cls)
        cases += [(qualname, inspect.getdoc(func), _signature_params(func)) for qualname, func in methods]
    plugin = importlib.import_module("airflow_provider_clubcollect.sandbox.pytest_plugin")
    cases += [(name, inspect.getdoc(getattr(plugin, name)), set()) for name in FIXTURES]
    return cases


@pytest.mark.parametrize(("qualname", "doc", "params"), _cases(), ids=[case[0] for case in _cases()])
def test_public_api_is_documented(qualname: str, doc: str | None, params: set[str]) -> None:
    assert _documented(qualname, doc, params) == []


def test_template_fields_say_templated() -> None:
    for cls in _public_classes():
        # cleandoc: Python 3.13 dedents docstrings itself, older Pythons do not.
        doc = inspect.cleandoc(cls.__doc__ or "")
        for field in getattr(cls, "template_fields", ()):
            line = re.search(rf"^:param [^\n]* {field}:(.*(?:\n[ \t]+\S.*)*)", doc, flags=re.MULTILINE)
            assert line is not None, f"{cls.__name__}.{field} is not documented"
            assert "(templated)" in line[1], f"{cls.__name__}.{field}"
