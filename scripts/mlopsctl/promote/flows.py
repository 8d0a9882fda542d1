"""The use cases: promote (the sync loop's pass), set an image, roll back.

Each works on a checkout of the remote at its head (the persistent mirror, or a throwaway clone;
never the user's checkout) and hands a planner to the `Promoter`, which plans again whenever the
branch moves under it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from mlopsctl.base import git, inventory, mirror
from mlopsctl.base.config import Config, load_config
from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.github import PullRequests
from mlopsctl.base.markers import VERSION, check_field, find_pins
from mlopsctl.base.registry import Registry
from mlopsctl.base.toolchain import Toolchain
from mlopsctl.promote.edits import ImageChange
from mlopsctl.promote.gates import nothing_pinned
from mlopsctl.promote.landing import Promoter, Report, Validator
from mlopsctl.promote.plan import Plan, plan_models

# Plans edits on a clone, with the configuration read from that clone.
Planner = Callable[[Path, Config], Plan]


@dataclass(frozen=True)
class Landing:
    """How edits land: for real or as a dry run, with what patience, and where PRs are opened."""

    dry_run: bool = False
    max_attempts: int = 20
    pull_requests: PullRequests | None = None
    log: Callable[[str], None] = print
    # How git authenticates to the remote (a token, an SSH key); none for a local path.
    credentials: git.Credentials = field(default=git.NO_CREDENTIALS, repr=False)
    # How each edit is validated before it lands (validate's `edit_findings`, from the caller).
    validator: Validator = field(kw_only=True)
    # Where the persistent mirrors of remotes live (one per remote); None: a throwaway clone.
    mirrors: Path | None = None

    def checkout(self, remote: git.Remote, branch: str) -> contextlib.AbstractContextManager[Path]:
        """The remote's `branch` as it is now: the mirror, fetched and reset, or a clone."""
        directory = None if self.mirrors is None else mirror.mirror_directory(self.mirrors, remote)
        return mirror.open_checkout(remote, branch, directory, self.log)


def run_edits(
    config: Config | None,
    toolchain: Toolchain,
    remote: str,
    planner: Planner,
    landing: Landing,
    mlflow_url: str = "",
    branch: str = "main",
    prepare: Callable[[Path, Config], None] | None = None,
    clone: Path | None = None,
) -> Report:
    """Plan edits on a checkout of `remote` at its head, then land them.

    `clone` is a checkout the caller holds (the promoter's pass reads it before and after);
    without one, the landing opens its own. Without a `config`, the checkout's own mlopsctl.yaml
    is used and `branch` names what to check out. `prepare` runs once on the checkout before the
    first plan (a rollback moves its alias there).
    """
    origin = git.Remote(remote, landing.credentials)
    with contextlib.ExitStack() as stack:
        if clone is None:
            clone = stack.enter_context(
                landing.checkout(origin, config.promotion.branch if config else branch)
            )
        if config is None:
            config = load_config(clone)
        if prepare is not None:
            prepare(clone, config)
        bound_config = config
        promoter = Promoter(
            config,
            toolchain,
            lambda current: planner(current, bound_config),
            origin,
            mlflow_url,
            landing.max_attempts,
            pull_requests=landing.pull_requests,
            log=landing.log,
            validator=landing.validator,
        )
        return promoter.land(clone, dry_run=landing.dry_run)


def run(
    config: Config | None,
    registry: Registry,
    toolchain: Toolchain,
    remote: str,
    landing: Landing,
    environment: str | None = None,
    model: str | None = None,
    branch: str = "main",
    source: str = "cli",
    environments: Collection[str] | None = None,
    clone: Path | None = None,
) -> Report:
    """One pass of the sync loop for the model pins matching environment and model.

    `environments`, when given, is what this writer owns: pins of any other environment are
    another promoter's to move and are not read.
    """

    def planner(clone: Path, config: Config) -> Plan:
        pins = [
            located
            for located in inventory.model_pins(
                inventory.scan(clone, config.render_exclude), environment, model
            )
            if environments is None or located.environment in environments
        ]
        if not pins:
            raise MlopsctlError(
                f"no model pin in {remote} matches environment {environment or 'any'} "
                f"and model {model or 'any'}"
            )
        return plan_models(pins, registry, config, source=source)

    return run_edits(
        config, toolchain, remote, planner, landing, registry.base_url, branch, clone=clone
    )


def set_image_run(
    config: Config,
    toolchain: Toolchain,
    remote: str,
    landing: Landing,
    image: str,
    tag: str | None,
    digest: str | None,
    environment: str | None = None,
) -> Report:
    """Point every marked images: entry for `image` (in one or all environments) at tag/digest."""

    def planner(clone: Path, config: Config) -> Plan:
        pins = [
            located
            for located in inventory.scan(clone, config.render_exclude)
            if located.pin.kind == "image"
            and located.pin.follows == image
            and located.environment is not None
            and (environment is None or located.environment == environment)
        ]
        if not pins:
            raise MlopsctlError(f"no overlay in {remote} has an image pin for {image!r}")
        return Plan(
            edits=[
                ImageChange(
                    located.environment or "", located.file, image, located.pin.value, tag, digest
                )
                for located in pins
            ]
        )

    return run_edits(config, toolchain, remote, planner, landing)


@dataclass
class Rollback:
    environment: str
    model: str
    alias: str
    pinned: str
    target: str
    # Every environment whose pin follows the alias moved back (the one asked for first).
    environments: list[str]
    report: Report


def previous_pin(clone: Path, located: inventory.LocatedPin) -> str | None:
    """The value this pin had before its current one, from the file's git history."""
    for revision in git.log_of(clone, located.file):
        text = git.file_at(clone, revision, located.file)
        if text is None:
            continue
        values = [
            pin.value
            for pin in find_pins(text, located.file)
            if pin.kind == "model" and pin.follows == located.pin.follows
        ]
        if values and values[0] != located.pin.value:
            return values[0]
    return None


def rollback_run(
    config: Config,
    registry: Registry,
    toolchain: Toolchain,
    remote: str,
    landing: Landing,
    environment: str,
    model: str,
    to_version: str | None = None,
    all_following: bool = False,
) -> Rollback:
    """Move the alias `environment` follows back (the intent), then let the loop write Git.

    An alias is shared by every environment whose pin follows it: moving it back moves them all
    at their next pass. Unless `all_following`, a rollback that would reach another environment
    is refused before anything moves, naming the environments and their files.
    """
    moved: dict[str, str] = {}
    scope: list[str] = []

    def prepare(clone: Path, config: Config) -> None:
        every_pin = inventory.model_pins(inventory.scan(clone, config.render_exclude), None, model)
        pins = [located for located in every_pin if located.environment == environment]
        if not pins:
            raise MlopsctlError(f"no pin for {model} in {environment}")
        aliases = sorted({located.alias for located in pins})
        if len(aliases) != 1:
            raise MlopsctlError(
                f"the pins for {model} in {environment} follow different aliases {aliases}: "
                "move each alias back in MLflow, then promote"
            )
        located = pins[0]
        target = to_version or previous_pin(clone, located)
        if target is None:
            raise MlopsctlError(
                f"{located.file}: the git history holds no earlier version of {model} to return "
                "to; pass --to VERSION"
            )
        if to_version is None and nothing_pinned(target):
            raise MlopsctlError(
                f"{located.file}: before v{located.pin.value} nothing was promoted to "
                f"{environment} (its pin was v0), so there is no earlier version to return to; "
                "pass --to VERSION"
            )
        check_field("--to", target, VERSION)
        others = [
            other
            for other in every_pin
            if other.environment != environment
            and other.alias == located.alias
            and _same_registry(config, other.environment or "", environment)
        ]
        if others and not all_following:
            listed = ", ".join(
                f"{other.environment} ({other.file})"
                for other in {o.environment: o for o in others}.values()
            )
            raise MlopsctlError(
                f"rolling back {environment} moves {model}@{located.alias} in MLflow, which "
                f"{listed} also follow: their pins would go back at their next pass too. Nothing "
                "was moved. Pass --all-following to roll back every one of them, or give "
                f"{environment} an alias of its own"
            )
        scope.extend(dict.fromkeys([environment] + [o.environment or "" for o in others]))
        version = registry.version(model, target)
        if version is None:
            raise MlopsctlError(f"{model} v{target} does not exist in MLflow")
        registry.set_alias(model, located.alias, target)
        moved.update(alias=located.alias, pinned=located.pin.value, target=target)

    def planner(clone: Path, config: Config) -> Plan:
        pins = [
            located
            for located in inventory.model_pins(
                inventory.scan(clone, config.render_exclude), None, model
            )
            if located.environment in scope and located.alias == moved["alias"]
        ]
        # A rollback goes back on purpose: the "not worse than" comparison does not apply.
        return plan_models(pins, registry, config, source="rollback", compare_with_pinned=False)

    report = run_edits(
        config, toolchain, remote, planner, landing, registry.base_url, prepare=prepare
    )
    return Rollback(
        environment, model, moved["alias"], moved["pinned"], moved["target"], scope, report
    )


def _same_registry(config: Config, first: str, second: str) -> bool:
    """Whether two environments follow the same registry (and so share its aliases).

    Without a registry named for both, every environment follows the one registry the command
    talks to. An environment with no promotion policy has no writer to move its pin, but its pin
    still follows the alias: it counts as sharing it, so the rollback names it.
    """
    known = {policy.environment for policy in config.promotion.environments}
    if first not in known or second not in known:
        return True
    first_registry = config.promotion.registry_of(first)
    second_registry = config.promotion.registry_of(second)
    return first_registry is None or second_registry is None or first_registry == second_registry
