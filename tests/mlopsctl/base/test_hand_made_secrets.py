"""The Secrets a person once made by hand, made from their recipes in mlopsctl.yaml: each value
has the shape its recipe says, a git token is used only where asked for and never made up."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet

from mlopsctl.base.config import HandMadeSecret, load_config
from mlopsctl.base.hand_made_secrets import needs_git_token, secret_object, value_of
from tests.support.paths import REPOSITORY


def test_each_recipe_makes_a_value_of_its_shape_from_the_random_bytes_given() -> None:
    def counting(size: int) -> bytes:
        return bytes(range(size))

    assert value_of("hex:4", "", counting) == "00010203"
    assert base64.b64decode(value_of("base64:24", "", counting)) == bytes(range(24))
    assert base64.urlsafe_b64decode(value_of("fernet-key", "", counting)) == bytes(range(32))
    assert value_of("literal:admin:x", "", counting) == "admin:x"
    assert value_of("git-token", "secret", counting) == "secret"
    # Without a source given, values are fresh each time.
    assert value_of("hex:32", "") != value_of("hex:32", "")
    secret = HandMadeSecret("ml-platform", "promoter", (("a", "hex:2"), ("b", "git-token")))
    assert secret_object(secret, "secret", counting) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "promoter", "namespace": "ml-platform"},
        "type": "Opaque",
        "data": {
            "a": base64.b64encode(b"0001").decode(),
            "b": base64.b64encode(b"secret").decode(),
        },
    }


def test_a_fernet_key_recipe_makes_a_key_fernet_accepts():
    # MLflow encrypts its webhook secrets with this key: a key of the wrong shape stops it.
    key = value_of("fernet-key", "")
    cipher = Fernet(key.encode())
    assert cipher.decrypt(cipher.encrypt(b"webhook secret")) == b"webhook secret"


def test_an_unknown_recipe_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown recipe 'uuid'"):
        value_of("uuid", "")


def test_only_a_secret_with_a_git_token_key_needs_the_token():
    assert needs_git_token(HandMadeSecret("n", "s", (("token", "git-token"), ("x", "hex:1"))))
    assert not needs_git_token(HandMadeSecret("n", "s", (("x", "literal:git-token"),)))


def test_every_secret_the_repository_lists_is_made_whole():
    """mlopsctl.yaml's own list, as bootstrap and the local run make it: every key filled with a
    value of its recipe's shape, and the git token only in the keys that ask for it."""
    config = load_config(REPOSITORY)
    listed = [
        secret
        for environment in config.environments
        for secret in config.secrets_created_by_hand(environment)
    ]
    assert listed, "the repository lists no hand-made Secret"
    for secret in listed:
        made = secret_object(secret, "the-git-token")
        assert made["metadata"] == {"name": secret.name, "namespace": secret.namespace}
        values = {key: base64.b64decode(value).decode() for key, value in made["data"].items()}
        assert set(values) == {key for key, _recipe in secret.keys}
        for key, recipe in secret.keys:
            kind, _, argument = recipe.partition(":")
            value = values[key]
            if kind == "git-token":
                assert value == "the-git-token"
            elif kind == "hex":
                assert len(bytes.fromhex(value)) == int(argument)
            elif kind == "base64":
                assert len(base64.b64decode(value)) == int(argument)
            elif kind == "literal":
                assert value == argument
            else:
                assert kind == "fernet-key", recipe
                Fernet(value.encode())  # refuses anything that is not a key
            if kind != "git-token":
                assert value != "the-git-token"
