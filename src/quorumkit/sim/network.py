"""Network settings of the simulator, changeable at any time (``sim.network.loss_rate = 0.1``).

Every message drawn through the simulator's network stream is, in order:
dropped by the sender's omission rate; dropped when no path exists (a partition, a disconnect,
crashed relays); dropped with ``loss_rate``; delayed by ``uniform(delay_min, delay_max)`` per
hop of the shortest path; with probability ``reorder`` held back a further
``uniform(reorder_delay_min, reorder_delay_max)`` (otherwise links are FIFO, like TCP);
duplicated with ``duplicate_rate`` (the copy gets its own delay); dropped at arrival by the
receiver's omission rate, when the receiver is down, or when the path was cut meanwhile.
"""

from __future__ import annotations

from typing import Any

from quorumkit.errors import ConfigError

_RATES = ("loss_rate", "duplicate_rate", "reorder")
_DELAYS = ("delay_min", "delay_max", "reorder_delay_min", "reorder_delay_max")


class Network:
    """Per-simulation network model; attribute writes are validated."""

    __slots__ = (
        "delay_max",
        "delay_min",
        "duplicate_rate",
        "loss_rate",
        "reorder",
        "reorder_delay_max",
        "reorder_delay_min",
    )

    def __init__(
        self,
        *,
        delay_min: float = 0.001,
        delay_max: float = 0.005,
        loss_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        reorder: float = 0.0,
        reorder_delay_min: float = 0.2,
        reorder_delay_max: float = 2.2,
    ) -> None:
        for lo, hi, name in (
            (delay_min, delay_max, "delay"),
            (reorder_delay_min, reorder_delay_max, "reorder_delay"),
        ):
            if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi < lo:
                raise ConfigError(f"{name}_max = {hi} is below {name}_min = {lo}")
        object.__setattr__(self, "delay_min", 0.0)
        object.__setattr__(self, "delay_max", 0.0)
        object.__setattr__(self, "reorder_delay_min", 0.0)
        object.__setattr__(self, "reorder_delay_max", 0.0)
        self.delay_max = delay_max
        self.delay_min = delay_min
        self.loss_rate = loss_rate
        self.duplicate_rate = duplicate_rate
        self.reorder = reorder
        self.reorder_delay_max = reorder_delay_max
        self.reorder_delay_min = reorder_delay_min

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self.__slots__:
            raise ConfigError(
                f"unknown network setting {name!r} (settings: {', '.join(sorted(self.__slots__))})"
            )
        if isinstance(value, bool) and name == "reorder":
            value = 1.0 if value else 0.0
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"network.{name} must be a number, got {value!r}")
        value = float(value)
        if value != value:  # NaN
            raise ConfigError(f"network.{name} must be a number, got NaN")
        if name in _RATES and not 0.0 <= value <= 1.0:
            raise ConfigError(f"network.{name} must be a rate in [0, 1], got {value}")
        if name in _DELAYS:
            if value < 0.0 or value == float("inf"):
                raise ConfigError(
                    f"network.{name} must be a finite delay >= 0 seconds, got {value}"
                )
            if name.endswith("_min") and value > getattr(self, name[:-4] + "_max"):
                # raising the minimum above the maximum moves the maximum with it
                object.__setattr__(self, name[:-4] + "_max", value)
            if name.endswith("_max") and value < getattr(self, name[:-4] + "_min"):
                raise ConfigError(
                    f"network.{name} = {value} is below {name[:-4]}_min = "
                    f"{getattr(self, name[:-4] + '_min')}"
                )
        object.__setattr__(self, name, value)

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in sorted(self.__slots__)}
