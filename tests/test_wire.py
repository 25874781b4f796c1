"""common.wire: job and status frames round-trip, encode to fixed bytes, and reject anything else with WireError."""

from __future__ import annotations

import msgpack
import pytest

from common.wire import (
    KIND_JOB,
    KIND_STATUS,
    VERSION,
    Group,
    Job,
    JobState,
    RowError,
    Status,
    WireError,
    decode_job,
    decode_statuses,
    encode_job,
    encode_statuses,
)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_job_round_trip_with_several_groups_and_every_value_kind() -> None:
    job = Job(
        job_id="0f8e2b1c-job",
        table="public.rides",
        accepted_at=1_712_345_678.123456,
        groups=(
            Group(("id", "note", "ok", "ratio"), [
                [1, "plain", True, 0.5],
                [-(2**63), None, False, -1e308],
                [2**64 - 1, "ünïcødé ✓ 漢字 🚕", None, 5e-324],
            ]),
            Group(("id",), [[0], [2**31]]),
            Group(("id", "payload"), [[7, '{"nested": [1, 2, {"k": null}]}'], [8, ""]]),
            Group(("id", "empty"), []),
        ),
        idempotency_key="client-retry-7",
    )
    frame = encode_job(job)
    back = decode_job(frame)
    assert back == job
    assert back.row_count == 7
    assert [type(v) for v in back.groups[0].rows[0]] == [int, str, bool, float]
    assert back.groups[0].rows[1][1] is None
    assert back.groups[0].rows[1][2] is False


def test_statuses_round_trip() -> None:
    statuses = [
        Status("a", JobState.COMMITTED, 5000, 1_712_345_679.5),
        Status("b", JobState.FAILED, 3, 1_712_345_680.25, "23505: duplicate key value violates unique constraint"),
        Status("c-ünï", JobState.COMMITTED, 0, None, None),
    ]
    back = decode_statuses(encode_statuses(statuses))
    assert back == statuses
    assert back[1].state is JobState.FAILED
    assert decode_statuses(encode_statuses([])) == []


def test_job_state_final() -> None:
    assert not JobState.ACCEPTED.final
    assert JobState.COMMITTED.final and JobState.FAILED.final


# Golden bytes. These frames are what gateways and sinks of this protocol version
# put on the wire; processes of different builds must keep understanding each
# other. If this test fails, the wire format changed: that is a protocol change,
# and it needs VERSION bumped in common/wire.py (and a decoder that still reads
# the old version while mixed deployments exist), not just new hex pasted here.
GOLDEN_JOB = Job(
    "j-0001", "rides", 1700000000.5,
    (
        Group(("id", "name", "ok"), [[1, "a", True], [-2, None, False]]),
        Group(("id", "x"), [[3, 2.5]]),
    ),
    "key-1",
)
GOLDEN_JOB_HEX = (
    "9701a14aa66a2d30303031a57269646573cb41d954fc40200000"  # [1, "J", "j-0001", "rides", 1700000000.5,
    "a56b65792d31"                                          #  "key-1",
    "92"                                                    #  [
    "9293a26964a46e616d65a26f6b929301a161c393fec0c2"        #   [["id","name","ok"], [[1,"a",true],[-2,nil,false]]],
    "9292a26964a178919203cb4004000000000000"                #   [["id","x"], [[3, 2.5]]]]]
)
GOLDEN_STATUSES = [
    Status("j-0001", JobState.COMMITTED, 3, 1700000001.25, None, 3, 0),
    Status("j-0002", JobState.PARTIAL, 2, 1700000002.0, "23505: dup", 1, 1, (RowError(1, None, "23505", "dup"),)),
]
GOLDEN_STATUSES_HEX = (
    "9301a15392"                                                  # [1, "S", [
    "98a66a2d30303031a9636f6d6d697474656403cb41d954fc40500000c0"  #   ["j-0001","committed",3,1700000001.25,nil,
    "030090"                                                      #    3, 0, []],
    "98a66a2d30303032a77061727469616c02cb41d954fc40800000"        #   ["j-0002","partial",2,1700000002.0,
    "aa32333530353a20647570"                                      #    "23505: dup",
    "0101919401c0a53233353035a3647570"                            #    1, 1, [[1, nil, "23505", "dup"]]]]]
)


def test_groups_with_positions_round_trip() -> None:
    job = Job("j", "t", 1.0, (Group(("a",), [[1], [3]], positions=[0, 2]), Group(("b",), [[2]], positions=[1])))
    assert decode_job(encode_job(job)) == job
    bad = pack([1, KIND_JOB, "j", "t", 1.0, None, [[["a"], [[1], [2]], [0]]]])
    with pytest.raises(WireError):
        decode_job(bad)  # one position per row


def test_golden_job_bytes() -> None:
    assert VERSION == 1
    assert encode_job(GOLDEN_JOB).hex() == GOLDEN_JOB_HEX
    assert decode_job(bytes.fromhex(GOLDEN_JOB_HEX)) == GOLDEN_JOB


def test_golden_status_bytes() -> None:
    assert encode_statuses(GOLDEN_STATUSES).hex() == GOLDEN_STATUSES_HEX
    assert decode_statuses(bytes.fromhex(GOLDEN_STATUSES_HEX)) == GOLDEN_STATUSES


GOOD_GROUPS = [[["id", "x"], [[1, 2]]]]

BAD_MSGPACK = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "truncated array": bytes.fromhex(GOLDEN_JOB_HEX)[:-3],
    "trailing bytes": bytes.fromhex(GOLDEN_JOB_HEX) + b"\x00",
    "invalid utf-8": b"\x92\x01\xa1\xff",
    "map with int keys": pack({1: 2}),
}


@pytest.mark.parametrize("frame", BAD_MSGPACK.values(), ids=BAD_MSGPACK.keys())
def test_garbage_raises_wire_error_from_msgpack(frame: bytes) -> None:
    for decode in (decode_job, decode_statuses):
        with pytest.raises(WireError, match="not valid msgpack") as info:
            decode(frame)
        assert info.value.__cause__ is not None
        assert isinstance(info.value.__cause__, Exception)


BAD_JOBS = {
    "not an array": pack({"v": 1}),
    "scalar": pack(1),
    "too short": pack([1]),
    "wrong version": pack([2, KIND_JOB, "j", "t", 1.0, GOOD_GROUPS]),
    "version 0": pack([0, KIND_JOB, "j", "t", 1.0, GOOD_GROUPS]),
    "version as string": pack(["1", KIND_JOB, "j", "t", 1.0, GOOD_GROUPS]),
    "status kind": pack([1, KIND_STATUS, []]),
    "unknown kind": pack([1, "X", "j", "t", 1.0, None, GOOD_GROUPS]),
    "missing groups": pack([1, KIND_JOB, "j", "t", 1.0, None]),
    "idempotency key not a string": pack([1, KIND_JOB, "j", "t", 1.0, 42, GOOD_GROUPS]),
    "extra element": pack([1, KIND_JOB, "j", "t", 1.0, None, GOOD_GROUPS, "more"]),
    "row too short": pack([1, KIND_JOB, "j", "t", 1.0, None, [[["id", "x"], [[1, 2], [3]]]]]),
    "row too long": pack([1, KIND_JOB, "j", "t", 1.0, None, [[["id", "x"], [[1, 2, 3]]]]]),
    "row not an array": pack([1, KIND_JOB, "j", "t", 1.0, None, [[["id", "x"], [{"id": 1, "x": 2}]]]]),
    "rows not an array": pack([1, KIND_JOB, "j", "t", 1.0, None, [[["id"], "rows"]]]),
    "groups not an array": pack([1, KIND_JOB, "j", "t", 1.0, None, 5]),
    "groups a map": pack([1, KIND_JOB, "j", "t", 1.0, None, {"id": [[1]]}]),
    "group not a pair": pack([1, KIND_JOB, "j", "t", 1.0, None, [[["id"], [[1]], "x"]]]),
    "group a scalar": pack([1, KIND_JOB, "j", "t", 1.0, None, [7]]),
    "columns a string": pack([1, KIND_JOB, "j", "t", 1.0, None, [["ab", [[1, 2]]]]]),
    "columns not strings": pack([1, KIND_JOB, "j", "t", 1.0, None, [[[1, 2], [[1, 2]]]]]),
    "columns a scalar": pack([1, KIND_JOB, "j", "t", 1.0, None, [[3, []]]]),
    "job id not a string": pack([1, KIND_JOB, 17, "t", 1.0, None, GOOD_GROUPS]),
    "table not a string": pack([1, KIND_JOB, "j", None, 1.0, None, GOOD_GROUPS]),
    "accepted_at nil": pack([1, KIND_JOB, "j", "t", None, None, GOOD_GROUPS]),
    "accepted_at text": pack([1, KIND_JOB, "j", "t", "yesterday", None, GOOD_GROUPS]),
}


@pytest.mark.parametrize("frame", BAD_JOBS.values(), ids=BAD_JOBS.keys())
def test_bad_job_frames_raise_wire_error(frame: bytes) -> None:
    with pytest.raises(WireError):
        decode_job(frame)


BAD_STATUSES = {
    "not an array": pack("S"),
    "wrong version": pack([2, KIND_STATUS, []]),
    "job kind": bytes.fromhex(GOLDEN_JOB_HEX),
    "missing items": pack([1, KIND_STATUS]),
    "items not an array": pack([1, KIND_STATUS, 3]),
    "item not an array": pack([1, KIND_STATUS, [5]]),
    "item too short": pack([1, KIND_STATUS, [["j", "committed", 1, 2.0]]]),
    "item too long": pack([1, KIND_STATUS, [["j", "committed", 1, 2.0, None, 1, 0, [], "x"]]]),
    "unknown state": pack([1, KIND_STATUS, [["j", "lost", 1, 2.0, None, 1, 0, []]]]),
    "rows not a number": pack([1, KIND_STATUS, [["j", "committed", "many", 2.0, None, 1, 0, []]]]),
    "row error too short": pack([1, KIND_STATUS, [["j", "partial", 2, 2.0, None, 1, 1, [[0, None, "23505"]]]]]),
    "errors not a list": pack([1, KIND_STATUS, [["j", "partial", 2, 2.0, None, 1, 1, 5]]]),
}


@pytest.mark.parametrize("frame", BAD_STATUSES.values(), ids=BAD_STATUSES.keys())
def test_bad_status_frames_raise_wire_error(frame: bytes) -> None:
    with pytest.raises(WireError):
        decode_statuses(frame)


def test_wire_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(WireError, match="version 2"):
        decode_job(pack([2, KIND_JOB, "j", "t", 1.0, GOOD_GROUPS]))
    with pytest.raises(WireError, match="expected a 'J' frame, got 'S'"):
        decode_job(encode_statuses([]))
    with pytest.raises(WireError, match="as wide as") as info:
        decode_job(pack([1, KIND_JOB, "j", "t", 1.0, None, [[["id", "x"], [[1]]]]]))
    assert isinstance(info.value.__cause__, TypeError)
    assert isinstance(WireError("x"), ValueError)
