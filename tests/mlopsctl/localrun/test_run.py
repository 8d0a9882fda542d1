"""A local run's own part, short of starting a whole platform (tests/support/platform_run.py and
test_local_run.py do that, once): the snapshot of a working tree the run's git host serves, the
images it knows, and, over a node of the test's own (tests/support/local_node.py), what it
reports of pods, blocked connections and use, and `kubectl create -k` of a Job."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlopsctl.base.config import load_config
from mlopsctl.base.errors import LocalRunError, UnsupportedManifest
from mlopsctl.localrun.kubelet import Pod
from mlopsctl.localrun.model import ObjectReference
from mlopsctl.localrun.network import connect_inside
from mlopsctl.localrun.run import LocalRun, RunImages, Settings, snapshot_working_tree
from tests.support.local_node import IMAGE, deployment, node, server, wait_for
from tests.support.paths import REPOSITORY
from tests.support.platform_fixtures import commit_all, git
from tests.support.trees import MINIMAL_CONFIG, write_tree

root_only = pytest.mark.usefixtures("as_root")


# -- the snapshot the git host serves -----------------------------------------------------------


@pytest.fixture
def working_tree(tmp_path: Path) -> Path:
    """A checkout with history, an edit, a staged file, an untracked file and an ignored one."""
    tree = write_tree(
        tmp_path / "checkout",
        {".gitignore": "*.log\n", "committed.txt": "one\n", "edited.txt": "before\n"},
    )
    git(tree, "init", "--quiet", "--initial-branch=work")
    commit_all(tree, "first")
    write_tree(tree, {"edited.txt": "after\n", "staged.txt": "staged\n", "new.txt": "new\n"})
    git(tree, "add", "staged.txt")
    write_tree(tree, {"debug.log": "ignored\n"})
    return tree


def test_the_snapshot_holds_the_working_tree_as_it_is_on_top_of_its_history(
    working_tree: Path, tmp_path: Path
):
    status_before = git(working_tree, "status", "--porcelain")
    head = git(working_tree, "rev-parse", "HEAD").strip()
    commit = snapshot_working_tree(working_tree, tmp_path / "served.git", "main")
    served = tmp_path / "served.git"
    assert git(served, "rev-parse", "main").strip() == commit
    assert git(served, "rev-parse", "main^").strip() == head
    files = git(served, "ls-tree", "-r", "--name-only", "main").split()
    assert files == [".gitignore", "committed.txt", "edited.txt", "new.txt", "staged.txt"]
    assert git(served, "show", "main:edited.txt") == "after\n"
    # A clone checks out the branch the run follows.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(served), str(clone))
    assert (clone / "new.txt").read_text() == "new\n"
    # The user's checkout is as it was: branch, index, files.
    assert git(working_tree, "status", "--porcelain") == status_before
    assert git(working_tree, "rev-parse", "--abbrev-ref", "HEAD").strip() == "work"
    assert git(working_tree, "branch", "--list").split() == ["*", "work"]


def test_a_directory_that_is_not_a_checkout_is_refused(tmp_path: Path):
    with pytest.raises(LocalRunError, match="is not a git checkout"):
        snapshot_working_tree(tmp_path, tmp_path / "served.git", "main")


# -- images and settings ------------------------------------------------------------------------


def test_an_image_with_no_build_context_is_refused_naming_it(tmp_path: Path):
    images = RunImages(REPOSITORY, load_config(REPOSITORY), tmp_path, lambda line: None)
    resource = ObjectReference("Deployment", "ml-platform", "model-server")
    with pytest.raises(UnsupportedManifest) as refused:
        images.image(
            "ghcr.io/example-org/elsewhere/thing:1.0",
            resource,
            "spec.template.spec.containers[0].image",
        )
    assert str(refused.value) == (
        "Deployment/ml-platform/model-server: spec.template.spec.containers[0].image: no build "
        "context for image ghcr.io/example-org/elsewhere/thing:1.0: declare it under `images:` "
        "in mlopsctl.yaml"
    )


def test_an_environment_mlopsctl_yaml_does_not_name_is_refused(tmp_path: Path):
    with pytest.raises(LocalRunError, match=r"--env 'qa' is not one of \['local', 'staging'"):
        LocalRun(Settings(repository=REPOSITORY, environment="qa", state_directory=tmp_path))


# -- a run over a node of the test's own --------------------------------------------------------


@dataclass
class Run:
    run: LocalRun
    log: list[str]
    repository: Path


JOBS = {
    "jobs/hello/kustomization.yaml": "resources: [job.yaml]\n",
    "jobs/failing/kustomization.yaml": "resources: [job.yaml]\n",
    "jobs/none/kustomization.yaml": "resources: [configmap.yaml]\n",
    "jobs/none/configmap.yaml": yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "apps"}}
    ),
}


def job(name: str, script: str) -> dict[str, Any]:
    body = deployment(
        name,
        [{"name": "task", "image": IMAGE, "command": ["/bin/sh", "-c", script]}],
        kind="Job",
        restartPolicy="Never",
    )
    body["spec"]["backoffLimit"] = 0
    return body


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    repository = write_tree(
        tmp_path / "repository",
        {
            "mlopsctl.yaml": MINIMAL_CONFIG,
            **JOBS,
            "jobs/hello/job.yaml": yaml.safe_dump(job("hello", "echo hello from $(hostname)")),
            "jobs/failing/job.yaml": yaml.safe_dump(job("failing", "echo cannot go on; exit 5")),
        },
    )
    lines: list[str] = []
    made = LocalRun(
        Settings(
            repository=repository,
            state_directory=tmp_path / "run",
            forwards=None,
            log=lines.append,
        )
    )
    with node(tmp_path / "node", log=lines.append) as cluster:
        # What `start` makes, made by the node: the run's report reads them.
        made.cluster, made.network = cluster, cluster.network
        cluster.start()
        yield Run(made, lines, repository)


@root_only
def test_create_job_runs_a_roots_job_to_its_end(run: Run):
    pod = run.run.create_job("jobs/hello")
    assert pod.phase == "Succeeded"
    assert f"hello from {pod.name}" in pod.log_tail("task")
    with pytest.raises(LocalRunError) as failed:
        run.run.create_job("jobs/failing")
    message = str(failed.value)
    assert message.startswith("Job/apps/failing: BackoffLimitExceeded: pod failing-")
    assert message.splitlines()[-1] == "cannot go on"
    with pytest.raises(LocalRunError, match="jobs/none: renders no Job"):
        run.run.create_job("jobs/none")


def lines_under(lines: list[str], pod: Pod) -> list[str]:
    (at,) = [index for index, line in enumerate(lines) if f"/{pod.name} " in line]
    below = []
    for line in lines[at + 1 :]:
        if not line.startswith("      "):
            break
        below.append(line)
    return below


@root_only
def test_the_status_says_why_a_container_keeps_failing(run: Run):
    cluster = run.run.cluster
    assert cluster is not None
    crashing = {"name": "app", "image": IMAGE, "command": ["/bin/sh", "-c", "echo no db; exit 3"]}
    cluster.apply(deployment("crashing", [crashing]), "test")
    cluster.apply(deployment("healthy", [server()]), "test")
    wait_for(lambda: cluster.health("Deployment", "apps", "healthy")[0] == "Healthy", "healthy")
    [pod] = wait_for(
        lambda: [
            p
            for p in cluster.pods.values()
            if p.owner.name == "crashing" and p.containers["app"].reason == "CrashLoopBackOff"
        ],
        "the crashing pod's back-off",
    )
    lines = run.run.status_lines()
    status = next(line for line in lines if f"/{pod.name} " in line)
    assert re.search(r"CrashLoopBackOff\s+restarts \d", status)
    assert lines_under(lines, pod) == [
        f"      app: CrashLoopBackOff: Error (exit code 3); {pod.containers['app'].message}",
        *(f"        | {line}" for line in pod.log_tail("app", 5)),
    ]
    assert "        | no db" in lines_under(lines, pod)
    # A healthy pod has a line and nothing under it.
    [healthy] = [p for p in cluster.pods.values() if p.owner.name == "healthy"]
    assert lines_under(lines, healthy) == []
    # The running report (what the run's reporter does each second) logs a change once.
    run.run._report_changes()
    run.run._report_changes()
    said = [line for line in run.log if line.startswith(f"pod apps/{healthy.name}: ")]
    assert said == [f"pod apps/{healthy.name}: Running"]


@root_only
def test_a_connection_a_policy_drops_is_named_and_reported_once(run: Run):
    cluster = run.run.cluster
    assert cluster is not None
    cluster.apply(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]},
        },
        "test",
    )
    for name in ("web", "client"):
        cluster.apply(deployment(name, [server()]), "test")
    for name in ("web", "client"):
        wait_for(lambda n=name: cluster.health("Deployment", "apps", n)[0] == "Healthy", name)
    [web] = [p for p in cluster.pods.values() if p.owner.name == "web"]
    [client] = [p for p in cluster.pods.values() if p.owner.name == "client"]
    assert client.endpoint is not None
    with pytest.raises(TimeoutError):
        connect_inside(client.endpoint.namespace_path, (web.ip, 8080), timeout=0.5)
    expected = f"{client.name} (apps) -> {web.name} (apps) TCP 8080: denied by NetworkPolicy"
    assert any(line.startswith(expected) for line in run.run.denials()), run.run.denials()
    run.run._report_changes()
    run.run._report_changes()
    assert len([line for line in run.log if line.startswith(f"blocked: {expected}")]) == 1


@root_only
def test_readings_are_the_running_containers_use(run: Run):
    cluster = run.run.cluster
    assert cluster is not None
    limited = server(resources={"limits": {"memory": "256Mi", "cpu": "500m"}})
    cluster.apply(deployment("web", [limited]), "test")
    wait_for(lambda: cluster.health("Deployment", "apps", "web")[0] == "Healthy", "web")
    run.run.create_job("jobs/hello")  # finished: says nothing about use
    readings = run.run.readings()
    [reading] = [reading for reading in readings if reading.workload == "web"]
    assert reading.running and reading.container == "app"
    assert reading.resources.memory_limit_bytes == 256 * 2**20
    # A Python HTTP server: some MiB, well under its limit.
    assert 2 * 2**20 < reading.memory_bytes <= reading.peak_memory_bytes < 256 * 2**20
    assert reading.oom_kills == 0
    assert not [r for r in readings if r.workload == "hello"]
