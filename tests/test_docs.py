"""The docs say what the code does.

The connection page's environment variables, the sandbox page's options and fields, and every page's
Python snippets and the signatures it shows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path

CONNECTION_PAGE = (REPO_ROOT / "docs" / "connection.rst").read_text()


def _exported(form_start: str) -> str:
    """The value of the page's ``export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='...'`` line that starts so."""
    values = re.findall(r"export AIRFLOW_CONN_CLUBCOLLECT_DEFAULT='([^']+)'", CONNECTION_PAGE)
    (value,) = [v for v in values if v.startswith(form_start)]
    return value


@pytest.mark.parametrize(
    ("form_start", "base_url", "timeout", "max_retries"),
    [
        ('{"conn_type"', "https://sandbox.clubcollect.com/api", 60.0, 3),
        ("clubcollect://:YOUR_KEY@sandbox", "https://sandbox.clubcollect.com/api", 60.0, 3),
        ("clubcollect://:YOUR_KEY@http%3A", "http://127.0.0.1:8765/api", 30.0, 5),
    ],
)
def test_connection_page_env_vars_mean_what_it_says(
    form_start: str, base_url: str, timeout: float, max_retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", _exported(form_start))
    settings = ClubCollectHook().settings
    assert (settings.base_url, settings.api_key, settings.timeout, settings.max_retries) == (
        base_url,
        "YOUR_KEY",
        timeout,
        max_retries,
    )


def test_connection_page_host_port_schema_uri_means_https(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook

    uri = "clubcollect://:KEY@127.0.0.1:8765/api"
    assert f"``{uri}``" in CONNECTION_PAGE
    monkeypatch.setenv("AIRFLOW_CONN_CLUBCOLLECT_DEFAULT", uri)
    assert ClubCollectHook().settings.base_url == "https://127.0.0.1:8765/api"


# --- the sandbox page names every option, control call, fault setting, kind and field the code has ---

SANDBOX_PAGE = (REPO_ROOT / "docs" / "sandbox.rst").read_text()


def _between(page: str, start: str, end: str) -> str:
    return page[page.index(start) : page.index(end)]


def _first_cells(table: str) -> list[str]:
    """The first cell of each row of an RST list-table, the header row left out."""
    return re.findall(r"^   \* - (.+)$", table, re.MULTILINE)[1:]


def test_sandbox_page_lists_every_command_line_option() -> None:
    from airflow_provider_clubcollect.sandbox.__main__ import build_parser

    section = _between(SANDBOX_PAGE, ".. _sandbox-options:", ".. _sandbox-control-api:")
    documented = [re.match(r"``(--[a-z-]+)", cell)[1] for cell in _first_cells(section)]  # type: ignore[index]
    in_code = [option for action in build_parser()._actions for option in action.option_strings]
    assert documented == [option for option in in_code if option.startswith("--") and option != "--help"]


def test_sandbox_page_lists_every_control_call() -> None:
    from fastapi.routing import APIRoute

    from airflow_provider_clubcollect.sandbox.app import CONTROL_PREFIX, create_app
    from airflow_provider_clubcollect.sandbox.state import SandboxState

    section = _between(SANDBOX_PAGE, ".. _sandbox-control-api:", ".. _sandbox-faults:")
    documented = {tuple(re.fullmatch(r"``([A-Z]+) (\S+)``", cell).groups()) for cell in _first_cells(section)}  # type: ignore[union-attr]
    routes = [route for route in create_app(SandboxState()).routes if isinstance(route, APIRoute)]
    in_code = {
        (method, route.path) for route in routes if route.path.startswith(CONTROL_PREFIX) for method in route.methods
    }
    assert documented == in_code


def _default(value: object) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_sandbox_page_lists_every_fault_setting_kind_and_field() -> None:
    import dataclasses

    from airflow_provider_clubcollect.sandbox.faults import FAULTS, Fault, FaultSettings

    settings_table, kinds_table = _between(SANDBOX_PAGE, ".. _sandbox-faults:", ".. _sandbox-budget:").split(
        "Each scripted fault is an object"
    )
    documented = {re.fullmatch(r"``(\w+)``", cell)[1] for cell in _first_cells(settings_table)}  # type: ignore[index]
    assert documented == {item.name for item in dataclasses.fields(FaultSettings) if item.init}
    # Every kind with its own fields and their defaults: "``error`` (``status``, 500)".
    common = {item.name for item in dataclasses.fields(Fault)}
    assert {"method", "path_regex"} == common
    assert all(f"``{name}``" in kinds_table for name in common)
    documented_kinds = {
        match[1]: re.findall(r"``(\w+)``, ([^)]+)", match[2] or "")
        for match in (re.fullmatch(r"``(\w+)``(?: \((.+)\))?", cell) for cell in _first_cells(kinds_table))
        if match
    }
    assert documented_kinds == {
        name: [(item.name, _default(item.default)) for item in dataclasses.fields(kind) if item.name not in common]
        for name, kind in FAULTS.items()
    }


def test_readme_getting_started_is_the_pages() -> None:
    """The README's first commands are docs/getting-started.rst's, which tests/test_getting_started.py runs."""
    readme = (REPO_ROOT / "README.md").read_text()
    (commands,) = re.findall(r"^## Getting started\n.*?```bash\n(.*?)```", readme, re.DOTALL | re.MULTILINE)
    page_lines = {line.strip() for line in (REPO_ROOT / "docs" / "getting-started.rst").read_text().splitlines()}
    lines = [line for line in commands.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 11
    assert [line for line in lines if line not in page_lines] == []


# --- every page's Python, and every signature a page shows, against the code -----------------------
#
# Python code blocks must parse; each call of a provider name in them, or in an inline literal such as
# ``create_ticket(invoice_id, message)``, must bind to the real signature (a renamed or removed parameter,
# a keyword-only one passed by position).  A literal that shows a signature (a ``code-block:: text``, a
# ``*`` or annotation, or every parameter named) must also match each parameter's kind (positional or
# keyword-only) and each default it writes out.

DOC_FILES = sorted(
    [path for path in (REPO_ROOT / "docs").rglob("*.rst") if "_build" not in path.parts] + [REPO_ROOT / "README.md"]
)


def _public_callables() -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Provider classes and functions by name, and the public methods of its hook and sandbox client by name."""
    import importlib

    from airflow_provider_clubcollect.hooks.clubcollect import ClubCollectHook
    from airflow_provider_clubcollect.sandbox.client import SandboxClient

    names: dict[str, Any] = {}
    for module_name in (
        "hooks.clubcollect",
        "operators.tickets",
        "sensors.tickets",
        "triggers.tickets",
        "retry",
        "review",
        "exceptions",
        "sandbox.server",
        "sandbox.handle",
    ):
        module = importlib.import_module(f"airflow_provider_clubcollect.{module_name}")
        for name in getattr(module, "__all__", None) or dir(module):
            value = getattr(module, name, None)
            if not name.startswith("_") and callable(value) and value.__module__ == module.__name__:
                names[name] = value
    methods: dict[str, list[Any]] = {}
    for cls in (ClubCollectHook, SandboxClient):
        for name, value in vars(cls).items():
            if not name.startswith("_") and callable(value):
                methods.setdefault(name, []).append(value)
    return names, methods


def _accepted(target: Any) -> set[str]:
    """Every parameter name a callable takes, for a class through every ``__init__`` of its MRO (``**kwargs``)."""
    import inspect

    functions = (
        [vars(cls)["__init__"] for cls in target.__mro__ if "__init__" in vars(cls)]
        if isinstance(target, type)
        else [target]
    )
    accepted = set()
    for function in functions:
        try:
            accepted |= set(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            continue
    return accepted - {"self", "args", "kwargs"}


def _signature(target: Any) -> Any:
    import inspect

    return inspect.signature(target.__init__ if isinstance(target, type) else target)


def _call_problems(call: Any, target: Any, label: str) -> list[str]:
    import ast
    import inspect

    # A function's own **kwargs takes any keyword; a class's passes them up its MRO (see _accepted).
    takes_any = not isinstance(target, type) and any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in _signature(target).parameters.values()
    )
    problems = [
        f"{label}: no parameter {keyword.arg!r}"
        for keyword in call.keywords
        if keyword.arg is not None and not takes_any and keyword.arg not in _accepted(target)
    ]
    # ``...`` stands for "the arguments", not for one of them.
    positional = [
        arg
        for arg in call.args
        if not isinstance(arg, ast.Starred) and not (isinstance(arg, ast.Constant) and arg.value is Ellipsis)
    ]
    if positional:
        parameters = [
            p
            for p in _signature(target).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        has_varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in _signature(target).parameters.values())
        if len(positional) > len(parameters) and not has_varargs:
            problems.append(f"{label}: {len(positional)} positional arguments, the code takes {len(parameters)}")
    return problems


def _resolve(func: Any, names: dict[str, Any], methods: dict[str, list[Any]]) -> list[Any]:
    """What a call's function stands for: a provider name, a hook/sandbox method, or a class's partial/expand."""
    import ast

    if isinstance(func, ast.Name) and func.id in names:
        return [names[func.id]]
    if isinstance(func, ast.Attribute):
        if func.attr in ("partial", "expand"):
            base = func.value
            while isinstance(base, (ast.Call, ast.Attribute)):
                base = base.func if isinstance(base, ast.Call) else base.value
            return [names[base.id]] if isinstance(base, ast.Name) and base.id in names else []
        return methods.get(func.attr, [])
    return []


def _python_blocks(text: str, path: Path) -> list[str]:
    import textwrap

    if path.suffix == ".md":
        return re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    blocks = re.findall(r"^\.\. code-block:: python\n(?:    :.*\n)*\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    return [textwrap.dedent(block) for block in blocks]


def _shown_signatures(text: str, path: Path) -> list[tuple[str, bool]]:
    """``Name(...)`` inline literals, and the ``code-block:: text`` ones (always signatures)."""
    import textwrap

    inline = re.findall(
        r"``([A-Za-z_][\w.]*\([^`]*\))``" if path.suffix == ".rst" else r"`([A-Za-z_][\w.]*\([^`]*\))`", text
    )
    blocks = re.findall(r"^\.\. code-block:: text\n\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    shown = [(literal, False) for literal in inline]
    for block in blocks:
        body = " ".join(textwrap.dedent(block).split())
        if re.fullmatch(r"[A-Za-z_]\w*\(.*\)", body):
            shown.append((body, True))
    return shown


def _signature_problems(literal: str, target: Any, label: str, *, kinds: bool = True) -> list[str]:
    """A shown signature's parameters against the code's: kind (unless ``kinds`` is false), each default shown."""
    import ast
    import inspect

    inside = re.sub(r"<[^>]*>", "...", literal[literal.index("(") + 1 : -1])
    shown = ast.parse(f"def shown({inside}): pass").body[0].args  # type: ignore[attr-defined]
    real = _signature(target).parameters
    problems = []
    positional_defaults = [None] * (len(shown.args) - len(shown.defaults)) + list(shown.defaults)
    entries = [(arg, default, False) for arg, default in zip(shown.args, positional_defaults, strict=True)]
    entries += [(arg, default, True) for arg, default in zip(shown.kwonlyargs, shown.kw_defaults, strict=True)]
    for arg, default, keyword_only in entries:
        parameter = real.get(arg.arg)
        if parameter is None:
            if arg.arg not in _accepted(target):
                problems.append(f"{label}: shows {arg.arg!r}, which the code does not take")
            continue
        if kinds and parameter.kind is inspect.Parameter.KEYWORD_ONLY and not keyword_only:
            problems.append(f"{label}: shows {arg.arg!r} as positional; it is keyword-only")
        if kinds and parameter.kind is not inspect.Parameter.KEYWORD_ONLY and keyword_only:
            problems.append(f"{label}: shows {arg.arg!r} as keyword-only; it is not")
        if default is not None and not (isinstance(default, ast.Constant) and default.value is Ellipsis):
            try:
                value = ast.literal_eval(default)
            except ValueError:
                continue
            if parameter.default is inspect.Parameter.empty or parameter.default != value:
                problems.append(f"{label}: shows {arg.arg}={value!r}, the code's default is {parameter.default!r}")
    return problems


def _literal_problems(literal: str, target: Any, label: str, in_text_block: bool) -> list[str]:
    """
    A ``Name(...)`` a page shows.  One that is no call (a ``*`` marker, annotations) or a text block is a
    signature: kinds and defaults.  A call must bind; when it names every parameter, it shows the
    defaults too.
    """
    import ast

    try:
        call = None if in_text_block else ast.parse(literal, mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call):
        return _signature_problems(literal, target, label)
    parameters = _signature(target).parameters.values()
    real = {p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    named = {keyword.arg for keyword in call.keywords} | {arg.id for arg in call.args if isinstance(arg, ast.Name)}
    problems = _call_problems(call, target, label)
    if real and real <= named:
        problems += _signature_problems(literal, target, label, kinds=False)
    return problems


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_docs_python_and_signatures_match_the_code(path: Path) -> None:
    import ast

    names, methods = _public_callables()
    text = path.read_text()
    where = str(path.relative_to(REPO_ROOT))
    problems: list[str] = []
    for block in _python_blocks(text, path):
        tree = ast.parse(block, filename=where)  # a snippet that does not parse fails here
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                for target in _resolve(node.func, names, methods):
                    problems += _call_problems(node, target, f"{where}: {ast.unparse(node)[:80]}")
    for literal, in_text_block in _shown_signatures(text, path):
        name = literal[: literal.index("(")].split(".")[-1]
        targets = [names[name]] if name in names else methods.get(name, [])
        for target in targets:
            label = f"{where}: {literal[:80]}"
            problems += _literal_problems(literal, target, label, in_text_block)
    assert problems == []
