"""Preemption: a stop signal saves last.pth after the current step and exits with code 75;
--auto-resume continues mid-epoch to bit-identical weights; TRAIN.SAVE_EVERY checkpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from claver.engine import reporting
from claver.engine import train as train_mod
from claver.engine.config import ConfigError, load_config
from claver.engine.train import STOPPED_EXIT_CODE, TrainingStopped, train
from test_engine_train import KILLER, dataset, final_weights, write_config  # noqa: F401

ENV = {**os.environ, "PYTHONHASHSEED": "0"}

# Stops in MetricsLog.write after step {stop_step}: says so on stdout, then waits (up to a
# minute) until the test's signal has reached the training's handler, so the signal lands
# inside a known step without any timing guess.
WAITER = """
import os, sys, time
from claver.engine import reporting
from claver.engine import train as train_mod
real = reporting.MetricsLog.write
def write(self, record):
    real(self, record)
    if record["step"] == {stop_step} and os.environ.get("RANK", "0") == "{rank}":
        print(f"WAITING pid={{os.getpid()}}", flush=True)
        deadline = time.monotonic() + 60
        while train_mod.stop_requested() is None and time.monotonic() < deadline:
            time.sleep(0.01)
reporting.MetricsLog.write = write
from claver.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(cfg: Path, out: Path, *extra: str, script: Path | None = None) -> list[str]:
    head = [sys.executable, str(script)] if script else [sys.executable, "-m", "claver"]
    return [*head, "train", "-c", str(cfg), "DATA.VAL_FILE=", f"OUTPUT={out}", *extra]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):  # noqa: F811
    """An uninterrupted 3-epoch run (3 steps per epoch): its config and final weights."""
    root = tmp_path_factory.mktemp("reference")
    cfg = write_config(root / "c.yaml", dataset, root / "a")
    done = subprocess.run(_cli(cfg, root / "a"), capture_output=True, text=True, timeout=300,
                          env=ENV)
    assert done.returncode == 0, done.stderr
    return cfg, final_weights(root / "a")


def assert_same_bytes(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes(), k


def stop_with_signal(cmd: list[str], sig: signal.Signals, log: Path,
                     to_launcher: bool = False) -> tuple[int, str]:
    """Start ``cmd`` (a WAITER run), wait for its WAITING line, send ``sig`` to the pid it
    names (or to ``cmd``'s own process: ``to_launcher``); returns (exit code, stdout)."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=ENV)
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("WAITING pid="):
                    os.kill(proc.pid if to_launcher else int(line.split("=")[1]), sig)
                    break
            rest, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc.returncode, "".join(lines) + rest


@pytest.mark.parametrize(("sig", "stop_step", "in_epoch"), [
    (signal.SIGTERM, 4, 1),  # mid epoch 1
    (signal.SIGUSR1, 3, 3),  # the last step of epoch 0: saved as an epoch end
], ids=["SIGTERM-mid-epoch", "SIGUSR1-epoch-end"])
def test_stop_signal_saves_and_auto_resume_is_bit_identical(reference, tmp_path, sig,
                                                             stop_step, in_epoch):
    cfg, expected = reference
    waiter = tmp_path / "waiter.py"
    waiter.write_text(WAITER.format(stop_step=stop_step, rank=0))
    code, stdout = stop_with_signal(_cli(cfg, tmp_path / "b", script=waiter), sig,
                                    tmp_path / "stderr.txt")
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == STOPPED_EXIT_CODE == 75, stderr[-3000:]
    said = stdout + stderr
    assert f"received {sig.name}" in said and "--auto-resume" in said
    state = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert state["step"] == stop_step and state["step_in_epoch"] == in_epoch
    assert state["epoch"] == 1 if in_epoch == 1 else state["epoch"] == 0
    assert state["saved_because"] == (f"signal {sig.name}" if in_epoch < 3 else "epoch end")
    assert not (tmp_path / "b" / "last.pth.tmp").exists()
    resumed = subprocess.run([*_cli(cfg, tmp_path / "b"), "--auto-resume"],
                             capture_output=True, text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {tmp_path / 'b' / 'last.pth'} at step {stop_step}" in \
        resumed.stdout + resumed.stderr
    assert_same_bytes(expected, final_weights(tmp_path / "b"))


def test_sigkill_after_a_periodic_save_resumes_from_that_step(reference, tmp_path):
    cfg, expected = reference
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER.format(kill_step=5))  # periodic saves after steps 2 and 4
    killed = subprocess.run(_cli(cfg, tmp_path / "b", "TRAIN.SAVE_EVERY=2", script=killer),
                            capture_output=True, text=True, timeout=300, env=ENV)
    assert killed.returncode == -9, killed.stderr[-3000:]
    state = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert (state["step"], state["epoch"], state["step_in_epoch"]) == (4, 1, 1)
    assert state["saved_because"] == "every 2 steps"
    assert state["rng_epoch_start"] is not None
    resumed = subprocess.run([*_cli(cfg, tmp_path / "b", "TRAIN.SAVE_EVERY=2"),
                              "--auto-resume"], capture_output=True, text=True, timeout=300,
                             env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert "at step 4 (epoch 1, step 1 of 3)" in resumed.stdout + resumed.stderr
    assert_same_bytes(expected, final_weights(tmp_path / "b"))


def test_in_process_stop_raises_and_restores_handlers(dataset, tmp_path,  # noqa: F811
                                                      monkeypatch):
    real = reporting.MetricsLog.write

    def write(self, record):
        real(self, record)
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGUSR2)

    monkeypatch.setattr(reporting.MetricsLog, "write", write)
    before = signal.getsignal(signal.SIGUSR2)
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["TRAIN.EPOCHS=1", "DATA.VAL_FILE=", "TRAIN.STOP_SIGNALS=[usr2]"])
    messages: list[str] = []
    with pytest.raises(TrainingStopped) as stop:
        train(cfg, log=messages.append)
    assert stop.value.code == 75 and stop.value.signal_name == "SIGUSR2"
    assert stop.value.step == 2 and stop.value.checkpoint == tmp_path / "run" / "last.pth"
    assert signal.getsignal(signal.SIGUSR2) == before and train_mod.stop_requested() is None
    assert any("stopped on SIGUSR2 after step 2 of 3" in m for m in messages)
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert (state["step"], state["step_in_epoch"]) == (2, 2)


def test_stop_signals_not_listed_are_left_alone(dataset, tmp_path, monkeypatch):  # noqa: F811
    seen = []
    monkeypatch.setattr(signal, "signal",
                        lambda num, handler: seen.append(num) or signal.SIG_DFL)
    cfg = load_config(write_config(tmp_path / "c.yaml", dataset, tmp_path / "run"),
                      ["TRAIN.EPOCHS=1", "DATA.VAL_FILE=", "TRAIN.MAX_STEPS=1",
                       "TRAIN.STOP_SIGNALS=[]"])
    assert train(cfg, log=lambda *a: None)["step"] == 1
    assert seen == []


def test_stop_signal_and_save_every_keys_are_validated(tmp_path):
    cfg = load_config(None, ["TRAIN.STOP_SIGNALS=[term, USR1, SIGTERM]"])
    assert cfg.TRAIN.STOP_SIGNALS == ["SIGTERM", "SIGUSR1"]
    assert load_config(None).TRAIN.STOP_SIGNALS == ["SIGTERM", "SIGUSR1"]
    assert load_config(None, ["TRAIN.STOP_SIGNALS=[]"]).TRAIN.STOP_SIGNALS == []
    assert load_config(None, ["TRAIN.SAVE_EVERY=500"]).TRAIN.SAVE_EVERY == 500
    with pytest.raises(ConfigError, match="SIGKILL and SIGSTOP cannot be caught"):
        load_config(None, ["TRAIN.STOP_SIGNALS=[SIGKILL]"])
    with pytest.raises(ConfigError, match="TRAIN.STOP_SIGNALS: 'SIGFOO' is not a signal"):
        load_config(None, ["TRAIN.STOP_SIGNALS=SIGFOO"])
    with pytest.raises(ConfigError, match=r"TRAIN.SAVE_EVERY must be a finite number >= 0"):
        load_config(None, ["TRAIN.SAVE_EVERY=-1"])
    path = tmp_path / "c.yaml"
    path.write_text("TRAIN: {STOP_SIGNALS: [SIGTERM, 9]}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: TRAIN.STOP_SIGNALS: '9'"):
        load_config(path)


@pytest.mark.parametrize("target", ["rank 1", "torchrun"])
def test_two_processes_stop_at_the_same_step_and_resume_bit_identical(
        dataset, tmp_path, target):  # noqa: F811
    """Only rank 1 gets SIGTERM (rank 0 must stop at the same step), or torchrun gets it
    (it forwards SIGTERM to every worker: what the README's SLURM script relies on)."""
    from test_engine_train import free_port

    cfg = write_config(tmp_path / "c.yaml", dataset, tmp_path / "a")
    ddp = ["TRAIN.BATCH_SIZE=2", "TRAIN.EFFECTIVE_BATCH_SIZE=4", "TRAIN.EPOCHS=2"]

    def torchrun(out: Path, *extra: str, script: Path | None = None) -> list[str]:
        cmd = _cli(cfg, out, *ddp, *extra, script=script)
        entry = [str(script)] if script else ["-m", "claver"]
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                f"--master_port={free_port()}", *entry, *cmd[cmd.index("train"):]]

    ref = subprocess.run(torchrun(tmp_path / "a"), capture_output=True, text=True,
                         timeout=300, env=ENV)
    assert ref.returncode == 0, ref.stderr[-3000:]
    waiter = tmp_path / "waiter.py"
    waiter.write_text(WAITER.format(stop_step=4, rank=1 if target == "rank 1" else 0))
    code, stdout = stop_with_signal(torchrun(tmp_path / "b", script=waiter), signal.SIGTERM,
                                    tmp_path / "stderr.txt", to_launcher=target == "torchrun")
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code != 0, stderr[-3000:]
    if target == "rank 1":  # torchrun reports the worker's code
        assert re.search(r"exitcode\s*:\s*75\b", stderr), stderr[-3000:]
    else:
        assert "stopped on SIGTERM after step 4" in stdout, stderr[-3000:]
    state = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert (state["step"], state["step_in_epoch"]) == (4, 1)  # rank 0 stopped at step 4 too
    resumed = subprocess.run([*torchrun(tmp_path / "b"), "--auto-resume"],
                             capture_output=True, text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_bytes(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
