"""The Secrets an environment expects a person to make before it first syncs (mlopsctl.yaml
`secretsCreatedByHand`), as Secret objects with fresh values: the one copy of the recipes that
both `mlopsctl bootstrap` and the local run (`mlopsctl up`) use.

Pure: a Secret's recipes and the git token in, its values (and the Secret object) out. The only
thing drawn from outside is randomness, through `random_bytes` (os.urandom unless a caller passes
another source), so a test can make the values predictable.

Recipes: `fernet-key` (a Fernet key: 32 random bytes, URL-safe base64), `hex:N` and `base64:N`
(N random bytes), `literal:VALUE`, `git-token` (a token that may push to the repository, given by
the caller; never made up).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

from mlopsctl.base.config import HandMadeSecret

GIT_TOKEN = "git-token"
FERNET_KEY_BYTES = 32

RandomBytes = Callable[[int], bytes]


def needs_git_token(secret: HandMadeSecret) -> bool:
    return any(recipe == GIT_TOKEN for _key, recipe in secret.keys)


def value_of(recipe: str, git_token: str, random_bytes: RandomBytes = os.urandom) -> str:
    """The value one recipe makes. The config schema allows only the recipes handled here."""
    kind, _, argument = recipe.partition(":")
    if kind == "fernet-key":
        return base64.urlsafe_b64encode(random_bytes(FERNET_KEY_BYTES)).decode()
    if kind == GIT_TOKEN:
        return git_token
    if kind == "hex":
        return random_bytes(int(argument)).hex()
    if kind == "base64":
        return base64.b64encode(random_bytes(int(argument))).decode()
    if kind == "literal":
        return argument
    raise ValueError(f"unknown recipe {recipe!r}")


def secret_object(
    secret: HandMadeSecret, git_token: str, random_bytes: RandomBytes = os.urandom
) -> dict[str, Any]:
    """The Secret to create, every key filled by its recipe (`data`, base64 as the API wants)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret.name, "namespace": secret.namespace},
        "type": "Opaque",
        "data": {
            key: base64.b64encode(value_of(recipe, git_token, random_bytes).encode()).decode()
            for key, recipe in secret.keys
        },
    }
