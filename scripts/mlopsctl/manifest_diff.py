"""What a change does to rendered manifests, resource by resource. Pure: resources in, diffs out.

Compared the way Argo CD compares: objects are matched by group, kind, namespace and name;
Secret values never appear (only whether each changed); fields an Application tells Argo CD to
ignore (`ignoreDifferences`, and argocd-cm's `resource.customizations.ignoreDifferences.*`)
are left out. One addition for reviewers: a ConfigMap or Secret whose generated name changed
only in its content-hash suffix is shown as one changed object, not a removal and an addition.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import yaml

from mlopsctl.base.argocd import application_sources, normalise_repository_url
from mlopsctl.base.resources import Resource

MASK = "<masked>"
MASK_BEFORE = "<masked: old value>"
MASK_AFTER = "<masked: new value>"
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_SYSTEM_IGNORE_PREFIX = "resource.customizations.ignoreDifferences."
# Kustomize appends a 10-character content hash to generated ConfigMap and Secret names.
_GENERATED_NAME = re.compile(r"^(?P<stem>.+)-[a-z0-9]{10}$")


try:  # libyaml's emitter is several times faster on large renders; fall back when absent
    from yaml import CSafeDumper as _BaseDumper
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper as _BaseDumper  # type: ignore[assignment]


class _Dumper(_BaseDumper):
    """Block style, keys in the order kustomize wrote them, long strings never folded."""


def _string(dumper: _BaseDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(body: Mapping[str, Any]) -> str:
    return yaml.dump(
        dict(body),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 30,
    )


# --- ignoreDifferences -------------------------------------------------------------------------


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


# --- Secrets -----------------------------------------------------------------------------------


def _is_secret(key: ResourceKey) -> bool:
    return key.group == "" and key.kind == "Secret"


def mask_secrets(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Copies of a Secret's two sides with every value replaced by a mask that still tells
    whether that value changed (as Argo CD shows Secrets), never the value itself."""
    masked_before = copy.deepcopy(before) if before is not None else None
    masked_after = copy.deepcopy(after) if after is not None else None
    for section in ("data", "stringData"):
        old = (before or {}).get(section)
        new = (after or {}).get(section)
        old_map = old if isinstance(old, dict) else {}
        new_map = new if isinstance(new, dict) else {}
        for side, original, other, changed_mask in (
            (masked_before, old, new_map, MASK_BEFORE),
            (masked_after, new, old_map, MASK_AFTER),
        ):
            if side is None or section not in side:
                continue
            if not isinstance(original, dict):
                side[section] = MASK
                continue
            side[section] = {
                name: (changed_mask if name in other and other[name] != value else MASK)
                for name, value in original.items()
            }
    for side in (masked_before, masked_after):
        annotations = (side or {}).get("metadata", {}).get("annotations")
        if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
            annotations[_LAST_APPLIED] = MASK
    return masked_before, masked_after


# --- comparing ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ResourceKey:
    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, resource: Resource) -> ResourceKey:
        return cls(resource.group, resource.kind, resource.namespace, resource.name)

    @property
    def reference(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group and "." in self.group else self.kind
        parts = [kind, self.namespace, self.name] if self.namespace else [kind, self.name]
        return "/".join(parts)


@dataclass(frozen=True)
class ResourceDiff:
    reference: str
    change: str  # added, removed, changed
    diff: str  # unified diff of the (masked, trimmed) YAML
    renamed_from: str = ""

    @property
    def lines_changed(self) -> int:
        return sum(
            1
            for line in self.diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))
        )


@dataclass
class RootDiff:
    """One kustomize root at the two revisions."""

    root: str
    status: str  # changed, unchanged, added, removed, error, not rendered
    resources: list[ResourceDiff] = field(default_factory=list)
    message: str = ""
    warnings: list[str] = field(default_factory=list)

    def count(self, change: str) -> int:
        return sum(1 for resource in self.resources if resource.change == change)

    @property
    def has_changes(self) -> bool:
        return bool(self.resources) or self.status == "not rendered"


def _unified(before: str, after: str, label: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"a/{label}",
            f"b/{label}",
        )
    )


def _by_generated_stem(keys: Iterable[ResourceKey]) -> dict[tuple[str, ...], list[ResourceKey]]:
    """Generated ConfigMaps and Secrets grouped by their name without the hash suffix."""
    grouped: dict[tuple[str, ...], list[ResourceKey]] = {}
    for key in keys:
        match = _GENERATED_NAME.match(key.name)
        if match is not None and key.group == "" and key.kind in ("ConfigMap", "Secret"):
            grouped.setdefault((key.kind, key.namespace, match.group("stem")), []).append(key)
    return grouped


def _renamed(
    removed: list[ResourceKey], added: list[ResourceKey]
) -> dict[ResourceKey, ResourceKey]:
    """New key -> old key, for generated objects whose name changed only in its hash suffix
    (one candidate on each side: no guessing)."""
    added_by_stem = _by_generated_stem(added)
    return {
        new_keys[0]: old_keys[0]
        for stem, old_keys in _by_generated_stem(removed).items()
        if len(old_keys) == 1 and len(new_keys := added_by_stem.get(stem, [])) == 1
    }


def _index(resources: Iterable[Resource]) -> dict[ResourceKey, dict[str, Any]]:
    return {ResourceKey.of(resource): resource.body for resource in resources}


def diff_resources(
    root: str,
    before: Sequence[Resource] | None,
    after: Sequence[Resource] | None,
    rules: Sequence[IgnoreRule] = (),
) -> RootDiff:
    """Compare one root's render at the base (`before`) and the head (`after`); None means the
    root does not exist on that side."""
    old = _index(before or [])
    new = _index(after or [])
    warnings: set[str] = set()
    removed = sorted(set(old) - set(new))
    added = sorted(set(new) - set(old))
    renamed = _renamed(removed, added)
    shown_with_new_name = set(renamed.values())
    results: list[ResourceDiff] = []
    for key in sorted(set(old) | set(new)):
        if key in shown_with_new_name:
            continue
        renamed_from = renamed.get(key)
        old_key = renamed_from or key
        old_body = old.get(old_key)
        new_body = new.get(key)
        if old_body is not None:
            old_body = apply_ignore_rules(old_key, old_body, rules, warnings)
        if new_body is not None:
            new_body = apply_ignore_rules(key, new_body, rules, warnings)
        if _is_secret(key):
            old_body, new_body = mask_secrets(old_body, new_body)
        old_text = to_yaml(old_body) if old_body is not None else ""
        new_text = to_yaml(new_body) if new_body is not None else ""
        if old_text == new_text:
            continue
        change = "added" if old_body is None else "removed" if new_body is None else "changed"
        results.append(
            ResourceDiff(
                key.reference,
                change,
                _unified(old_text, new_text, f"{root}/{key.reference}"),
                renamed_from=old_key.reference if renamed_from is not None else "",
            )
        )
    if before is None and after is None:
        status = "unchanged"
    elif before is None:
        status = "added"
    elif after is None:
        status = "removed"
    else:
        status = "changed" if results else "unchanged"
    return RootDiff(root, status, results, warnings=sorted(warnings))
