"""Child processes of the kill -9 tests: started with this checkout on their path, watched.

A watchdog kills a child that outlives ``TIMEOUT`` (a hung child fails its test, never hangs
it); :func:`reap` stops the watchdog and kills and reaps a child still running.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from tests.reliability.conftest import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]


def start_child(
    command: list[str], stderr_path: Path
) -> tuple[subprocess.Popen[str], threading.Timer]:
    """Run ``command`` (``[sys.executable, script, ...]``); stdout is a text pipe, stderr a file."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=ROOT
        )
    watchdog = threading.Timer(TIMEOUT, child.kill)
    watchdog.start()
    return child, watchdog


def reap(child: subprocess.Popen[str], watchdog: threading.Timer) -> None:
    """Stop watching ``child``; kill and reap it if it is still running."""
    watchdog.cancel()
    if child.poll() is None:
        child.kill()
        child.wait()
