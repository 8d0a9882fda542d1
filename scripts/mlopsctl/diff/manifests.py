"""What a change does to rendered manifests, resource by resource. Pure: resources in, diffs out.

Compared the way Argo CD compares: objects are matched by group, kind, namespace and name;
Secret values never appear (only whether each changed); fields an Application tells Argo CD to
ignore (`ignoreDifferences`, and argocd-cm's `resource.customizations.ignoreDifferences.*`)
are left out. One addition for reviewers: a ConfigMap or Secret whose generated name changed
only in its content-hash suffix is shown as one changed object, not a removal and an addition.
The ignored fields are `ignore_differences`'s, the masking of Secrets is `secrets`'.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from mlopsctl.base.resources import Resource
from mlopsctl.diff.ignore_differences import IgnoreRule, apply_ignore_rules
from mlopsctl.diff.secrets import mask_secrets

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


def _is_secret(key: ResourceKey) -> bool:
    return key.group == "" and key.kind == "Secret"


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
