"""Argo CD's ignoreDifferences, applied to rendered objects before they are compared: an
Application's own entries and argocd-cm's `resource.customizations.ignoreDifferences.*`.
Pure: rules and an object in, the object without the ignored fields out.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import yaml

from mlopsctl.base.argocd import application_sources, normalise_repository_url
from mlopsctl.base.resources import Resource

if TYPE_CHECKING:
    from mlopsctl.diff.manifests import ResourceKey

_SYSTEM_IGNORE_PREFIX = "resource.customizations.ignoreDifferences."


@dataclass(frozen=True)
class IgnoreRule:
    """One ignoreDifferences entry: which objects, and which of their fields."""

    group: str
    kind: str
    name: str = ""
    namespace: str = ""
    json_pointers: tuple[str, ...] = ()
    jq_paths: tuple[str, ...] = ()
    origin: str = ""  # where it was declared, for messages

    def matches(self, key: ResourceKey) -> bool:
        return (
            fnmatchcase(key.group, self.group or "")
            and fnmatchcase(key.kind, self.kind or "*")
            and (not self.name or self.name == key.name)
            and (not self.namespace or self.namespace == key.namespace)
        )


def _rule(entry: Any, origin: str) -> IgnoreRule | None:
    if not isinstance(entry, dict):
        return None

    def strings(name: str) -> tuple[str, ...]:
        values = entry.get(name) or []
        return tuple(str(value) for value in values) if isinstance(values, list) else ()

    return IgnoreRule(
        group=str(entry.get("group", "") or ""),
        kind=str(entry.get("kind", "") or "*"),
        name=str(entry.get("name", "") or ""),
        namespace=str(entry.get("namespace", "") or ""),
        json_pointers=strings("jsonPointers"),
        jq_paths=strings("jqPathExpressions"),
        origin=origin,
    )


def application_ignore_rules(
    applications: Iterable[Resource], repository_url: str
) -> dict[str, list[IgnoreRule]]:
    """Root (repository path) -> the ignoreDifferences of the Applications that deploy it."""
    wanted = normalise_repository_url(repository_url)
    rules: dict[str, list[IgnoreRule]] = {}
    for application in applications:
        if application.kind != "Application" or application.group != "argoproj.io":
            continue
        spec = application.body.get("spec")
        entries = spec.get("ignoreDifferences") if isinstance(spec, dict) else None
        if not isinstance(entries, list) or not entries:
            continue
        origin = f"Application {application.name}"
        parsed = [rule for entry in entries if (rule := _rule(entry, origin)) is not None]
        for _field, source in application_sources(application):
            path = source.get("path")
            if (
                isinstance(path, str)
                and normalise_repository_url(str(source.get("repoURL", ""))) == wanted
            ):
                rules.setdefault(path.strip("/").removeprefix("./"), []).extend(parsed)
    return rules


def system_ignore_rules(resources: Iterable[Resource]) -> list[IgnoreRule]:
    """argocd-cm's `resource.customizations.ignoreDifferences.<group_kind>` (and `.all`)."""
    rules: list[IgnoreRule] = []
    for resource in resources:
        if resource.kind != "ConfigMap" or resource.name != "argocd-cm":
            continue
        data = resource.body.get("data")
        for key, value in (data or {}).items() if isinstance(data, dict) else ():
            if not str(key).startswith(_SYSTEM_IGNORE_PREFIX):
                continue
            target = str(key).removeprefix(_SYSTEM_IGNORE_PREFIX)
            if target == "all":
                group, kind = "*", "*"
            else:
                group, _, kind = target.rpartition("_")
            try:
                settings = yaml.safe_load(str(value)) or {}
            except yaml.YAMLError:
                continue
            if isinstance(settings, dict):
                rule = _rule({**settings, "group": group, "kind": kind}, f"argocd-cm {key}")
                if rule is not None:
                    rules.append(rule)
    return rules


_JQ_TOKEN = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_-]*)     # .field
      | \.?\[\s*"(?P<quoted>(?:[^"\\]|\\.)*)"\s*\]   # ["field"] or .["field"]
      | \.?\[\s*(?P<index>-?\d+)\s*\]              # [0]
      | \.?\[\s*\](?P<optional>\?)?                # [] or []?
      | (?P<question>\?)                           # ? after a step
    """,
    re.VERBOSE,
)


def parse_jq_path(expression: str) -> list[tuple[str, Any]] | None:
    """A jq path expression as steps, or None when it is more than a path (select, pipes)."""
    text = expression.strip()
    if not text.startswith("."):
        return None
    if text == ".":
        return []
    steps: list[tuple[str, Any]] = []
    position = 0
    while position < len(text):
        match = _JQ_TOKEN.match(text, position)
        if match is None:
            return None
        if match.group("name") is not None:
            steps.append(("key", match.group("name")))
        elif match.group("quoted") is not None:
            steps.append(("key", re.sub(r"\\(.)", r"\1", match.group("quoted"))))
        elif match.group("index") is not None:
            steps.append(("index", int(match.group("index"))))
        elif match.group("question") is None:
            steps.append(("each", None))
        position = match.end()
    return steps


def _slot(value: Any, step: str, argument: Any) -> Any:
    """The key or index a step selects in `value`, or None when it selects nothing."""
    if step == "token":  # a JSON pointer token: a mapping's key, or a list's index
        if isinstance(value, dict):
            return argument if argument in value else None
        if isinstance(value, list) and argument.isdigit() and int(argument) < len(value):
            return int(argument)
        return None
    if step == "key":
        return argument if isinstance(value, dict) and argument in value else None
    if step == "index" and isinstance(value, list) and -len(value) <= argument < len(value):
        return argument % len(value)
    return None


def _delete_steps(value: Any, steps: Sequence[tuple[str, Any]]) -> None:
    """Delete what the path selects; a path that selects nothing deletes nothing (as jq's `?`)."""
    if not steps:
        return
    (step, argument), rest = steps[0], steps[1:]
    if step == "each":
        children = (
            list(value.values())
            if isinstance(value, dict)
            else value
            if isinstance(value, list)
            else None
        )
        if children is None:
            return
        if not rest:
            value.clear()
            return
        for child in children:
            _delete_steps(child, rest)
        return
    slot = _slot(value, step, argument)
    if slot is None:
        return
    if not rest:
        del value[slot]
        return
    child = value[slot]
    had_content = bool(child)
    _delete_steps(child, rest)
    # A mapping emptied by the deletion goes too: `annotations: {}` is not a difference.
    if had_content and isinstance(child, dict | list) and not child:
        del value[slot]


def _pointer_steps(pointer: str) -> list[tuple[str, Any]] | None:
    if not pointer.startswith("/"):
        return None
    return [
        ("token", token.replace("~1", "/").replace("~0", "~")) for token in pointer[1:].split("/")
    ]


def apply_ignore_rules(
    key: ResourceKey, body: dict[str, Any], rules: Sequence[IgnoreRule], warnings: set[str]
) -> dict[str, Any]:
    """A copy of `body` without the fields the matching rules ignore."""
    matching = [rule for rule in rules if rule.matches(key)]
    if not matching:
        return body
    trimmed = copy.deepcopy(body)
    for rule in matching:
        for pointer in rule.json_pointers:
            steps = _pointer_steps(pointer)
            if steps is None:
                warnings.add(
                    f"{rule.origin}: jsonPointer {pointer!r} is not a JSON pointer; compared anyway"
                )
                continue
            _delete_steps(trimmed, steps)
        for expression in rule.jq_paths:
            jq_steps = parse_jq_path(expression)
            if jq_steps is None:
                warnings.add(
                    f"{rule.origin}: jqPathExpression {expression!r} is more than a path "
                    "(mlopsctl applies paths like .a.b[]?.c only); the field is compared"
                )
                continue
            _delete_steps(trimmed, jq_steps)
    return trimmed
