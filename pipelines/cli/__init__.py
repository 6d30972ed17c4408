"""The `genaiops` command line. Heavy libraries are imported inside commands so `--help` stays fast."""

from __future__ import annotations

# Each module registers its commands; `genaiops --help` lists them in this order.
from pipelines.cli import lifecycle  # noqa: F401

# isort: split
from pipelines.cli import registry  # noqa: F401

# isort: split
from pipelines.cli import endpoints, monitoring, orchestration, quality, release  # noqa: F401
from pipelines.cli.common import app, stop

__all__ = ["app", "main"]


def main() -> None:
    import signal

    # SIGTERM ends a command as Ctrl-C does: Prefect's temporary API server, which a flow run starts as a
    # child process, is stopped at exit, and nothing the command started is left running. SIGINT is set too:
    # a command started in the background by a script inherits it ignored.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    app()


if __name__ == "__main__":
    main()
