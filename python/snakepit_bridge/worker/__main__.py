"""``python -m snakepit_bridge.worker``: runs the worker (see ``cli.main``)."""

from .cli import main

main()
