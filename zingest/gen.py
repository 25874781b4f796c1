"""`zingest gen`: write generated rows as NDJSON, for demos, tests and benchmarks.

``zingest gen rides --rows N [--seed S] [--start-id K] [--output FILE]`` writes
N ride-booking rows shaped like ``schema/rides.sql`` (modelled on the YourCabs
Bangalore cab-booking dataset), one JSON object per line, to stdout or FILE.

The same seed gives byte-identical output: every draw goes through
``Random.random()``, the one method whose sequence Python promises to keep for a
given seed across versions (``randint``, ``choices`` and friends may change).

A dataset is a generator ``(n, seed, start_id) -> Iterator[dict]`` registered
in :data:`DATASETS`; the CLI offers whatever is registered there.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import itertools
import math
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, Generic, TypeVar

import orjson

Row = dict[str, Any]
Dataset = Callable[[int, int, int], Iterator[Row]]

DEFAULT_SEED = 1
DEFAULT_START_ID = 1
# Rows serialised per write: large enough that the write calls cost nothing,
# small enough that memory stays flat for any --rows.
WRITE_CHUNK_ROWS = 10_000

# Column order of public.rides (schema/rides.sql); each row dict uses this order.
COLUMNS: tuple[str, ...] = (
    "id",
    "user_id",
    "vehicle_model_id",
    "package_id",
    "travel_type_id",
    "from_area_id",
    "to_area_id",
    "from_city_id",
    "to_city_id",
    "from_date",
    "to_date",
    "online_booking",
    "mobile_site_booking",
    "booking_created",
    "from_lat",
    "from_long",
    "to_lat",
    "to_long",
    "car_cancellation",
)

LONG_DISTANCE, POINT_TO_POINT, HOURLY_RENTAL = 1, 2, 3

T = TypeVar("T")


class _Weighted(Generic[T]):
    """A fixed discrete distribution, sampled with one ``rng.random()`` draw."""

    def __init__(self, weights: Sequence[tuple[T, float]]) -> None:
        self._values = tuple(value for value, _ in weights)
        self._cumulative = tuple(itertools.accumulate(weight for _, weight in weights))

    def pick(self, rng: random.Random) -> T:
        return self._values[bisect.bisect(self._cumulative, rng.random() * self._cumulative[-1])]


IST = timezone(timedelta(hours=5, minutes=30))

# Most bookings are made and served in Bangalore; a few timestamps arrive in
# other offsets (a booker abroad, an upstream system logging in UTC), so the
# ingest path has to keep instants right across time zones.
_OFFSETS = _Weighted(
    [
        (IST, 0.90),
        (timezone.utc, 0.04),
        (timezone(timedelta(hours=-4)), 0.02),
        (timezone(timedelta(hours=9)), 0.02),
        (timezone(timedelta(hours=1)), 0.01),
        (timezone(timedelta(hours=-7)), 0.01),
    ]
)
_TRAVEL_TYPES = _Weighted([(POINT_TO_POINT, 0.79), (HOURLY_RENTAL, 0.17), (LONG_DISTANCE, 0.04)])
_VEHICLE_MODELS = _Weighted(
    [(12, 0.73), (85, 0.06), (89, 0.06), (65, 0.05), (28, 0.03), (24, 0.03), (87, 0.02), (90, 0.01), (23, 0.01)]
)
# Rental packages and the hours each one books the car for.
_PACKAGE_HOURS = {1: 4, 2: 8, 3: 6, 4: 10, 5: 5, 6: 2, 7: 12}
_PACKAGES = _Weighted([(1, 0.40), (2, 0.35), (6, 0.10), (3, 0.06), (4, 0.05), (5, 0.03), (7, 0.01)])
BANGALORE_CITY_ID = 15
# Destinations of long-distance trips (Mysore, Chennai, Coorg, Ooty, ...).
_DESTINATION_CITIES = _Weighted([(32, 0.30), (108, 0.20), (54, 0.15), (142, 0.12), (29, 0.10), (66, 0.08), (1, 0.05)])

USER_POOL = 50_000
AREA_COUNT = 1_400
# Share of areas with no known coordinates (their lat/long are null).
UNMAPPED_AREA_SHARE = 0.03
LAT_RANGE = (12.80, 13.10)
LONG_RANGE = (77.50, 77.75)

# Bookings are created during 2013 (the dataset's year), in whole seconds.
_WINDOW_START = int(datetime(2013, 1, 1, tzinfo=IST).timestamp())
_WINDOW_S = 334 * 86_400
MIN_LEAD_S = 15 * 60
MEAN_LEAD_S = 18 * 3_600
MAX_LEAD_S = 90 * 86_400
# Pick-up and return times fall on five-minute marks.
SLOT_S = 5 * 60


def _below(rng: random.Random, n: int) -> int:
    """A uniform integer in [0, n)."""
    return int(rng.random() * n)


def _exponential(rng: random.Random, mean: float) -> float:
    return -math.log(1.0 - rng.random()) * mean


def _next_slot(ts: int) -> int:
    return -(-ts // SLOT_S) * SLOT_S


def _user(rng: random.Random) -> int:
    # Squaring skews the draw toward low ids: a few regulars book often.
    return 1 + int(USER_POOL * rng.random() ** 2)


def _area(rng: random.Random) -> int:
    return 1 + int(AREA_COUNT * rng.random() ** 1.5)


@functools.cache
def _area_location(area_id: int) -> tuple[float, float] | None:
    """The fixed (lat, long) of an area, or None for an unmapped one; depends on ``area_id`` only."""
    own = random.Random(area_id)
    if own.random() < UNMAPPED_AREA_SHARE:
        return None
    lat = LAT_RANGE[0] + own.random() * (LAT_RANGE[1] - LAT_RANGE[0])
    long = LONG_RANGE[0] + own.random() * (LONG_RANGE[1] - LONG_RANGE[0])
    return round(lat, 6), round(long, 6)


def _location(area_id: int | None) -> tuple[float | None, float | None]:
    found = None if area_id is None else _area_location(area_id)
    return (None, None) if found is None else found


def _iso(ts: int, tz: timezone) -> str:
    return datetime.fromtimestamp(ts, tz).isoformat()


def ride(rng: random.Random, row_id: int) -> Row:
    """One ride booking with id ``row_id``, drawn from ``rng``; keys in :data:`COLUMNS` order."""
    travel_type = _TRAVEL_TYPES.pick(rng)
    package_id = to_area_id = to_city_id = None
    if travel_type == POINT_TO_POINT:
        to_area_id = _area(rng)
    elif travel_type == HOURLY_RENTAL:
        package_id = _PACKAGES.pick(rng)
    else:
        to_city_id = _DESTINATION_CITIES.pick(rng)
    # About 1% of bookings were taken without a pick-up area.
    from_area_id = _area(rng) if rng.random() >= 0.01 else None
    city_draw = rng.random()
    from_city_id = BANGALORE_CITY_ID if city_draw < 0.60 else (None if city_draw < 0.98 else 1 + _below(rng, 150))

    created = _WINDOW_START + _below(rng, _WINDOW_S)
    lead = min(MIN_LEAD_S + int(_exponential(rng, MEAN_LEAD_S)), MAX_LEAD_S)
    start = _next_slot(created + lead)
    end = None
    return_draw = rng.random()
    if travel_type == LONG_DISTANCE and return_draw < 0.80:
        end = start + 86_400 * (1 + _below(rng, 4)) + SLOT_S * _below(rng, 144)
    elif travel_type == HOURLY_RENTAL and return_draw < 0.20:
        end = start + 3_600 * _PACKAGE_HOURS[package_id]  # type: ignore[index]
    elif travel_type == POINT_TO_POINT and return_draw < 0.05:
        end = start + SLOT_S * (6 + _below(rng, 36))

    channel = rng.random()
    online = channel < 0.35
    mobile_site = 0.35 <= channel < 0.39  # the rest came through the call centre
    cancelled = rng.random() < (0.09 if online else 0.06)
    booking_tz = _OFFSETS.pick(rng)
    trip_tz = _OFFSETS.pick(rng)
    from_lat, from_long = _location(from_area_id)
    to_lat, to_long = _location(to_area_id)
    return {
        "id": row_id,
        "user_id": _user(rng),
        "vehicle_model_id": _VEHICLE_MODELS.pick(rng),
        "package_id": package_id,
        "travel_type_id": travel_type,
        "from_area_id": from_area_id,
        "to_area_id": to_area_id,
        "from_city_id": from_city_id,
        "to_city_id": to_city_id,
        "from_date": _iso(start, trip_tz),
        "to_date": None if end is None else _iso(end, trip_tz),
        "online_booking": online,
        "mobile_site_booking": mobile_site,
        "booking_created": _iso(created, booking_tz),
        "from_lat": from_lat,
        "from_long": from_long,
        "to_lat": to_lat,
        "to_long": to_long,
        "car_cancellation": cancelled,
    }


def rides(n: int, seed: int = DEFAULT_SEED, start_id: int = DEFAULT_START_ID) -> Iterator[Row]:
    """``n`` ride bookings with ids ``start_id, start_id + 1, ...``, the same for the same seed."""
    rng = random.Random(seed)
    for row_id in range(start_id, start_id + n):
        yield ride(rng, row_id)


DATASETS: dict[str, Dataset] = {"rides": rides}


def write_ndjson(rows: Iterable[Row], out: BinaryIO, chunk_rows: int = WRITE_CHUNK_ROWS) -> int:
    """Write ``rows`` to ``out`` as NDJSON, ``chunk_rows`` lines per write; return the row count."""
    dumps, option = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    written = 0
    it = iter(rows)
    while chunk := [dumps(row, option=option) for row in itertools.islice(it, chunk_rows)]:
        out.write(b"".join(chunk))
        written += len(chunk)
    return written


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zingest gen", description="Write generated rows as NDJSON.")
    parser.add_argument("dataset", choices=sorted(DATASETS), help="what to generate")
    parser.add_argument("--rows", type=_count, required=True, metavar="N", help="number of rows")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument(
        "--start-id", type=int, default=DEFAULT_START_ID, metavar="K", help=f"first id (default {DEFAULT_START_ID})"
    )
    parser.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rows = DATASETS[args.dataset](args.rows, args.seed, args.start_id)
    if args.output is not None:
        try:
            with open(args.output, "wb") as out:
                write_ndjson(rows, out)
        except OSError as exc:
            print(f"zingest gen: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        return 0
    try:
        write_ndjson(rows, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # The reader left (`| head`): not an error. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
