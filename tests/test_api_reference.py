"""The API reference documents exactly each public module's ``__all__``, and every module is public or internal."""

from __future__ import annotations

import importlib
import inspect
import re

from tests.conftest import REPO_ROOT
from tests.test_import_graph import MODULES, NAME

API_RST = REPO_ROOT / "docs" / "api.rst"
DIRECTIVE = re.compile(r"^\.\. (auto\w+):: (\S+)\n((?:    .*\n)*)", re.MULTILINE)

#: Modules the reference leaves out: internals, package roots, and the sandbox's parts (the
#: ``sandbox`` package's ``__all__`` names them).  A new module must be put here or in the reference.
NOT_IN_REFERENCE = {
    NAME,
    *(f"{NAME}.{name}" for name in ("hooks", "operators", "sensors", "triggers")),
    *(
        f"{NAME}.{name}"
        for name in (
            "_task_retry",
            "connection",
            "escalation",
            "examples",
            "limiter",
            "observability",
            "paging",
            "transport",
            "version_compat",
        )
    ),
    *(
        f"{NAME}.sandbox.{name}"
        for name in ("__main__", "app", "client", "errors", "faults", "handle", "seed", "server", "state")
    ),
}


def _reference() -> list[tuple[str, str, str]]:
    return DIRECTIVE.findall(API_RST.read_text())


def test_the_reference_is_one_automodule_with_bare_members_per_public_module() -> None:
    directives = _reference()
    assert directives, "no directive found: has the page's format changed?"
    for kind, target, options in directives:
        assert (kind, options.strip()) == ("automodule", ":members:"), f"{target}: document __all__, not a list"
    targets = [target for _kind, target, _options in directives]
    assert len(targets) == len(set(targets))


def test_every_public_module_declares_all_of_documented_names() -> None:
    for _kind, target, _options in _reference():
        module = importlib.import_module(target)
        names = getattr(module, "__all__", None)
        assert names, f"{target} has no __all__"
        for name in names:
            value = getattr(module, name)
            assert inspect.getdoc(value), f"{target}.{name} has no docstring"


def test_every_module_is_in_the_reference_or_named_internal() -> None:
    public = {target for _kind, target, _options in _reference()}
    assert public.isdisjoint(NOT_IN_REFERENCE)
    assert set(MODULES) == public | NOT_IN_REFERENCE
