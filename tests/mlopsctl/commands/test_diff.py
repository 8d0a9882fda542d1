"""`mlopsctl diff` against real git history: a branch is cut from this repository's platform,
changed the way pull requests change it, and compared with its base by the real kustomize."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from tests.support.platform_fixtures import Platform, git
from tests.support.trees import drop_application

MODEL_SERVER = "overlays/local/model-server/kustomization.yaml"
STREAMLIT = "overlays/local/streamlit/kustomization.yaml"


def commit_all(checkout: Path, message: str) -> str:
    git(checkout, "add", "--all")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-qm", message)
    return git(checkout, "rev-parse", "HEAD").strip()


def branch(checkout: Path, name: str) -> None:
    git(checkout, "checkout", "--quiet", "-b", name, "main")


def edit(checkout: Path, file: str, old: str, new: str) -> None:
    path = checkout / file
    text = path.read_text()
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new))


def diff(cli, platform: Platform, *extra: str):
    return cli("diff", "--repo", str(platform.checkout), "--base", "main", *extra)


def diff_json(cli, platform: Platform, *extra: str) -> tuple[int, dict]:
    result = diff(cli, platform, "--format", "json", *extra)
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def roots_of(document: dict) -> dict[str, dict]:
    return {root["root"]: root for root in document["roots"]}


def test_an_image_tag_change_renders_only_the_roots_that_read_it(cli, platform: Platform):
    branch(platform.checkout, "bump-streamlit")
    edit(platform.checkout, STREAMLIT, "newTag: 0.1.0", "newTag: 0.2.0")
    commit_all(platform.checkout, "streamlit 0.2.0")
    exit_code, document = diff_json(cli, platform, "--head", "bump-streamlit")
    assert exit_code == 1
    assert document["changedFiles"] == [STREAMLIT]
    # Unaffected roots are not rendered: the one overlay that reads the file, nothing else.
    assert list(roots_of(document)) == ["overlays/local/streamlit"]
    [deployment] = roots_of(document)["overlays/local/streamlit"]["resources"]
    assert (deployment["reference"], deployment["change"]) == (
        "Deployment/ml-platform/streamlit",
        "changed",
    )
    assert (
        "-        image: ghcr.io/example-org/mlops-platform/streamlit:0.1.0" in deployment["diff"]
    )
    assert (
        "+        image: ghcr.io/example-org/mlops-platform/streamlit:0.2.0" in deployment["diff"]
    )
    # The user's checkout was not switched, and no worktree is left behind.
    assert git(platform.checkout, "branch", "--show-current").strip() == "bump-streamlit"
    assert len(git(platform.checkout, "worktree", "list").splitlines()) == 1


def test_a_change_to_a_base_reaches_every_overlay_built_on_it(cli, platform: Platform):
    branch(platform.checkout, "probe")
    edit(
        platform.checkout,
        "base/streamlit/deployment.yaml",
        "periodSeconds: 10",
        "periodSeconds: 15",
    )
    commit_all(platform.checkout, "slower probe")
    _exit_code, document = diff_json(cli, platform, "--head", "probe")
    assert list(roots_of(document)) == [
        "base/streamlit",
        "overlays/local/streamlit",
        "overlays/production/streamlit",
        "overlays/staging/streamlit",
    ]


def test_a_model_pin_change_shows_the_versions_metrics_and_signature(
    cli, platform: Platform, mlflow_server
):
    model = platform.model
    old = mlflow_server.register(model, {"accuracy": 0.91, "f1_macro": 0.9}, signature=False)
    new = mlflow_server.register(model, {"accuracy": 0.95, "f1_macro": 0.93})
    # The committed pins say nothing is promoted yet (0): main pins the old version first.
    for file in (MODEL_SERVER, STREAMLIT):
        edit(platform.checkout, file, f"models:/{model}/0", f"models:/{model}/{old}")
    commit_all(platform.checkout, f"pin v{old}")
    branch(platform.checkout, "promote")
    for file in (MODEL_SERVER, STREAMLIT):
        edit(platform.checkout, file, f"models:/{model}/{old}", f"models:/{model}/{new}")
    commit_all(platform.checkout, f"pin v{new}")

    result = diff(
        cli,
        platform,
        "--head",
        "promote",
        "--format",
        "markdown",
        "--mlflow-uri",
        mlflow_server.url,
    )
    assert result.exit_code == 1, result.stderr
    comment = result.stdout
    assert f"#### Model `{model}` in local: v{old} → v{new} (follows `@challenger`)" in comment
    assert f"`{MODEL_SERVER}`, `{STREAMLIT}`" in comment  # one move, both files
    assert f"| metric | v{old} | v{new} | Δ |" in comment
    assert "| accuracy | 0.91 | 0.95 | +0.04 |" in comment
    assert "| f1_macro | 0.9 | 0.93 | +0.03 |" in comment
    assert f"Signature: **added** (v{old} had none)." in comment
    # The rendered side: the pin ConfigMaps (new hash names) and the workloads that roll.
    assert "| `overlays/local/model-server` | changed | 0 | 2 | 0 |" in comment
    assert f"+  MODEL_URI: models:/{model}/{new}" in comment

    text = diff(cli, platform, "--head", "promote", "--mlflow-uri", mlflow_server.url).stdout
    assert f"model {model} in local: v{old} → v{new} (follows @challenger)" in text
    assert "accuracy  0.91" in text and "+0.04" in text


def test_model_facts_degrade_to_versions_when_mlflow_is_unreachable(cli, platform: Platform):
    from local_mlflow import free_port

    branch(platform.checkout, "promote")
    # The first promotion: from the committed "nothing promoted" (0) to v1.
    edit(
        platform.checkout,
        MODEL_SERVER,
        f"models:/{platform.model}/0",
        f"models:/{platform.model}/1",
    )
    commit_all(platform.checkout, "pin v1")
    result = diff(
        cli, platform, "--head", "promote", "--mlflow-uri", f"http://127.0.0.1:{free_port()}"
    )
    assert result.exit_code == 1
    assert f"model {platform.model} in local: v0 → v1" in result.stdout
    assert "v0: no version pinned" in result.stdout  # not asked of the registry at all
    assert "v1: MLflow at http://127.0.0.1:" in result.stdout
    assert "is unreachable" in result.stdout


def test_an_added_component_and_a_removed_one(cli, platform: Platform):
    branch(platform.checkout, "reshape")
    extra = platform.checkout / "overlays/local/feature-store"
    extra.mkdir()
    (extra / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "namespace: ml-platform\nresources:\n  - configmap.yaml\n"
    )
    (extra / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: feature-store\ndata:\n  url: x\n"
    )
    git(platform.checkout, "rm", "-rq", "overlays/local/streamlit")
    drop_application(platform.checkout, "local", "streamlit")
    commit_all(platform.checkout, "feature store in, frontend out")
    exit_code, document = diff_json(cli, platform, "--head", "reshape")
    assert exit_code == 1
    roots = roots_of(document)
    assert roots["overlays/local/feature-store"]["status"] == "added"
    assert [
        (r["reference"], r["change"]) for r in roots["overlays/local/feature-store"]["resources"]
    ] == [("ConfigMap/ml-platform/feature-store", "added")]
    removed = roots["overlays/local/streamlit"]
    assert removed["status"] == "removed"
    assert removed["removed"] >= 3 and removed["added"] == removed["changed"] == 0
    assert {(r["reference"], r["change"]) for r in roots["apps/local"]["resources"]} == {
        ("Application.argoproj.io/argocd/streamlit-local", "removed")
    }


def test_secret_values_are_masked_everywhere(cli, platform: Platform, tmp_path: Path):
    overlay = platform.checkout / "overlays/local/streamlit"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "frontend-keys"},
        "type": "Opaque",
        "data": {
            "api-key": base64.b64encode(b"first-api-key-value").decode(),
            "salt": base64.b64encode(b"same-salt-value").decode(),
        },
        "stringData": {"token": "plain-text-token-one"},
    }
    (overlay / "secret.yaml").write_text(yaml.safe_dump(secret))
    edit(
        platform.checkout,
        STREAMLIT,
        "  - ../../../base/streamlit\n",
        "  - ../../../base/streamlit\n  - secret.yaml\n",
    )
    commit_all(platform.checkout, "keys")
    branch(platform.checkout, "rotate")
    secret["data"]["api-key"] = base64.b64encode(b"second-api-key-value").decode()
    secret["stringData"]["token"] = "plain-text-token-two"
    (overlay / "secret.yaml").write_text(yaml.safe_dump(secret))
    commit_all(platform.checkout, "rotate keys")

    full = tmp_path / "full.diff"
    outputs = [
        diff(cli, platform, "--head", "rotate", "--format", form, "--full-diff", str(full)).stdout
        for form in ("text", "markdown", "json")
    ]
    outputs.append(full.read_text())
    [resource] = roots_of(json.loads(outputs[2]))["overlays/local/streamlit"]["resources"]
    assert resource["reference"] == "Secret/ml-platform/frontend-keys"
    assert "-  api-key: '<masked: old value>'" in resource["diff"]
    assert "+  api-key: '<masked: new value>'" in resource["diff"]
    assert "-  token: '<masked: old value>'" in resource["diff"]
    # An unchanged value stays masked and unchanged (a context line).
    assert "   salt: <masked>" in resource["diff"]
    for output in outputs:
        for value in (b"first-api-key-value", b"second-api-key-value", b"same-salt-value"):
            assert value.decode() not in output
            assert base64.b64encode(value).decode() not in output
        assert "plain-text-token" not in output


MODEL_SERVER_REPLICAS = """patches:
  - target:
      kind: Deployment
      name: model-server
    patch: |-
      - op: add
        path: /spec/replicas
        value: 3
      - op: add
        path: /spec/template/metadata/annotations
        value:
          example.com/restarted-at: "2026-11-27T00:00:00Z"
"""


def _scale_model_server_on_a_branch(platform: Platform) -> None:
    branch(platform.checkout, "scale")
    with (platform.checkout / MODEL_SERVER).open("a") as stream:
        stream.write(MODEL_SERVER_REPLICAS)
    commit_all(platform.checkout, "scale")


def test_without_ignore_differences_the_fields_are_compared(cli, platform: Platform):
    _scale_model_server_on_a_branch(platform)
    exit_code, document = diff_json(cli, platform, "--head", "scale")
    assert exit_code == 1
    [deployment] = roots_of(document)["overlays/local/model-server"]["resources"]
    assert "+  replicas: 3" in deployment["diff"]
    assert "example.com/restarted-at" in deployment["diff"]


def _scaling_with_a_rule(cli, platform: Platform, file: str, after: str, rule: str) -> dict:
    """Commit `rule` after the line `after` in `file`, scale the model server on a branch, and
    return the diff, which must show no change."""
    edit(platform.checkout, file, after, after + rule)
    commit_all(platform.checkout, "ignore what an autoscaler owns")
    _scale_model_server_on_a_branch(platform)
    exit_code, document = diff_json(cli, platform, "--head", "scale")
    assert exit_code == 0, json.dumps(document["roots"], indent=1)[:4000]
    return document


def test_fields_the_application_ignores_are_left_out(cli, platform: Platform):
    # local's model-server Application only: a patch in apps/local/kustomization.yaml.
    document = _scaling_with_a_rule(
        cli,
        platform,
        "apps/local/kustomization.yaml",
        "patches:\n",
        "  - target:\n"
        "      kind: Application\n"
        "      name: model-server\n"
        "    patch: |-\n"
        "      - op: add\n"
        "        path: /spec/ignoreDifferences\n"
        "        value:\n"
        "          - group: apps\n"
        "            kind: Deployment\n"
        "            name: model-server\n"
        "            jsonPointers:\n"
        "              - /spec/replicas\n"
        "            jqPathExpressions:\n"
        '              - .spec.template.metadata.annotations["example.com/restarted-at"]\n',
    )
    # Argo CD would show no difference, so neither does mlopsctl diff.
    assert roots_of(document)["overlays/local/model-server"]["status"] == "unchanged"
    # The same change in staging, where no Application ignores it, is still shown.
    edit(
        platform.checkout,
        "overlays/staging/model-server/kustomization.yaml",
        "configMapGenerator:",
        MODEL_SERVER_REPLICAS + "configMapGenerator:",
    )
    exit_code, document = diff_json(cli, platform, "--head", "scale")  # committed head: still 0
    assert exit_code == 0
    exit_code, document = diff_json(cli, platform)  # the working tree, uncommitted edit included
    assert exit_code == 1
    assert roots_of(document)["overlays/staging/model-server"]["status"] == "changed"


def test_ignore_differences_written_once_for_every_environment(cli, platform: Platform):
    # base/argocd-apps writes the Application once, with ENVIRONMENT in its path: the rule
    # reaches each environment's model server through the environment's render.
    _scaling_with_a_rule(
        cli,
        platform,
        "base/argocd-apps/model-server.yaml",
        "  project: platform\n",
        "  ignoreDifferences:\n"
        "    - group: apps\n"
        "      kind: Deployment\n"
        "      jsonPointers: [/spec/replicas, /spec/template/metadata/annotations]\n",
    )
    edit(
        platform.checkout,
        "overlays/staging/model-server/kustomization.yaml",
        "configMapGenerator:",
        MODEL_SERVER_REPLICAS + "configMapGenerator:",
    )
    exit_code, document = diff_json(cli, platform)  # the working tree: staging scaled too
    assert exit_code == 0, json.dumps(document["roots"], indent=1)[:4000]
    assert roots_of(document)["overlays/staging/model-server"]["status"] == "unchanged"


def test_ignore_differences_from_shared_application_defaults(cli, platform: Platform):
    # apps/local patches every Application with application-defaults.yaml: a rule there has no
    # source path of its own, and reaches the model server's Application through the patch.
    document = _scaling_with_a_rule(
        cli,
        platform,
        "apps/local/application-defaults.yaml",
        "spec:\n",
        "  ignoreDifferences:\n"
        "    - group: apps\n"
        "      kind: Deployment\n"
        "      jsonPointers: [/spec/replicas, /spec/template/metadata/annotations]\n",
    )
    # The apps root was rendered only to read the rules: it is not part of the comparison.
    assert list(roots_of(document)) == ["overlays/local/model-server"]


def test_argocd_cm_ignore_differences_apply_to_every_application(cli, platform: Platform):
    patch = platform.checkout / "base/argocd-settings/argocd-cm-patch.yaml"
    document = yaml.safe_load(patch.read_text())
    document["data"]["resource.customizations.ignoreDifferences.apps_Deployment"] = (
        "jsonPointers:\n- /spec/replicas\njqPathExpressions:\n"
        "- .spec.template.metadata.annotations\n"
    )
    patch.write_text(yaml.safe_dump(document))
    commit_all(platform.checkout, "replicas are the autoscalers'")
    _scale_model_server_on_a_branch(platform)
    exit_code, document = diff_json(cli, platform, "--head", "scale")
    assert exit_code == 0, json.dumps(document["roots"], indent=1)[:4000]


def test_an_oversized_diff_is_cut_to_the_comment_limit(cli, platform: Platform, tmp_path: Path):
    branch(platform.checkout, "huge")
    for environment in ("local", "staging", "production"):
        overlay = platform.checkout / f"overlays/{environment}/streamlit"
        data = {f"key-{index:05d}": f"value {index} " + "x" * 40 for index in range(1500)}
        (overlay / "big.yaml").write_text(
            yaml.safe_dump(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": data}
            )
        )
        edit(
            platform.checkout,
            f"overlays/{environment}/streamlit/kustomization.yaml",
            "  - ../../../base/streamlit\n",
            "  - ../../../base/streamlit\n  - big.yaml\n",
        )
    commit_all(platform.checkout, "big")
    full = tmp_path / "out" / "mlopsctl-diff.txt"
    result = diff(cli, platform, "--head", "huge", "--format", "markdown", "--full-diff", str(full))
    assert result.exit_code == 1
    comment = result.stdout
    assert len(comment) <= 65_536
    assert comment.startswith("<!-- mlopsctl-diff -->")
    # The summary is whole: every root is in the table.
    for environment in ("local", "staging", "production"):
        assert f"| `overlays/{environment}/streamlit` | changed | 1 | 0 | 0 |" in comment
    assert "Details cut at GitHub's 65,536-character comment limit" in comment
    assert "the full diff is in `mlopsctl-diff.txt`" in comment
    assert comment.count("<details>") == comment.count("</details>")
    # The file holds all of it.
    whole = full.read_text()
    assert len(whole) > 3 * 65_536
    assert all("key-01499: value 1499" in part for part in whole.split("=== ")[1:])
    assert "mlopsctl diff: the Markdown was cut" in result.stderr


def test_no_change_exits_zero(cli, platform: Platform):
    branch(platform.checkout, "docs")
    (platform.checkout / "overlays/local/model-server/README.md").write_text("notes\n")
    edit(platform.checkout, MODEL_SERVER, "# The model this", "# Notes beside it. The model this")
    commit_all(platform.checkout, "comments only")
    result = diff(cli, platform, "--head", "docs")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "no change to any rendered resource" in result.stdout
    # The same commit on both sides, and a clean working tree against its own branch.
    assert diff(cli, platform, "--head", "main").exit_code == 0
    assert cli("diff", "--repo", str(platform.checkout), "--base", "docs").exit_code == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--head", "no-such-branch"), "revision 'no-such-branch' does not name a commit"),
        (("--base", "--oops"), "expected one argument"),
        (("--head", "main", "--max-chars", "10"), "must be 2000 or more"),
    ],
)
def test_bad_arguments_exit_two_and_say_why(cli, platform: Platform, arguments, message):
    result = cli("diff", "--repo", str(platform.checkout), *arguments)
    assert result.exit_code == 2
    assert message in result.stderr


def test_a_head_that_does_not_render_is_an_error_naming_the_root(cli, platform: Platform):
    branch(platform.checkout, "broken")
    edit(
        platform.checkout,
        STREAMLIT,
        "  - ../../../base/streamlit\n",
        "  - ../../../base/nothing-here\n",
    )
    commit_all(platform.checkout, "broken")
    result = diff(cli, platform, "--head", "broken")
    assert result.exit_code == 2
    assert "overlays/local/streamlit: error: does not render" in result.stdout
    assert len(git(platform.checkout, "worktree", "list").splitlines()) == 1


def test_the_pull_request_gets_one_comment_updated_in_place(
    cli, platform: Platform, github, monkeypatch
):
    from tests.support.github_standin import REPOSITORY, TOKEN

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPOSITORY)
    # Someone else's comments come first, more than a page of them.
    github.comments.extend(
        {"id": n, "issue": 7, "body": f"looks good {n}", "html_url": f"u{n}"} for n in range(1, 121)
    )
    branch(platform.checkout, "bump")
    edit(platform.checkout, STREAMLIT, "newTag: 0.1.0", "newTag: 0.2.0")
    commit_all(platform.checkout, "0.2.0")
    first = diff(cli, platform, "--head", "bump", "--comment-on", "7")
    assert first.exit_code == 1, first.stderr
    assert "mlopsctl diff: comment https://github.example.test/comment/121" in first.stderr
    edit(platform.checkout, STREAMLIT, "newTag: 0.2.0", "newTag: 0.3.0")
    commit_all(platform.checkout, "0.3.0")
    second = diff(cli, platform, "--head", "bump", "--comment-on", "7")
    assert second.exit_code == 1, second.stderr
    ours = [c for c in github.comments if c["body"].startswith("<!-- mlopsctl-diff -->")]
    assert len(ours) == 1 and len(github.comments) == 121
    assert "streamlit:0.3.0" in ours[0]["body"] and "streamlit:0.2.0" not in ours[0]["body"]
    # The terminal still gets the text format.
    assert second.stdout.startswith("mlopsctl diff: main (")
    monkeypatch.delenv("GITHUB_TOKEN")
    missing = diff(cli, platform, "--head", "bump", "--comment-on", "7")
    assert missing.exit_code == 2
    assert "--comment-on needs GITHUB_TOKEN" in missing.stderr


def test_outside_a_git_repository_it_says_so(cli, platform_copy: Path):
    result = cli("diff", "--repo", str(platform_copy), "--base", "main")
    assert result.exit_code == 2
    assert f"{platform_copy} is not inside a git repository" in result.stderr


def _big_config_map(overlay: Path, keys: int) -> None:
    data = {
        f"panel-{index:05d}.json": f'{{"id": {index}, "title": "panel {index}"}}'
        for index in range(keys)
    }
    (overlay / "dashboards.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "dashboards"},
                "data": data,
            }
        )
    )


def test_one_huge_resource_does_not_hide_the_small_risky_ones(
    cli, platform: Platform, tmp_path: Path
):
    """Issue 17's case: a dashboards-sized ConfigMap beside a misspelt container field, an image
    moved to `latest` and a Secret with data."""
    branch(platform.checkout, "mixed")
    overlay = platform.checkout / "overlays/local/streamlit"
    _big_config_map(overlay, 3000)
    (overlay / "secret.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "frontend-keys"},
                "data": {"api-key": base64.b64encode(b"do-not-show-this-key").decode()},
            }
        )
    )
    edit(
        platform.checkout,
        STREAMLIT,
        "  - ../../../base/streamlit\n",
        "  - ../../../base/streamlit\n  - dashboards.yaml\n  - secret.yaml\n",
    )
    edit(platform.checkout, STREAMLIT, "    newTag: 0.1.0\n", "    newTag: latest\n")
    edit(
        platform.checkout,
        "base/model-server/deployment.yaml",
        "          args:\n",
        "          imagePulPolicy: IfNotPresent\n          args:\n",
    )
    commit_all(platform.checkout, "dashboards, a key, latest and a typo")

    full = tmp_path / "mlopsctl-diff.txt"
    result = diff(
        cli, platform, "--head", "mixed", "--format", "markdown", "--full-diff", str(full)
    )
    comment = result.stdout
    assert result.exit_code == 1, result.stderr
    assert len(comment) <= 65_536
    _code, document = diff_json(cli, platform, "--head", "mixed")
    references = [
        f"`{root['root']}`: {resource['reference']} {resource['change']}"
        for root in document["roots"]
        for resource in root["resources"]
    ]
    assert len(references) >= 6  # 3 model servers, the streamlit Deployment, the Secret, the map
    for reference in references:
        assert reference in comment, reference
    assert "do-not-show-this-key" not in comment
    assert base64.b64encode(b"do-not-show-this-key").decode() not in comment
    assert "<masked" in comment
    assert "imagePulPolicy" in comment and ":latest" in comment
    # The risky changes come first; the generated data last, cut inside with a note.
    order = [
        comment.index(heading)
        for heading in (
            "#### Model pins and images",
            "#### Secrets",
            "#### Workloads",
            "#### Large generated data",
        )
    ]
    assert order == sorted(order)
    assert "lines left out here; the full diff is in `mlopsctl-diff.txt`" in comment
    assert "Details cut at GitHub's 65,536-character comment limit: all " in comment


def test_one_giant_resource_alone_is_cut_inside(cli, platform: Platform, tmp_path: Path):
    branch(platform.checkout, "giant")
    _big_config_map(platform.checkout / "overlays/local/streamlit", 6000)
    edit(
        platform.checkout,
        STREAMLIT,
        "  - ../../../base/streamlit\n",
        "  - ../../../base/streamlit\n  - dashboards.yaml\n",
    )
    commit_all(platform.checkout, "a giant")
    result = diff(cli, platform, "--head", "giant", "--format", "markdown")
    comment = result.stdout
    assert 60_000 < len(comment) <= 65_536  # the room is used, not wasted
    assert "ConfigMap/ml-platform/dashboards added" in comment
    assert "+  panel-00000.json: " in comment
    assert "lines left out here; run `mlopsctl diff` locally to see all of it" in comment


def test_text_cuts_each_resource_only_when_asked(cli, platform: Platform):
    branch(platform.checkout, "giant")
    _big_config_map(platform.checkout / "overlays/local/streamlit", 300)
    edit(
        platform.checkout,
        STREAMLIT,
        "  - ../../../base/streamlit\n",
        "  - ../../../base/streamlit\n  - dashboards.yaml\n",
    )
    commit_all(platform.checkout, "dashboards")
    whole = diff(cli, platform, "--head", "giant").stdout
    assert "panel-00299.json" in whole and "lines left out" not in whole
    short = diff(cli, platform, "--head", "giant", "--max-lines-per-resource", "20").stdout
    assert "panel-00299.json" not in short
    assert "lines left out (--max-lines-per-resource)" in short
    block = short.split("--- ConfigMap/ml-platform/dashboards added\n", 1)[1].split("\n...", 1)[0]
    assert len(block.splitlines()) == 20
