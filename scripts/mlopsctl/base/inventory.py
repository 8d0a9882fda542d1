"""The pins of a repository tree, read from its files, with the environment each belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mlopsctl.base.errors import MlopsctlError
from mlopsctl.base.kustomize import walk_tree
from mlopsctl.base.markers import Pin, find_pins


@dataclass(frozen=True)
class LocatedPin:
    file: str  # repository-relative
    pin: Pin

    @property
    def environment(self) -> str | None:
        """overlays/<env>/... pins belong to <env>."""
        parts = PurePosixPath(self.file).parts
        return parts[1] if len(parts) > 2 and parts[0] == "overlays" else None

    @property
    def model(self) -> str:
        return self.pin.follows.partition("@")[0]

    @property
    def alias(self) -> str:
        return self.pin.follows.partition("@")[2]


def scan(repository: Path, exclude: tuple[str, ...] = ()) -> list[LocatedPin]:
    found: list[LocatedPin] = []
    for directory, files in walk_tree(repository, exclude):
        for name in files:
            if not name.endswith((".yaml", ".yml")) and name != "Kustomization":
                continue
            path = directory / name
            relative = path.relative_to(repository).as_posix()
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as error:
                raise MlopsctlError(f"{relative}: not UTF-8 text: {error}") from error
            if "mlopsctl:" in text:
                found.extend(LocatedPin(relative, pin) for pin in find_pins(text, relative))
    return found


def model_pins(
    pins: list[LocatedPin], environment: str | None = None, model: str | None = None
) -> list[LocatedPin]:
    return [
        located
        for located in pins
        if located.pin.kind == "model"
        and located.environment is not None
        and (environment is None or located.environment == environment)
        and (model is None or located.model == model)
    ]
