"""Reading a shadow release's paired records while traffic flows, from two nodes that capture into one
store (a real SeaweedFS): what a node still holds is read here, what capture shipped (and removed here)
from the store, every record once, however often the window is read."""

from __future__ import annotations

import gzip
import time

import orjson

from serving.log.reader import GrowingWindow, log_files
from serving.log.records import ShadowLine
from tests.conftest import capturing_replica, ship_the_rest

PAIRED = frozenset({"shadow", "feedback"})


def paired(n: int, node: str) -> ShadowLine:
    return ShadowLine(
        type="shadow",
        time=time.time(),
        model="clothes",
        version=1,
        shadow_version=2,
        ids=[f"{node}-{n}"],
        class_id=[n % 10],
        confidence=[0.9],
        seconds=0.001,
        shadow_status=200,
        shadow_seconds=0.002,
        shadow_class_id=[n % 10],
        shadow_confidence=[0.8],
    )


def ids(records) -> list[str]:
    return sorted(i for r in records for i in r["ids"])


def test_the_window_reads_every_node_once_whether_a_file_is_here_shipped_or_both(
    model_root, object_store, tmp_path, monkeypatch
):
    for key, value in object_store.env.items():
        monkeypatch.setenv(key, value)
    url = "s3://clothes/growing"
    since = time.time() - 1
    here, there = (capturing_replica(model_root, tmp_path / n, n, url) for n in ("node-a", "node-b"))
    for n in range(30):
        here.plane.log.log_shadow(paired(n, "a"))
        there.plane.log.log_shadow(paired(n, "b"))
    here.plane.log.flush()
    there.plane.log.close()  # node b's worker exits: its file is shipped and leaves its disk
    ship_the_rest(tmp_path / "node-b", object_store.client("growing"), "node-b")
    window = GrowingWindow(tmp_path / "node-a", object_store.client("growing"), since, PAIRED)
    expected = sorted([f"a-{n}" for n in range(30)] + [f"b-{n}" for n in range(30)])
    assert ids(window.read()) == expected

    # A file read here that is shipped meanwhile is in both places: counted once.
    current = log_files(tmp_path / "node-a")[0]
    kept = current.read_bytes()
    here.plane.log.close()
    ship_the_rest(tmp_path / "node-a", object_store.client("growing"), "node-a")
    assert not log_files(tmp_path / "node-a")
    current.write_bytes(kept)
    assert ids(window.read()) == expected
    current.unlink()
    assert ids(window.read()) == expected  # and once from the store alone

    # Only the wanted types are parsed, and only records since the window's start.
    assert (
        ids(GrowingWindow(tmp_path / "node-a", object_store.client("growing"), time.time() + 60, PAIRED).read()) == []
    )
    assert (
        GrowingWindow(tmp_path / "node-a", object_store.client("growing"), since, frozenset({"feedback"})).read() == []
    )


def test_a_closed_file_is_parsed_once(tmp_path):
    closed = tmp_path / f"predictions-host-1-{time.time_ns()}.jsonl.gz"
    closed.write_bytes(gzip.compress(b"".join(orjson.dumps(paired(n, "a")) + b"\n" for n in range(5))))
    window = GrowingWindow(tmp_path, None, time.time() - 60, PAIRED)
    assert ids(window.read()) == [f"a-{n}" for n in range(5)]
    closed.write_bytes(b"not read again")  # closed files never change: what was parsed counts
    assert ids(window.read()) == [f"a-{n}" for n in range(5)]
