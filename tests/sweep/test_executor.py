"""Worker isolation under faults: a crash, a hang after the record, a kill by the kernel, a killed
parent, two sweeps on one directory, and a CPU run out of memory. Misbehaving workers are small
Python programs put in place of ``bench.sweep.worker`` (``LocalExecutor(command=...)``)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from bench.sweep import store
from bench.sweep.config import RunConfig
from bench.sweep.executor import LocalExecutor, classify_exit, run_sweep
from bench.sweep.worker import out_of_memory, requested_bytes

CFG = RunConfig("unet", (32, 32, 32), 1, "train", "predict", "fp32")


def worker(code: str) -> list[str]:
    """A worker command running ``code`` (which may read the configuration from stdin)."""
    return [sys.executable, "-c", textwrap.dedent(code)]


RECORD_THEN = """
import json, sys
cfg = json.loads(sys.stdin.read())
print("RECORD:" + json.dumps({"key": "k", "arch": cfg["arch"], "status": "ok"}), flush=True)
"""


def test_a_crash_keeps_the_configuration_and_names_the_error():
    ex = LocalExecutor(command=worker("import sys; sys.stdin.read(); raise ValueError('expansion must be >= 1')"))
    rec = ex.run(CFG, 60)
    assert rec["status"] == "error" and rec["error"].endswith("ValueError: expansion must be >= 1")
    assert (rec["arch"], rec["size"], rec["batch"], rec["precision"], rec["backend"]) == (
        "unet", "32x32x32", 1, "fp32", "predict")
    assert rec["key"] == CFG.key() and rec["timeout_s"] == 60 and "Traceback" in rec["stderr_tail"]


def test_a_record_sent_before_a_hang_at_exit_is_kept():
    ex = LocalExecutor(command=worker(RECORD_THEN + "import time; time.sleep(600)"), exit_grace_s=1)
    t0 = time.monotonic()
    rec = ex.run(CFG, 300)
    assert rec["status"] == "ok" and rec["arch"] == "unet"
    assert time.monotonic() - t0 < 30


def test_a_hang_without_a_record_is_a_timeout():
    rec = LocalExecutor(command=worker("import time; time.sleep(600)")).run(CFG, 1)
    assert rec["status"] == "timeout" and rec["size"] == "32x32x32"


def test_a_kill_by_the_kernel_is_out_of_memory():
    rec = LocalExecutor(command=worker("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")).run(CFG, 60)
    assert rec["status"] == "oom" and "out-of-memory killer" in rec["error"]
    assert classify_exit(-signal.SIGSEGV, "")[0] == "error"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "\nState:\tZ" not in fh.read()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_parent(tmp_path):
    pidfile = tmp_path / "worker.pid"
    sweeper = textwrap.dedent(f"""
        import sys
        from bench.sweep.config import RunConfig
        from bench.sweep.executor import LocalExecutor
        code = "import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
        LocalExecutor(command=[sys.executable, "-c", code]).run(RunConfig("unet", (32, 32, 32), 1), 600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", sweeper])
    for _ in range(300):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    assert _alive(pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the worker outlived its killed parent"


def _sweep(out: str, code: str) -> None:
    configs = [RunConfig("unet", (s, s, s), 1, backend="predict") for s in (32, 48, 64)]
    run_sweep(configs, out, 60, executor=LocalExecutor(command=[sys.executable, "-c", code]))


SLOW_RECORD = """
import json, sys, time
cfg = json.loads(sys.stdin.read())
sys.path.insert(0, %r)
from bench.sweep.config import RunConfig
time.sleep(1)
print("RECORD:" + json.dumps({"key": RunConfig.from_json(json.dumps(cfg)).key(), "status": "ok",
                              "code_version": %r}), flush=True)
"""


def test_two_sweeps_on_one_directory_run_each_configuration_once(tmp_path, race):
    from bench.version import code_version

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    race(_sweep, str(tmp_path), SLOW_RECORD % (root, code_version()))
    df = pd.read_json(store.path(tmp_path), lines=True)
    assert len(df) == 3 and df["key"].is_unique


def test_resume_skips_records_reruns_failed_on_request_and_other_code_versions(tmp_path):
    calls = []

    class Fake:
        def run(self, cfg, timeout_s):
            calls.append(cfg.key())
            return {**json.loads(json.dumps({"key": cfg.key()})), "status": "error", "timeout_s": timeout_s,
                    "code_version": __import__("bench.version").version.code_version()}

    run_sweep([CFG], tmp_path, 10, executor=Fake())
    run_sweep([CFG], tmp_path, 10, executor=Fake())
    assert len(calls) == 1  # an error row stands until asked
    run_sweep([CFG], tmp_path, 10, retry_failed=True, executor=Fake())
    assert len(calls) == 2 and len(store.load(tmp_path)) == 1 and len(store.load(tmp_path, history=True)) == 2
    store.append(tmp_path, {"key": CFG.key(), "status": "ok", "code_version": "0.0.1+0000000"})
    run_sweep([CFG], tmp_path, 10, executor=Fake())
    assert len(calls) == 3  # recorded by another version of the code


def test_no_configuration_starts_after_the_deadline_and_a_later_sweep_goes_on(tmp_path):
    from bench.sweep.executor import TIME_LIMIT
    from bench.version import code_version

    configs = [RunConfig("unet", (32, 32, 32), b, "train", "predict", "fp32") for b in (1, 2, 3)]
    clock = iter([0.0, 5.0, 11.0, 12.0])  # read once before each start: the third comes after the deadline
    ran, skipped = [], []

    class Fake:
        def run(self, cfg, timeout_s):
            ran.append(cfg.batch)
            return {"key": cfg.key(), "status": "ok", "code_version": code_version()}

    import bench.sweep.executor as E

    real = E.time.monotonic
    E.time.monotonic = lambda: next(clock)
    try:
        run_sweep(configs, tmp_path, 10, executor=Fake(), deadline=10.0, on_skip=lambda cfg, why: skipped.append(why))
    finally:
        E.time.monotonic = real
    assert ran == [1, 2] and skipped == [TIME_LIMIT] and len(store.load(tmp_path)) == 2
    run_sweep(configs, tmp_path, 10, executor=Fake(), on_skip=lambda cfg, why: skipped.append(why))
    assert ran == [1, 2, 3] and skipped == [TIME_LIMIT, "recorded", "recorded"]


def test_out_of_memory_is_recognised_on_the_cpu_too():
    import torch

    with pytest.raises(RuntimeError) as info:
        torch.empty(2**62, dtype=torch.uint8)
    assert out_of_memory(info.value) and out_of_memory(MemoryError())
    assert requested_bytes(str(info.value)) == 2**62
    assert requested_bytes("CUDA out of memory. Tried to allocate 2.00 GiB") == 2 * 2**30
    assert not out_of_memory(ValueError("x"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS")
def test_a_cpu_run_out_of_memory_is_an_oom_row(tmp_path):
    limit = 3 * 2**30  # address space: enough for torch, far too little for a 256^3 batch of 4
    code = f"""
        import resource, runpy, sys
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        sys.argv = ["bench.sweep.worker"]
        runpy.run_module("bench.sweep.worker", run_name="__main__")
    """
    cfg = RunConfig("unet", (256, 256, 256), 4, "train", "cpu", "fp32", repeats=1)
    rec = LocalExecutor(command=worker(code)).run(cfg, 300)
    assert rec["status"] == "oom", rec.get("error")
    assert rec["size"] == "256x256x256" and rec.get("oom_requested_bytes", 0) > 0


# a worker that takes a second to "import", then sends its start time, when it read its stdin, and that stdin
SLOW_START = """
import json, os, sys, time
started = time.time()
time.sleep(1)
text = sys.stdin.read()
print("RECORD:" + json.dumps({"status": "ok", "pid": os.getpid(), "started": started, "read": time.time(),
                              "stdin": text}), flush=True)
"""


def test_prestart_starts_the_next_worker_while_one_runs_and_close_stops_it():
    ex = LocalExecutor(command=worker(SLOW_START), prestart=1)
    first = ex.run(CFG, 60)
    called = time.time()
    second = ex.run(CFG, 60)
    assert second["pid"] != first["pid"]  # still a fresh process per configuration
    assert second["started"] < first["read"] < called  # it was started while the first one ran ...
    assert second["read"] - called < 0.9  # ... so its second of imports was over before it was asked
    [spare] = [w.proc for w in ex._spares]  # told of no configuration to come: one spare, only imported
    assert spare.poll() is None
    ex.close()
    assert spare.wait(10) is not None and ex._spares == []


def test_a_spare_that_died_waiting_is_replaced():
    ex = LocalExecutor(command=worker(SLOW_START), prestart=1)
    ex.run(CFG, 60)
    _kill_group_of(ex._spares[0].proc)
    rec = ex.run(CFG, 60)
    assert rec["status"] == "ok" and json.loads(rec["stdin"])["arch"] == "unet"
    ex.close()


def _kill_group_of(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_instructions_go_on_the_second_stdin_line_and_the_worker_reads_them():
    from bench.sweep import wire

    how = wire.Instructions(predict_only=True, live_gpu="H100-SXM")
    rec = LocalExecutor(command=worker(SLOW_START)).run(CFG, 60, how)
    text, got = wire.read_stdin(rec["stdin"])
    assert RunConfig.from_json(text) == CFG and got == how
    assert wire.read_stdin(CFG.to_json()) == (CFG.to_json(), wire.Instructions())


# a worker speaking the protocol of a configuration sent ahead of its turn (bench.sweep.wire): what it read, when
AHEAD = """
import json, os, sys, time
from bench.sweep import wire
text, how = wire.read_config(sys.stdin)
prepared = None
if how.ahead:
    prepared = time.time()
    how = wire.read_go(sys.stdin)
    if how is None:
        sys.exit(0)
print("RECORD:" + json.dumps({"status": "ok", "config": text, "prepared": prepared, "go": time.time(),
                              "how": how.to_json()}), flush=True)
"""


def test_the_next_configuration_is_sent_ahead_to_the_spare_worker_and_a_wrong_one_is_not_used():
    from bench.sweep import wire

    a, b, c = CFG, dataclasses.replace(CFG, size=(48, 48, 48)), dataclasses.replace(CFG, size=(64, 64, 64))
    ex = LocalExecutor(command=worker(AHEAD), prestart=1)
    first = ex.run(a, 60, upcoming=(b,))  # no spare yet: sent whole; the spare is sent b at once
    assert RunConfig.from_json(first["config"]) == a and first["prepared"] is None
    time.sleep(1.5)  # (the spare has its configuration now, well before its turn)
    called = time.time()
    second = ex.run(b, 60, wire.Instructions(live_gpu="H100-SXM"), upcoming=(a,))
    assert RunConfig.from_json(second["config"]) == b
    assert second["prepared"] < called < second["go"]  # it had its configuration before its turn, went on at it
    assert wire.Instructions.from_json(second["how"]).live_gpu == "H100-SXM"  # the instructions came with the go
    third = ex.run(c, 60)  # the spare was sent a, not c: a fresh worker runs c
    assert RunConfig.from_json(third["config"]) == c and third["prepared"] is None
    spare = ex._spares[0].proc
    ex.close()
    assert spare.wait(10) is not None


def test_spares_are_sent_the_next_configurations_and_one_no_longer_coming_is_stopped():
    """Where configurations take less time on the GPU than a worker takes to import and prepare, one spare leaves
    the GPU waiting: ``prestart=2`` keeps the next two sent ahead."""
    a, b, c, d = (dataclasses.replace(CFG, size=(s, s, s)) for s in (32, 40, 48, 56))
    ex = LocalExecutor(command=worker(AHEAD), prestart=2)
    ex.run(a, 60, upcoming=(b, c, d))  # the first two of those to come
    assert sorted(w.ahead for w in ex._spares) == sorted([b.key(), c.key()])
    time.sleep(1.5)
    called = time.time()
    second = ex.run(b, 60, upcoming=(c, d))
    third = ex.run(c, 60, upcoming=(d,))
    assert second["prepared"] < called and third["prepared"] < called  # both had theirs before b's turn
    assert [RunConfig.from_json(r["config"]) for r in (second, third)] == [b, c]
    [for_d] = ex._spares
    assert for_d.ahead == d.key()
    ex.run(a, 60, upcoming=(b,))  # d is no longer this executor's to run (another took it): its spare is stopped
    assert for_d.proc.wait(10) is not None and [w.ahead for w in ex._spares] == [b.key()]
    ex.run(b, 60)  # none to come: one spare, only imported
    [idle] = ex._spares
    assert idle.ahead is None
    ex.ahead_of([c])  # then one comes (taken from another executor's queue): the imported spare is sent it
    assert ex._spares == [idle] and idle.ahead == c.key()
    time.sleep(1.5)
    called = time.time()
    fourth = ex.run(c, 60)
    assert RunConfig.from_json(fourth["config"]) == c and fourth["prepared"] < called
    ex.close()


def test_an_interrupted_sweep_records_nothing_for_the_configuration_it_was_running():
    """Ctrl-C in a --jobs sweep cancels the executors from another thread: the running configuration gets
    no record (it was neither a timeout nor a failure), so the next sweep runs it again."""
    import threading

    ex = LocalExecutor(command=worker("import sys, time; sys.stdin.read(); time.sleep(600)"))
    got = []
    t = threading.Thread(target=lambda: got.append(ex.run(CFG, 900)))
    t.start()
    time.sleep(1)
    ex.cancel()
    t.join(30)
    assert got == [None]


def test_a_spare_that_waited_for_its_configuration_records_its_imports_not_its_wait(monkeypatch, capsys):
    """The phase ``imports`` is the worker's imports: a spare started before its configuration was known (bench
    validate's first, started with the command) waits for it afterwards, and that wait is not imports."""
    from bench.sweep import wire, worker

    clock = {"s": 2.0}  # seconds since the process started: its imports took 2 s
    given = {}

    def config_after_a_wait(stream):
        clock["s"] += 10.0  # the configuration comes 10 s later
        return CFG.to_json(), wire.Instructions(ahead=True)

    def run(cfg, how, prepared, ahead_s, imports_s):
        given["imports_s"] = imports_s
        return {"key": cfg.key(), "status": "ok"}

    monkeypatch.setattr(worker, "since_start", lambda: clock["s"])
    monkeypatch.setattr(worker, "watch_parent", lambda: None)
    monkeypatch.setattr(wire, "read_config", config_after_a_wait)
    monkeypatch.setattr(wire, "read_go", lambda stream: wire.Instructions())
    monkeypatch.setattr(worker, "prepare_ahead", lambda cfg: None)
    monkeypatch.setattr(worker, "run", run)
    assert worker.main() == 0
    assert given["imports_s"] == 2.0
    assert '"status": "ok"' in capsys.readouterr().out
