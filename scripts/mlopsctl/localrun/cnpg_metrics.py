"""Stand-in for CloudNativePG's instance metrics exporter (port 9187, `/metrics`), run in the local
run's PostgreSQL instance pod beside the server, which it queries over its Unix socket.

Exports, under CloudNativePG's names and labels, the series of its default monitoring queries
that the platform's dashboard and alerts read: `cnpg_collector_up`, `cnpg_backends_total`,
`cnpg_backends_max_tx_duration_seconds`, `cnpg_pg_database_size_bytes`,
`cnpg_pg_database_xid_age`, `cnpg_pg_replication_lag`, `cnpg_pg_replication_streaming_replicas`,
`cnpg_pg_postmaster_start_time`, `cnpg_pg_stat_database_xact_commit` and `_xact_rollback`, and
`cnpg_pg_settings_setting{name="max_connections"}`. Each query is the operator's own, trimmed.

Standalone on purpose (the standard library and `psql` only): the pod runs it with the host's
Python, not with mlopsctl's environment.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (metric prefix, query, label columns, (column, metric suffix, type) ...)
QUERIES: tuple[tuple[str, str, tuple[str, ...], tuple[tuple[str, str, str], ...]], ...] = (
    (
        "cnpg_backends",
        "SELECT datname, usename, COALESCE(application_name, ''), state, count(*),"
        " COALESCE(EXTRACT(EPOCH FROM max(now() - xact_start)), 0)"
        " FROM pg_stat_activity WHERE usename IS NOT NULL AND state IS NOT NULL"
        " GROUP BY datname, usename, application_name, state",
        ("datname", "usename", "application_name", "state"),
        (("total", "total", "gauge"), ("max_tx", "max_tx_duration_seconds", "gauge")),
    ),
    (
        "cnpg_pg_database",
        "SELECT datname, pg_database_size(datname), age(datfrozenxid)"
        " FROM pg_database WHERE datallowconn",
        ("datname",),
        (("size", "size_bytes", "gauge"), ("xid_age", "xid_age", "gauge")),
    ),
    (
        "cnpg_pg_replication",
        "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 ELSE GREATEST(0,"
        " EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))) END,"
        " (SELECT count(*) FROM pg_stat_replication)",
        (),
        (("lag", "lag", "gauge"), ("replicas", "streaming_replicas", "gauge")),
    ),
    (
        "cnpg_pg_postmaster",
        "SELECT EXTRACT(EPOCH FROM pg_postmaster_start_time())",
        (),
        (("start", "start_time", "gauge"),),
    ),
    (
        "cnpg_pg_stat_database",
        "SELECT datname, xact_commit, xact_rollback FROM pg_stat_database"
        " WHERE datname IS NOT NULL",
        ("datname",),
        (("commit", "xact_commit", "counter"), ("rollback", "xact_rollback", "counter")),
    ),
    (
        "cnpg_pg_settings",
        "SELECT name, setting FROM pg_settings WHERE name = 'max_connections'",
        ("name",),
        (("setting", "setting", "gauge"),),
    ),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _rows(socket_directory: str, query: str) -> list[list[str]]:
    command = ["psql", "-h", socket_directory, "-U", "postgres", "-d", "postgres", "-X", "-A"]
    completed = subprocess.run(
        [*command, "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return [line.split("\t") for line in completed.stdout.splitlines() if line]


def exposition(socket_directory: str, cluster: str) -> str:
    """The metrics text: every query's series, or `cnpg_collector_up 0` when PostgreSQL fails."""
    lines: list[str] = []
    try:
        for prefix, query, label_columns, columns in QUERIES:
            rows = _rows(socket_directory, query)
            for position, (_column, suffix, kind) in enumerate(columns):
                name = f"{prefix}_{suffix}"
                lines.append(f"# TYPE {name} {kind}")
                for row in rows:
                    labels = ",".join(
                        f'{label}="{_escape(value)}"'
                        for label, value in zip(label_columns, row, strict=False)
                    )
                    value = row[len(label_columns) + position] or "0"
                    lines.append(f"{name}{{{labels}}} {float(value)}")
        up = 1
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as error:
        print(f"cnpg-metrics stand-in: {error}", file=sys.stderr, flush=True)
        lines = []
        up = 0
    lines.append("# TYPE cnpg_collector_up gauge")
    lines.append(f'cnpg_collector_up{{cluster="{_escape(cluster)}"}} {up}')
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9187)
    parser.add_argument("--socket-directory", required=True)
    parser.add_argument("--cluster", required=True)
    arguments = parser.parse_args(list(argv))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = exposition(arguments.socket_directory, arguments.cluster).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_arguments: object) -> None:
            return  # one line per scrape would bury PostgreSQL's own log

    class Server(ThreadingHTTPServer):
        def server_bind(self) -> None:  # no reverse DNS lookup of the address
            self.socket.bind(self.server_address)
            self.server_name, self.server_port = "cnpg-metrics", arguments.port

    # PID 1 of its container: without a handler of its own, SIGTERM would be ignored and the
    # pod's deletion would wait out its whole grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server(("0.0.0.0", arguments.port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
