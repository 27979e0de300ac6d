"""Drive a :class:`~quorumkit.sim.Simulation` in real time from a background thread.

The seed-compatible facade uses it: the specification's demos call ``start()``, then
``time.sleep(2)``, then read the state. Virtual time follows the wall clock (times ``speed``);
every access to the simulation from other threads goes through :attr:`RealtimeDriver.lock`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from quorumkit.sim.core import Simulation

T = TypeVar("T")


class RealtimeDriver:
    """Advance ``sim`` so that its virtual time tracks the wall clock."""

    def __init__(self, sim: Simulation, *, speed: float = 1.0, tick_s: float = 0.002) -> None:
        self.sim = sim
        self.speed = speed
        self.tick_s = tick_s
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="quorumkit-sim", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        wall0 = time.monotonic()
        virt0 = self.sim.now
        while not self._stop.is_set():
            target = virt0 + (time.monotonic() - wall0) * self.speed
            try:
                with self.lock:
                    self.sim.run_to(target)
            except BaseException as exc:  # surfaced to the caller by call()/stop()
                self.error = exc
                return
            self._stop.wait(self.tick_s)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` with the simulation locked."""
        with self.lock:
            return fn(*args)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None
