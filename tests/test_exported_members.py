"""The public surface: every error is exported where applications import from, sorted."""

from __future__ import annotations

import actors
import storage
import storage.errors

ERRORS = [
    name for name in storage.errors.__all__ if isinstance(getattr(storage.errors, name), type)
]


def test_every_error_of_the_hierarchy_is_exported_by_actors_and_storage():
    errors = set(ERRORS)
    assert errors <= set(actors.__all__), sorted(errors - set(actors.__all__))
    assert errors <= set(storage.__all__), sorted(errors - set(storage.__all__))
    for name in errors:
        assert getattr(actors, name) is getattr(storage.errors, name)


def test_every_error_derives_from_the_one_root():
    for name in ERRORS:
        error = getattr(storage.errors, name)
        assert issubclass(error, storage.errors.ActorKVError), name


def test_the_public_names_are_exactly_what_the_packages_define_and_are_sorted():
    for package in (actors, storage):
        names = package.__all__
        assert names == sorted(names, key=lambda n: (not n.isupper(), n)), package.__name__
        assert len(set(names)) == len(names)
        for name in names:
            assert hasattr(package, name), f"{package.__name__}.{name}"
