"""Recent points per device and metric, in memory, for rule evaluation.

Rules read these instead of querying the store per device per rule: even at 1.5 ms a query,
10,000 devices and 20 rules would take five minutes a round. Only metrics that rules use are kept,
each for the longest window a rule needs (at most `rules.max_window`); compact arrays cost 16 bytes
a point, and a series whose points all aged out is dropped.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping

_Series = tuple["array[int]", "array[float]"]  # quoted: array is generic only from 3.12


class SeriesWindows:
    def __init__(self, horizons: Mapping[str, float] | None = None) -> None:
        self._horizons_ms: dict[str, int] = {}
        self._series: dict[tuple[str, str], _Series] = {}
        self.set_horizons(horizons or {})

    def set_horizons(self, horizons: Mapping[str, float]) -> None:
        """Keep `metric -> seconds` of history; metrics no longer needed are dropped."""
        self._horizons_ms = {m: int(s * 1000) for m, s in horizons.items()}
        for key in [k for k in self._series if k[1] not in self._horizons_ms]:
            del self._series[key]

    @property
    def horizons(self) -> dict[str, float]:
        return {m: ms / 1000 for m, ms in self._horizons_ms.items()}

    def wants(self, metric: str) -> bool:
        return metric in self._horizons_ms

    def add(self, device: str, metric: str, ts_ms: int, value: float) -> None:
        if metric not in self._horizons_ms:
            return
        key = (device, metric)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (array("q"), array("d"))
        times, values = series
        if not times or ts_ms > times[-1]:
            times.append(ts_ms)
            values.append(value)
            return
        index = bisect_left(times, ts_ms)
        if index < len(times) and times[index] == ts_ms:
            values[index] = value  # a redelivered or corrected point replaces the old one
            return
        insort(times, ts_ms)
        values.insert(index, value)

    def add_many(self, points: Iterable[tuple[str, str, int, float]]) -> None:
        for device, metric, ts_ms, value in points:
            self.add(device, metric, ts_ms, value)

    def window(
        self, device: str, metric: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, float]]:
        """Points with start_ms < ts <= end_ms, oldest first."""
        series = self._series.get((device, metric))
        if series is None:
            return []
        times, values = series
        lo = bisect_right(times, start_ms)
        hi = bisect_right(times, end_ms)
        return list(zip(times[lo:hi], values[lo:hi], strict=True))

    def arrays(
        self, device: str, metric: str, start_ms: int, end_ms: int
    ) -> tuple[array[int], array[float]]:
        """Times and values with start_ms < ts <= end_ms, as array slices (no tuple per point:
        the learned models read thousands of devices' windows a round)."""
        series = self._series.get((device, metric))
        if series is None:
            return array("q"), array("d")
        times, values = series
        lo = bisect_right(times, start_ms)
        hi = bisect_right(times, end_ms)
        return times[lo:hi], values[lo:hi]

    def last(self, device: str, metric: str, at_ms: int) -> tuple[int, float] | None:
        series = self._series.get((device, metric))
        if series is None:
            return None
        times, values = series
        index = bisect_right(times, at_ms) - 1
        return None if index < 0 else (times[index], values[index])

    def trim(self, now_ms: int) -> int:
        """Forget points older than each metric's horizon; return how many were dropped.

        A series left empty is dropped too: a device that stopped sending a metric (or went
        away) costs nothing once its points have aged out.
        """
        dropped = 0
        empty = []
        for key, (times, values) in self._series.items():
            cut = bisect_left(times, now_ms - self._horizons_ms.get(key[1], 0))
            if cut:
                del times[:cut]
                del values[:cut]
                dropped += cut
            if not times:
                empty.append(key)
        for key in empty:
            del self._series[key]
        return dropped

    @property
    def series_count(self) -> int:
        """How many (device, metric) series are held."""
        return len(self._series)

    def __len__(self) -> int:
        return sum(len(times) for times, _ in self._series.values())
