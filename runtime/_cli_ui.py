"""``ray-durable ui``: serve the web UI (:mod:`runtime.ui`) for a hub until Ctrl-C.

Against the hub itself when it runs (detached) in a reachable Ray cluster, so the actions
work; otherwise from its files, read-only, as the read commands do.
"""

from __future__ import annotations

import faulthandler
import signal
import threading
from contextlib import ExitStack, closing

import click

from orchestrations._registry import default_registry

from ._cli_replay import import_module
from ._cli_session import Session
from ._client import TaskHub
from ._readonly import HubFiles
from .ui import serve


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8233, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free).")
@click.option("--allow-remote", is_flag=True, help="Allow a --host other than this machine (no authentication!).")
@click.option("--import", "modules", multiple=True, metavar="MODULE",
              help="Import this module first, so the UI can name the events its orchestrators await (repeatable).")
@click.pass_obj
def ui(session: Session, host: str, port: int, allow_remote: bool, modules: tuple[str, ...]) -> None:
    """Serve the web UI for the hub; prints its address, stops on Ctrl-C."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: where each thread is
    # Ctrl-C and SIGTERM stop it, as they stop uvicorn, even when it was started with SIGINT
    # ignored (a shell's background job, some CI runners): Python then sets no handler of its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    for module in modules:
        import_module(module)
    with ExitStack() as stack:
        source: TaskHub | HubFiles
        hub = session.running_hub()
        if hub is not None:
            stack.callback(session.leave_ray)
            stack.callback(hub.close)
            source, live = hub, True
        else:
            source, live = stack.enter_context(closing(HubFiles(session.hub, session.data_dir))), False
        server = serve(source, session.hub, live=live, host=host, port=port, allow_remote=allow_remote,
                       registry=default_registry)
        stack.callback(server.stop)
        mode = "live" if live else "read-only, from its files"
        click.echo(f"hub {session.hub!r} ({mode}) at {server.url}  (Ctrl-C stops)", err=False)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopped", err=True)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM: stop as Ctrl-C does."""
    raise KeyboardInterrupt


#: the commands this module adds to ``ray-durable``
COMMANDS: list[click.Command] = [ui]
