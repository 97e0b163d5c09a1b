"""The results store under faults: torn lines, foreign lines, short writes, concurrent writers, re-runs.

Each test reproduces a fault first (as a killed writer, a full disk or a second process would leave
the file) and then asserts that every finished record is readable exactly once by
``pandas.read_json(lines=True)``, the reader the README recommends.
"""

import json
import multiprocessing as mp
import os

import pandas as pd
import pytest

from bench.sweep import store


def rec(key: str, status: str = "ok", **extra) -> dict:
    return {"key": key, "arch": "unet", "status": status, **extra}


def read_pandas(out) -> pd.DataFrame:
    return pd.read_json(store.path(out), lines=True)


def test_a_record_after_a_torn_line_is_not_lost(tmp_path):
    store.append(tmp_path, rec("a"))
    with open(store.path(tmp_path), "ab") as fh:  # a writer killed mid-line: no newline at the end
        fh.write(b'{"key": "b", "arch": "un')
    with pytest.warns(store.StoreWarning, match=r"results.jsonl:2: .* torn"):
        assert [r["key"] for r in store.records(tmp_path)] == ["a"]
    store.append(tmp_path, rec("c"))
    assert list(read_pandas(tmp_path)["key"]) == ["a", "c"]
    rejected = (tmp_path / store.REJECTED).read_text()
    assert rejected == '{"key": "b", "arch": "un\n'


def test_lines_that_are_not_records_are_skipped_with_their_line_number_and_moved_aside(tmp_path):
    store.append(tmp_path, rec("a"))
    with open(store.path(tmp_path), "a") as fh:
        fh.write('[1, 2, 3]\n42\nnot json at all\n{"a": 1}\n')  # the last: an object, but foreign (no key)
    with pytest.warns(store.StoreWarning) as caught:
        df = store.load(tmp_path)
    assert list(df["key"]) == ["a"]
    assert [str(w.message).split(": ")[0].rsplit(":", 1)[1] for w in caught] == ["2", "3", "4", "5"]
    assert store.repair(tmp_path) == 4
    assert list(read_pandas(tmp_path)["key"]) == ["a"]
    assert (tmp_path / store.REJECTED).read_text().splitlines() == ["[1, 2, 3]", "42", "not json at all", '{"a": 1}']
    assert store.repair(tmp_path) == 0


def test_a_short_write_is_undone_and_raised(tmp_path, monkeypatch):
    store.append(tmp_path, rec("a"))
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:10]))  # a full disk
    with pytest.raises(OSError, match="short write"):
        store.append(tmp_path, rec("b"))
    monkeypatch.undo()
    assert list(read_pandas(tmp_path)["key"]) == ["a"]


def test_the_latest_record_of_a_configuration_wins(tmp_path):
    store.append(tmp_path, rec("a", "error"))
    store.append(tmp_path, rec("b"))
    store.append(tmp_path, rec("a", "ok"))
    df = store.load(tmp_path)
    assert dict(zip(df["key"], df["status"])) == {"a": "ok", "b": "ok"}
    assert len(store.load(tmp_path, history=True)) == 3


def test_records_written_before_backends_had_their_name_are_read(tmp_path):
    store.path(tmp_path).write_text(json.dumps({"key": "a", "device": "predict", "status": "ok"}) + "\n")
    assert store.load(tmp_path)["backend"].tolist() == ["predict"]


def _writer(out: str, worker: int, n: int) -> None:
    for i in range(n):
        store.append(out, rec(f"{worker}-{i}", payload="x" * 5000))  # large lines tear easily


def test_concurrent_writers_leave_every_record_exactly_once(tmp_path):
    procs = [mp.get_context("spawn").Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    keys = read_pandas(tmp_path)["key"].tolist()
    assert sorted(keys) == sorted(f"{w}-{i}" for w in range(4) for i in range(40))


def test_a_claim_is_exclusive_across_processes(tmp_path):
    ctx = mp.get_context("spawn")
    with store.claim(tmp_path, "k") as mine:
        assert mine
        q = ctx.Queue()
        p = ctx.Process(target=_try_claim, args=(str(tmp_path), "k", q))
        p.start()
        assert q.get(timeout=60) is False
        p.join(60)
    p = ctx.Process(target=_try_claim, args=(str(tmp_path), "k", q))
    p.start()
    assert q.get(timeout=60) is True
    p.join(60)


def _try_claim(out: str, key: str, q) -> None:
    with store.claim(out, key) as mine:
        q.put(mine)


def test_an_unwritable_results_directory_is_found_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OSError, match="cannot write results under"):
        store.check_writable(tmp_path / "a-file" / "results")  # cannot even be made
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits (a read-only mount does not)
            pytest.skip("this user can write to a read-only directory")
        with pytest.raises(OSError, match="cannot write results under"):
            store.check_writable(ro)
    finally:
        ro.chmod(0o755)
