"""``braintumor lesson NAME``: registered by `braintumor.cli`."""

from __future__ import annotations


def register(sub) -> None:
    """Add the ``lesson`` subcommand to the top-level subparsers `sub` (filled in by issue 5)."""
