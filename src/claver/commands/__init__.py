"""Subcommands of the ``claver`` CLI that live next to their feature.

Each module here defines ``register(subparsers)``, adding its parsers with
``set_defaults(func=...)``; ``claver.cli`` calls every module's ``register`` in name order.
Keep imports inside the command functions so ``claver --help`` stays fast.
"""
