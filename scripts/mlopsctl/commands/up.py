"""`mlopsctl up`: run an environment of the platform on this machine from its rendered
manifests (see `mlopsctl.localrun`), until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from mlopsctl.commands._workspace import add_repository_argument, workspace
from mlopsctl.localrun import usage
from mlopsctl.localrun.run import DEFAULT_FORWARDS, LocalRun, Settings

IDLE_SECONDS = 30.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run an environment here from its rendered manifests (root; Ctrl-C stops it)",
        description=__doc__,
    )
    add_repository_argument(parser)
    parser.add_argument("--env", default="local", help="the environment to run (default: local)")
    parser.add_argument(
        "--git-repository",
        type=Path,
        help="serve this bare repository as the one the Applications name (default: a snapshot "
        "of the working tree; pushes land in it)",
    )
    parser.add_argument(
        "--state", type=Path, help="keep the run's files here (default: a temporary directory)"
    )
    parser.add_argument(
        "--no-port-forward", action="store_true", help="open no port-forwards to the UIs"
    )
    parser.add_argument(
        "--job",
        action="append",
        default=[],
        metavar="ROOT",
        help="once healthy, run the Job a root renders (as `kubectl create -k ROOT`), "
        "e.g. base/trainer",
    )
    parser.add_argument(
        "--resources",
        action="store_true",
        help="report each container's memory and CPU next to its requests and limits: idle "
        "for a while once healthy, then while the --job runs run; at the end",
    )
    parser.add_argument(
        "--exit-when-healthy",
        action="store_true",
        help="stop once every Application is healthy (and the --job runs finished): a smoke test",
    )


def run(args: argparse.Namespace) -> int:
    space = workspace(args)
    settings = Settings(
        repository=space.repository,
        environment=args.env,
        git_repository=args.git_repository,
        state_directory=args.state,
        forwards=None if args.no_port_forward else DEFAULT_FORWARDS,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    local_run = LocalRun(settings)

    def request_stop(signal_number: int, _frame: FrameType | None) -> None:
        # Unwinds whatever the run is waiting for, through the `finally` that stops it all.
        raise KeyboardInterrupt(signal.Signals(signal_number).name)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        local_run.start()
        took = local_run.wait_until_healthy()
        print(f"healthy {took:.0f} s after the sync began", flush=True)
        for title, url in local_run.urls().items():
            print(f"  {title}: {url}", flush=True)
        if args.resources and local_run.usage is not None:
            print(f"measuring at idle for {IDLE_SECONDS:.0f} s", flush=True)
            time.sleep(IDLE_SECONDS)
            local_run.usage.phase = "load"
        for root in args.job:
            pod = local_run.create_job(root)
            print(f"job {root}: {pod.name} completed", flush=True)
            for line in pod.log_tail(pod.template.containers[0].name, 15):
                print(f"  | {line}", flush=True)
        if not args.exit_when_healthy:
            # Timed sleeps, not an untimed wait: a signal the kernel gives another thread is
            # handled only when the main thread next runs bytecode.
            while True:
                time.sleep(0.5)
        return 0
    except KeyboardInterrupt as interrupt:
        print(
            f"received {interrupt or 'an interrupt'}: stopping everything the run started",
            file=sys.stderr,
            flush=True,
        )
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if args.resources and local_run.usage is not None:
            print(usage.report(local_run.usage.snapshot()), flush=True)
        local_run.stop()
