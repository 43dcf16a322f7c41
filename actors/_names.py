"""Validation of actor and key space names, which become directory names on disk."""

from __future__ import annotations

import re

from storage.errors import InvalidName

ACTORS_DIR = "actors"  # a store's custom actors' logs, one directory each
KEYSPACES_DIR = "keyspaces"  # its key spaces' logs

MAX_NAME_LENGTH = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: object, what: str = "actor") -> str:
    """Return ``name`` if it is a safe directory name, else raise.

    A name is 1 to 128 characters of ASCII letters, digits, ``.``, ``_`` and ``-``, starting
    with a letter or digit: no path separators, no ``..``, nothing hidden, nothing that
    means different things on different file systems.

    Raises:
        InvalidName: The name is not a str or breaks one of those rules.
    """
    if not isinstance(name, str):
        msg = f"{what} name must be a str, got {type(name).__name__}"
        raise InvalidName(msg)
    if not name or len(name) > MAX_NAME_LENGTH:
        msg = f"{what} name must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}"
        raise InvalidName(msg)
    if not _NAME.fullmatch(name) or ".." in name:
        msg = (
            f"{what} name {name!r} is not allowed: use ASCII letters, digits, '.', '_' and '-', "
            "start with a letter or digit, and no '..'"
        )
        raise InvalidName(msg)
    return name
