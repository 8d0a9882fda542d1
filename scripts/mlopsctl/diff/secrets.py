"""Secrets in a diff: every value masked, yet whether each one changed still shown (as Argo CD
shows Secrets). Pure: a Secret's two sides in, masked copies out.
"""

from __future__ import annotations

import copy
from typing import Any

MASK = "<masked>"
MASK_BEFORE = "<masked: old value>"
MASK_AFTER = "<masked: new value>"
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


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
