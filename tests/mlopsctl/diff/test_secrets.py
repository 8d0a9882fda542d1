"""Secrets in a diff: every value masked, yet whether each one changed still shown, as Argo CD
shows them; the objects handed in are never changed."""

from __future__ import annotations

import copy
import json

from mlopsctl.diff.secrets import MASK, MASK_AFTER, MASK_BEFORE, mask_secrets

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def test_secret_masks_tell_changed_from_unchanged_and_never_show_values():
    before = {"kind": "Secret", "data": {"a": "b2xk", "same": "c2FtZQ=="}}
    after = {"kind": "Secret", "data": {"a": "bmV3", "same": "c2FtZQ==", "added": "eA=="}}
    masked_before, masked_after = mask_secrets(before, after)
    assert masked_before == {
        "kind": "Secret",
        "data": {"a": "<masked: old value>", "same": "<masked>"},
    }
    assert masked_after == {
        "kind": "Secret",
        "data": {"a": "<masked: new value>", "same": "<masked>", "added": "<masked>"},
    }
    assert before["data"]["a"] == "b2xk"  # the inputs are not modified
    # Data that is not a mapping is masked whole.
    assert mask_secrets({"kind": "Secret", "data": "c2VjcmV0"}, None)[0] == {
        "kind": "Secret",
        "data": "<masked>",
    }


def test_string_data_is_masked_like_data():
    before = {"kind": "Secret", "stringData": {"password": "hunter2", "user": "admin"}}
    after = {"kind": "Secret", "stringData": {"password": "hunter3", "user": "admin"}}
    masked_before, masked_after = mask_secrets(before, after)
    assert masked_before is not None and masked_after is not None
    assert masked_before["stringData"] == {"password": MASK_BEFORE, "user": MASK}
    assert masked_after["stringData"] == {"password": MASK_AFTER, "user": MASK}
    shown = json.dumps([masked_before, masked_after])
    assert "hunter" not in shown and "admin" not in shown


def test_a_secret_added_or_removed_shows_no_value_and_no_change_marks():
    secret = {"kind": "Secret", "data": {"token": "c2VjcmV0"}}
    assert mask_secrets(None, secret) == (None, {"kind": "Secret", "data": {"token": MASK}})
    assert mask_secrets(secret, None) == ({"kind": "Secret", "data": {"token": MASK}}, None)
    assert mask_secrets(None, None) == (None, None)


def test_the_last_applied_annotation_which_holds_every_value_is_masked_too():
    annotations = {LAST_APPLIED: '{"data": {"token": "c2VjcmV0"}}', "owner": "shop"}
    secret = {"kind": "Secret", "metadata": {"annotations": annotations}, "data": {}}
    kept = copy.deepcopy(secret)
    masked_before, masked_after = mask_secrets(secret, secret)
    for masked in (masked_before, masked_after):
        assert masked is not None
        assert masked["metadata"]["annotations"] == {LAST_APPLIED: MASK, "owner": "shop"}
    assert secret == kept


def test_fields_other_than_the_values_are_left_for_the_diff_to_show():
    before = {
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "keys"},
        "data": {"a": "eA=="},
    }
    after = {**before, "type": "kubernetes.io/basic-auth"}
    masked_before, masked_after = mask_secrets(before, after)
    assert masked_before is not None and masked_after is not None
    assert (masked_before["type"], masked_after["type"]) == ("Opaque", "kubernetes.io/basic-auth")
    assert masked_before["metadata"] == masked_after["metadata"] == {"name": "keys"}
