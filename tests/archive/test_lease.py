"""One writer per archive prefix: the lease refuses a second store and fences a paused one."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors import ArchiveLeased, Store
from actors._shipping import StoreShipper
from storage import open_archive
from storage.errors import ArchiveError
from storage.lease import LEASE_OBJECT, Lease, LeaseRecord, LeaseView
from storage.shipping import read_uploads
from tests.archive.test_ship_and_restore import wait_for
from tests.keyspace.conftest import TIMEOUT


def lease_of(archive_url: str) -> LeaseRecord:
    data = open_archive(archive_url).get(LEASE_OBJECT)
    return msgspec.json.decode(data, type=LeaseRecord)


def test_a_second_writer_is_refused_until_the_first_closes(
    tmp_path: Path, archive_url: str
) -> None:
    first = Store.open(tmp_path / "one", archive=archive_url)
    try:
        holder = lease_of(archive_url).holder
        with pytest.raises(ArchiveLeased, match="leased to writer") as refused:
            Store.open(tmp_path / "two", archive=archive_url)
        assert refused.value.holder == holder
        assert refused.value.expires_at > time.time()
        # The refused store left nothing locked: the directory opens without an archive.
        Store.open(tmp_path / "two").close()
    finally:
        first.close()
    assert lease_of(archive_url).expires_at == 0.0  # released at close
    with Store.open(tmp_path / "two", archive=archive_url):
        assert lease_of(archive_url).token == 2


def test_a_paused_writer_is_fenced_after_a_takeover(tmp_path: Path, archive_url: str) -> None:
    options: dict[str, Any] = {
        "archive": archive_url,
        "archive_interval": 0.1,
        "archive_lease": 0.6,
    }
    first = Store.open(tmp_path / "one", **options)
    paused, resume = threading.Event(), threading.Event()
    shipper = first._shipper
    assert shipper is not None
    original = StoreShipper._ship_due

    def ship_due(self: StoreShipper, **kwargs: Any) -> list[str]:
        if paused.is_set():
            resume.wait(TIMEOUT)  # a process stopped (SIGSTOP, a long pause) mid-round
        return original(self, **kwargs)

    ks = first.keyspace("k")
    ks.put("a", 1)
    wait_for(lambda: first.archive_status()["keyspaces/k"].shipped_seq == 1)
    shipper._ship_due = ship_due.__get__(shipper)  # type: ignore[method-assign]
    paused.set()
    time.sleep(0.2)  # the thread is now inside a paused round
    wait_for(lambda: lease_of(archive_url).expires_at < time.time())
    # The lease expired while the first writer was paused: another store takes over.
    takeover = Store.open(tmp_path / "three", **{**options, "archive_lease": 30.0})
    try:
        assert lease_of(archive_url).token == 2
        ks.put("b", 2)  # the paused writer's write: durable locally, never shipped
        paused.clear()
        resume.set()
        wait_for(lambda: shipper.fenced is not None)
        status = first.archive_status()["keyspaces/k"]
        assert "leased to writer" in (status.last_error or "")
        assert status.shipped_seq == 1
        uploads = read_uploads(open_archive(archive_url), "keyspaces/k/")
        assert all(upload.last_seq <= 1 for upload in uploads if upload.token == 1)
    finally:
        first.close()  # fenced: ships nothing at close either
        takeover.close()
    uploads = read_uploads(open_archive(archive_url), "keyspaces/k/")
    assert all(upload.last_seq <= 1 for upload in uploads if upload.token == 1)


def test_a_view_of_the_lease_uploads_only_while_its_holder_holds_it(tmp_path: Path) -> None:
    archive = open_archive(f"file://{tmp_path / 'archive'}")
    now = [1000.0]
    holder = Lease(archive, 9.0, clock=lambda: now[0])
    token = holder.acquire()
    view = LeaseView(archive, 9.0, holder.holder, token, clock=lambda: now[0])
    view.ensure()  # held, with the whole lease left
    now[0] += 7.0  # the holder is late: 2 s left, under a third
    view._good_until = 0.0  # the view reads LEASE again now
    with pytest.raises(ArchiveError, match="left: not uploading"):
        view.ensure()
    now[0] += 3.0  # expired: another writer takes over
    other = Lease(archive, 9.0, clock=lambda: now[0])
    assert other.acquire() == token + 1
    with pytest.raises(ArchiveLeased, match="not to this store's"):
        view.ensure()
