"""Child program of the fork kill -9 test: a key space, a fork of a past point, both written.

Run as ``python fork_kill9_workload.py STORE_DIR ROUND FORK_SEQ`` with the repository root
on ``PYTHONPATH``. The store is opened with :data:`OPTIONS`: a tiny recovery budget (the key
spaces snapshot themselves every few records, in the background) and ``recent_versions=5``,
so a fork of a past point is rebuilt from a snapshot and the log rather than read from
memory. The child:

1. writes the source key space ``src`` until its last seq reaches ``FORK_SEQ``;
2. forks it at ``FORK_SEQ`` into ``fork{ROUND}`` and prints ``forked fork{ROUND}``;
3. writes both from two threads, each operation acknowledged before the next starts.

Every operation writes exactly one record (:func:`next_op` picks a put where a delete
would find nothing), so a key space's last seq tells how many of its operations landed:
``src`` holds :func:`source_model` ``(last_seq)``, and a fork at ``S`` holds
:func:`fork_model` ``(name, S, last_seq - S)``; both compute values, versions and seqs.

Output, one flushed line each: ``ready``, ``issued SPACE I`` before operation ``I`` of a
key space (its operations are numbered from 0 across rounds), ``ack SPACE I`` once it is
durable (fsync="always"), ``forked NAME`` once the fork is complete.

``... FORK_SEQ --die-at STEP`` instead SIGKILLs the child inside ``fork_keyspace``, just
before the step :data:`DIE_AT` names.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors import KeySpace, Store
from storage import _fileio
from storage.snapshot import SNAPSHOT_SUFFIX

KEYS = [f"k{i}" for i in range(8)]
OPTIONS: dict[str, Any] = {
    "segment_bytes": 8192,
    "recovery_budget": 0.00003,  # x the assumed ~300,000 records/s: a snapshot every ~10
    "recent_versions": 5,
}
"""What both the child and the parent open the store with."""
TIMEOUT = 60.0

Model = dict[str, tuple[Any, int, int]]
"""key -> (value, version, seq)."""
Op = tuple[str, list[tuple[str, Any]], int | None]
"""kind, changes (key, value or None for a deletion), expect_version of a cas."""


def next_op(model: Model, tag: str, index: int) -> Op:
    """Operation ``index`` of the key space ``tag``, given its model before it."""
    key = KEYS[index * 3 % len(KEYS)]
    value = [tag, index]
    kind = ("put", "put", "batch", "delete", "cas")[index % 5]
    if kind == "batch":
        other, gone = KEYS[(index * 3 + 1) % len(KEYS)], KEYS[(index * 3 + 5) % len(KEYS)]
        changes = [(key, value), (other, value)]
        if gone in model and gone not in (key, other):
            changes.append((gone, None))
        return kind, changes, None
    if kind == "delete" and key in model:
        return kind, [(key, None)], None
    if kind == "cas":
        return kind, [(key, value)], model[key][1] if key in model else 0
    return "put", [(key, value)], None


def apply_op(model: Model, op: Op, seq: int) -> None:
    """``op``, written as record ``seq``, applied to ``model`` in place."""
    for key, value in op[1]:
        if value is None:
            del model[key]
        else:
            previous = model.get(key)
            model[key] = (value, 1 if previous is None else previous[1] + 1, seq)


def fold(model: Model, tag: str, first_seq: int, count: int) -> Model:
    """``model`` after operations ``0 .. count - 1`` of ``tag``, written from ``first_seq``."""
    model = dict(model)
    for index in range(count):
        apply_op(model, next_op(model, tag, index), first_seq + index)
    return model


def source_model(last_seq: int) -> Model:
    """What ``src`` holds once its last seq is ``last_seq``."""
    return fold({}, "src", 1, last_seq)


def fork_model(name: str, point: int, count: int) -> Model:
    """What the fork ``name`` of ``src`` at ``point`` holds after ``count`` operations."""
    return fold(source_model(point), name, point + 1, count)


def run_op(ks: KeySpace, op: Op) -> None:
    kind, changes, expect = op
    if kind == "batch":
        with ks.batch() as batch:
            for key, value in changes:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
        assert batch.receipt is not None
        return
    key, value = changes[0]
    if value is None:
        assert ks.delete(key) is not None
    else:
        ks.put(key, value, expect_version=expect)


class Writer:
    """Runs one key space's operations in order, keeping its model to choose them."""

    def __init__(self, ks: KeySpace, tag: str, model: Model, first_seq: int) -> None:
        self.ks, self.tag, self.model = ks, tag, model
        self.first_seq = first_seq  # the seq operation 0 wrote (or will write)
        self.index = ks.last_seq - first_seq + 1  # operations already on disk

    def run_one(self) -> None:
        op = next_op(self.model, self.tag, self.index)
        say(f"issued {self.tag} {self.index}")
        run_op(self.ks, op)
        apply_op(self.model, op, self.first_seq + self.index)
        say(f"ack {self.tag} {self.index}")
        self.index += 1


_printing = threading.Lock()


def say(line: str) -> None:
    """Print one line, whole, flushed (writers print from their own threads)."""
    with _printing:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _in_fork(path: Path) -> bool:
    """Whether ``path`` is a fork's temporary directory or inside one."""
    return any(part.startswith(".forking-") for part in path.parts)


DIE_AT: dict[str, tuple[str, Callable[..., bool]]] = {
    "snapshot rename": (
        "rename",
        lambda src, dst: _in_fork(dst) and dst.name.endswith(SNAPSHOT_SUFFIX),
    ),
    "fork rename": ("rename", lambda src, dst: _in_fork(src) and not _in_fork(dst)),
    "directory fsync": (
        "fsync_dir",
        lambda path: path.name == "keyspaces" and not any(map(_in_fork, path.iterdir())),
    ),
}
"""Where ``--die-at`` dies: the ``_fileio`` operation inside ``fork_keyspace`` and which
call of it: renaming the fork's snapshot into place in its temporary directory, renaming
that directory to the fork's name, or fsyncing the key spaces' directory after that (the
first fsync of it with no temporary directory left in it)."""


def die_at(step: str) -> None:
    """SIGKILL this process just before the step named ``step``."""
    operation, matches = DIE_AT[step]
    original = getattr(_fileio, operation)

    def deadly(*args: Any) -> Any:
        if matches(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args)

    setattr(_fileio, operation, deadly)


def main(argv: list[str]) -> int:
    path, round_number, point = argv[1], int(argv[2]), int(argv[3])
    dying = argv[5] if argv[4:5] == ["--die-at"] else None
    store = Store.open(path, fsync="always", **OPTIONS)
    src = store.keyspace("src")
    source = Writer(src, "src", source_model(src.last_seq), 1)
    say("ready")
    while src.last_seq < point:
        source.run_one()
    name = f"fork{round_number}"
    if dying is not None:
        die_at(dying)
    fork = store.fork_keyspace("src", name, seq=point)
    if dying is not None:
        say("survived")  # the step never came: the parent fails
        return 1
    say(f"forked {name}")
    forked = Writer(fork, name, fork_model(name, point, 0), point + 1)

    def loop(writer: Writer) -> None:
        while True:
            writer.run_one()

    for writer in (source, forked):
        threading.Thread(target=loop, args=(writer,), daemon=True).start()
    threading.Event().wait(TIMEOUT)  # the parent kills us long before this
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
