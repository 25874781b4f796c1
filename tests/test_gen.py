"""Unit tests for `zingest gen`: determinism, shape, realism of the rides dataset."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from zingest import gen
from zingest.gen import COLUMNS, ride, rides

SAMPLE = 20_000

NOT_NULL_INT = ("id", "user_id", "vehicle_model_id", "travel_type_id")
NULLABLE_INT = ("package_id", "from_area_id", "to_area_id", "from_city_id", "to_city_id")
BOOLEANS = ("online_booking", "mobile_site_booking", "car_cancellation")
COORDINATES = ("from_lat", "from_long", "to_lat", "to_long")


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    return list(rides(SAMPLE, seed=7))


def test_columns_match_the_table() -> None:
    ddl = (Path(__file__).parent.parent / "schema" / "rides.sql").read_text()
    body = ddl[ddl.index("public.rides (") : ddl.rindex(")")].splitlines()[1:]
    declared = tuple(line.split()[0] for line in body if line.strip())
    assert declared == COLUMNS
    assert len(COLUMNS) == 19


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    assert list(rides(500, seed=3)) == list(rides(500, seed=3))
    assert list(rides(500, seed=3)) != list(rides(500, seed=4))


def test_ride_depends_only_on_the_rng_state() -> None:
    assert ride(random.Random(11), 5) == ride(random.Random(11), 5)


def test_main_output_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.ndjson", tmp_path / "b.ndjson", tmp_path / "c.ndjson"
    assert gen.main(["rides", "--rows", "2500", "--seed", "9", "--output", str(first)]) == 0
    assert gen.main(["rides", "--rows", "2500", "--seed", "9", "--output", str(second)]) == 0
    assert gen.main(["rides", "--rows", "2500", "--seed", "10", "--output", str(other)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    lines = first.read_bytes().splitlines()
    assert len(lines) == 2500
    assert [orjson.loads(line) for line in lines] == list(rides(2500, seed=9))


def test_main_writes_to_stdout_with_default_seed(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert gen.main(["rides", "--rows", "3", "--start-id", "100"]) == 0
    out = capsysbinary.readouterr().out
    assert out.endswith(b"\n")
    assert [orjson.loads(line) for line in out.splitlines()] == list(rides(3, seed=1, start_id=100))


def test_unknown_dataset_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        gen.main(["trips", "--rows", "3"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_negative_rows_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        gen.main(["rides", "--rows", "-1"])
    assert exc.value.code == 2


def test_zero_rows_writes_nothing(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert gen.main(["rides", "--rows", "0"]) == 0
    assert capsysbinary.readouterr().out == b""


def test_ids_are_sequential_from_start_id() -> None:
    assert [row["id"] for row in rides(5, seed=1, start_id=41)] == [41, 42, 43, 44, 45]


def test_keys_and_types(sample: list[dict]) -> None:
    for row in sample:
        assert tuple(row) == COLUMNS
        for name in NOT_NULL_INT:
            assert type(row[name]) is int, name
        for name in NULLABLE_INT:
            assert row[name] is None or type(row[name]) is int, name
        for name in BOOLEANS:
            assert type(row[name]) is bool, name
        for name in COORDINATES:
            assert row[name] is None or type(row[name]) is float, name
        assert isinstance(row["from_date"], str) and isinstance(row["booking_created"], str)
        assert row["to_date"] is None or isinstance(row["to_date"], str)


def test_every_nullable_column_has_nulls_and_values(sample: list[dict]) -> None:
    for name in (*NULLABLE_INT, "to_date", *COORDINATES):
        nulls = sum(row[name] is None for row in sample)
        assert 0 < nulls < len(sample), name


def test_timestamps_parse_with_offsets_and_keep_order(sample: list[dict]) -> None:
    offsets: Counter[str] = Counter()
    for row in sample:
        created = datetime.fromisoformat(row["booking_created"])
        start = datetime.fromisoformat(row["from_date"])
        assert created.tzinfo is not None and start.tzinfo is not None
        assert start > created
        if row["to_date"] is not None:
            assert datetime.fromisoformat(row["to_date"]) > start
        offsets.update(value[-6:] for value in (row["booking_created"], row["from_date"]))
    assert offsets.most_common(1)[0][0] == "+05:30"
    assert offsets["+05:30"] > 0.8 * sum(offsets.values())
    assert {"+00:00", "-04:00", "+09:00"} <= set(offsets)


def test_travel_types_decide_package_destination_and_return(sample: list[dict]) -> None:
    by_type = Counter(row["travel_type_id"] for row in sample)
    assert set(by_type) == {1, 2, 3}
    assert by_type[2] > by_type[3] > by_type[1]
    for row in sample:
        hourly = row["travel_type_id"] == 3
        assert (row["package_id"] is not None) == hourly
        if hourly:
            assert row["to_area_id"] is None
        if row["travel_type_id"] == 1:
            assert row["to_city_id"] is not None
        else:
            assert row["to_city_id"] is None
    assert sum(row["to_date"] is None for row in sample) > len(sample) / 2


def test_coordinates_are_in_bangalore_with_six_decimals(sample: list[dict]) -> None:
    for row in sample:
        for lat, long in ((row["from_lat"], row["from_long"]), (row["to_lat"], row["to_long"])):
            assert (lat is None) == (long is None)
            if lat is None:
                continue
            assert 12.8 <= lat <= 13.1 and 77.5 <= long <= 77.75
            assert round(lat, 6) == lat and round(long, 6) == long


def test_booleans_have_realistic_rates(sample: list[dict]) -> None:
    cancelled = sum(row["car_cancellation"] for row in sample) / len(sample)
    assert 0.05 < cancelled < 0.09
    assert not any(row["online_booking"] and row["mobile_site_booking"] for row in sample)
    assert any(row["online_booking"] for row in sample) and any(row["mobile_site_booking"] for row in sample)


def test_users_repeat(sample: list[dict]) -> None:
    users = Counter(row["user_id"] for row in sample)
    assert len(users) < len(sample)
    assert all(1 <= user <= gen.USER_POOL for user in users)


def test_datasets_registry_names_the_generator() -> None:
    assert gen.DATASETS["rides"] is rides
