"""``claver train``: the training loop (single process or torchrun DDP).

Per optimizer step: ``accumulation`` micro-batches (derived from TRAIN.EFFECTIVE_BATCH_SIZE,
the world size and TRAIN.BATCH_SIZE), torch.amp (bf16, or fp16 with a GradScaler), the
CLAVER loss (soft-target CE over K random text rows, mixup/cutmix + label smoothing; hard
labels work with mixup off) or the ActionCLIP loss (symmetric KL, one random template per
sample), a NaN/inf guard that skips the step and reports it, optional clipping, and the
per-iteration cosine schedule. Every random draw is a function of (seed, epoch/step, index),
and checkpoints carry every RNG state, so a killed run resumes at the exact step with the
same result.

The output folder is never overwritten silently: a folder that already holds files is
refused unless the run continues it (``resume`` / ``auto_resume``) or starts over on
purpose (``overwrite``), and nothing is written to it before the config, the label and data
lists and the model have been built. A resume whose schedule or data-order settings differ
from the checkpoint's record is refused unless ``allow_changed_settings``.

Preemption: on a signal in TRAIN.STOP_SIGNALS (SIGTERM and SIGUSR1 by default) every rank
finishes the optimizer step it is in, the ranks agree on the step to stop after (one tiny
all-reduce per step), rank 0 writes ``last.pth`` atomically with the step inside the epoch and
every RNG state, and :func:`train` raises :class:`TrainingStopped` (a ``SystemExit`` with
code :data:`STOPPED_EXIT_CODE` = 75, ``EX_TEMPFAIL``: "try again"). ``--auto-resume``
continues from that step, mid-epoch, with the same data order and draws: the final weights
equal an uninterrupted run's. ``TRAIN.SAVE_EVERY`` also writes ``last.pth`` every N steps
inside an epoch, so even a kill -9 loses at most N steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from claver.data.dataset import LoadReport, loader_with_sampler
from claver.data.mixup import mixup_cutmix, smooth_one_hot
from claver.engine import data as engine_data
from claver.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    settings_changes,
)
from claver.engine.config import Config, ConfigError, save_config
from claver.engine.distributed import (
    World,
    all_reduce_mean,
    any_rank,
    barrier,
    init_distributed,
)
from claver.engine.evaluate import amp_context, encode_text_rows, evaluate
from claver.engine.losses import actionclip_loss, soft_target_cross_entropy
from claver.engine.optim import WarmupCosine, build_optimizer
from claver.engine.reporting import MetricsLog, write_eval_outputs


class SkipSampler(Sampler[int]):
    """The first ``skip`` indices of ``sampler`` dropped (resuming inside an epoch)."""

    def __init__(self, sampler: Any, skip: int = 0) -> None:
        self.sampler, self.skip = sampler, skip

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


STOPPED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped on a signal, last.pth saved, rerun to continue


class TrainingStopped(SystemExit):
    """Training stopped early on a signal in TRAIN.STOP_SIGNALS after saving ``checkpoint``
    at ``step``; exits the process with :data:`STOPPED_EXIT_CODE` unless caught."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(STOPPED_EXIT_CODE)
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


class StopSignals:
    """Records the first TRAIN.STOP_SIGNALS signal received while installed (a context
    manager; the previous handlers come back on exit). Handlers only set a flag: the loop
    checks :attr:`received` between optimizer steps. Signals this platform lacks, and
    installation outside the main thread (where Python cannot handle signals), are skipped
    with a message."""

    def __init__(self, names: list[str], say: Any = print) -> None:
        self.names, self.say = names, say
        self.received: str | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            self.say(f"received {self.received}: finishing this step, then saving last.pth "
                     f"and exiting with code {STOPPED_EXIT_CODE}")

    def __enter__(self) -> StopSignals:
        global _ACTIVE
        _ACTIVE = self
        if not self.names:
            return self
        if threading.current_thread() is not threading.main_thread():
            self.say("warning: training runs outside the main thread: TRAIN.STOP_SIGNALS "
                     "are not handled")
            return self
        for name in self.names:
            num = getattr(signal, name, None)
            if num is None:
                self.say(f"warning: {name} does not exist on this platform; not handled")
                continue
            self.previous[num] = signal.signal(num, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        global _ACTIVE
        for num, handler in self.previous.items():
            signal.signal(num, handler)
        self.previous.clear()
        _ACTIVE = None


# The stop handler of the running training (None outside train()); tests and embedding code
# can read which signal arrived with :func:`stop_requested`.
_ACTIVE: StopSignals | None = None


def stop_requested() -> str | None:
    """The stop signal this process received during the running training, if any."""
    return _ACTIVE.received if _ACTIVE is not None else None


class TrainStep(nn.Module):
    """What DDP wraps: logits for the CLAVER loss, or (video, text) embeddings."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor, text: torch.Tensor, pairwise: bool = False) -> Any:
        if pairwise:
            return self.model.encode_video(video), self.model.encode_text(text)
        return self.model(video, text)


def accumulation_steps(cfg: Config, world: int) -> int:
    per_step = cfg.TRAIN.BATCH_SIZE * world
    effective = cfg.TRAIN.EFFECTIVE_BATCH_SIZE or per_step
    if effective % per_step:
        raise ConfigError(
            f"TRAIN.EFFECTIVE_BATCH_SIZE {effective} is not a multiple of TRAIN.BATCH_SIZE "
            f"{cfg.TRAIN.BATCH_SIZE} x {world} process(es) = {per_step}; pick a batch size "
            "or process count that divides it")
    return effective // per_step


def parameter_summary(model: nn.Module) -> str:
    """Trainable / total parameters per top-level module (visual.transformer_t, fusion ...)."""
    rows: dict[str, list[int]] = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "visual" and len(parts) > 2 else parts[0]
        counts = rows.setdefault(key, [0, 0])
        counts[0] += p.numel() if p.requires_grad else 0
        counts[1] += p.numel()
    width = max(len(k) for k in rows)
    lines = [f"{'module':<{width}} {'trainable':>12} {'total':>12}"]
    lines += [f"{k:<{width}} {t:>12,} {n:>12,}" for k, (t, n) in rows.items()]
    total = [sum(v[i] for v in rows.values()) for i in (0, 1)]
    lines.append(f"{'all':<{width}} {total[0]:>12,} {total[1]:>12,}")
    return "\n".join(lines)


class OutputExistsError(ValueError):
    """OUTPUT already holds files and the run neither continues nor overwrites them."""


class ChangedSettingsError(ValueError):
    """A resume would change the schedule or the data order recorded in the checkpoint."""


# What a training run writes into OUTPUT (``--overwrite`` replaces these, nothing else).
RUN_FILES = ("config.yaml", "last.pth", "last.pth.tmp", "best.pth", "best.pth.tmp",
             "metrics.jsonl")
RUN_DIRS = ("eval", "tensorboard")


def _is_run_file(path: Path) -> bool:
    name = path.name
    if path.is_dir():
        return name in RUN_DIRS
    return name in RUN_FILES or (name.startswith("few_shot_k") and name.endswith(".txt"))


def _describe(path: Path) -> str:
    return path.name + "/" if path.is_dir() else path.name


def output_contents(out: Path) -> list[Path]:
    """The entries of ``out`` (empty when it does not exist); an error if it is a file."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"OUTPUT {out} is a file, not a folder; choose another OUTPUT")
    return sorted(out.iterdir()) if out.is_dir() else []


def check_output(out: Path, *, continuing: bool, overwrite: bool) -> list[Path]:
    """Refuse a non-empty ``out`` unless the run continues it or ``overwrite``; returns what
    ``out`` holds. Reads only."""
    if continuing and overwrite:
        raise OutputExistsError("--overwrite starts the run over; it cannot be combined with "
                                "--resume or --auto-resume")
    entries = output_contents(out)
    if entries and not continuing and not overwrite:
        shown = ", ".join(_describe(p) for p in entries[:8])
        more = f" and {len(entries) - 8} more" if len(entries) > 8 else ""
        raise OutputExistsError(
            f"OUTPUT {out} is not empty ({shown}{more}): continue that run with --auto-resume "
            "(or --resume CHECKPOINT), start over with --overwrite, or choose another OUTPUT")
    return entries


def clear_previous_run(out: Path, entries: list[Path], keep: set[str]) -> tuple[list[str],
                                                                                  list[str]]:
    """``--overwrite``: delete the files an earlier run wrote (:data:`RUN_FILES`, eval/,
    tensorboard/, few-shot manifests) except ``keep``; returns (replaced, left alone)."""
    replaced, left = [], []
    for path in entries:
        if path.name in keep:
            replaced.append(path.name)  # rewritten by this run
        elif _is_run_file(path):
            replaced.append(_describe(path))
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        else:
            left.append(path.name + ("/" if path.is_dir() else ""))
    return replaced, left


def _list_identity(list_file: str) -> str:
    """What identifies a training list: its content (a moved dataset keeps its identity)."""
    try:
        digest = hashlib.sha256(Path(list_file).read_bytes()).hexdigest()[:16]
    except OSError:
        return "(unreadable)"
    return f"sha256 {digest}"


def run_settings(cfg: Config, world: int, accum: int, steps_per_epoch: int, total: int,
                 videos: int) -> dict[str, Any]:
    """The settings that define the LR schedule and the data order; recorded in every
    checkpoint and compared on resume (see :func:`check_resume_settings`)."""
    t, d = cfg.TRAIN, cfg.DATA
    return {
        "TRAIN.BATCH_SIZE": t.BATCH_SIZE,
        "TRAIN.EFFECTIVE_BATCH_SIZE": t.EFFECTIVE_BATCH_SIZE,
        "world size": world,
        "accumulation": accum,
        "TRAIN.EPOCHS": t.EPOCHS,
        "TRAIN.MAX_STEPS": t.MAX_STEPS,
        "TRAIN.WARMUP_EPOCHS": t.WARMUP_EPOCHS,
        "TRAIN.LR": t.LR,
        "TRAIN.MIN_LR_RATIO": t.MIN_LR_RATIO,
        "TRAIN.NEW_PARAM_LR_MULT": t.NEW_PARAM_LR_MULT,
        "SEED": cfg.SEED,
        "DATA.NUM_FRAMES": d.NUM_FRAMES,
        "DATA.FEW_SHOT_K": d.FEW_SHOT_K,
        "DATA.TRAIN_FILE content": _list_identity(d.TRAIN_FILE),
        "training videos": videos,
        "steps per epoch": steps_per_epoch,
        "total steps": total,
    }


def check_resume_settings(path: str, state: dict[str, Any], current: dict[str, Any], *,
                          allow: bool, say: Any) -> None:
    """Refuse (or, with ``allow``, warn about) a resume that changes the recorded settings."""
    recorded = state.get("settings")
    if not recorded:
        say(f"warning: {path} records no run settings (an older checkpoint): cannot check "
            "that the schedule and data order are unchanged")
        return
    changes = settings_changes(recorded, current)
    if not changes:
        return
    listed = "; ".join(changes)
    if not allow:
        raise ChangedSettingsError(
            f"resuming {path} with changed settings ({listed}): the schedule and data order "
            "would no longer match the checkpoint; undo the changes, start over in another "
            "OUTPUT, or pass --allow-changed-settings")
    say(f"warning: resuming {path} with changed settings ({listed}); the LR schedule, step "
        "count and data order follow the new settings from step "
        f"{state.get('step')} on")


def _step_generator(cfg: Config, step: int, micro: int) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.SEED * 1_000_003 + step * 101 + micro)


def compute_loss(cfg: Config, step_module: nn.Module, batch: dict[str, Any],
                 tokens: torch.Tensor, num_classes: int, step: int, micro: int,
                 device: torch.device, text_feats: torch.Tensor | None) -> torch.Tensor:
    """Loss of one micro-batch (see the module docstring). The K text rows are drawn once
    per optimizer step (the same for every micro-batch and rank, so accumulation and DDP
    equal one big batch); mixup draws per micro-batch."""
    gen = _step_generator(cfg, step, micro)
    video = batch["video"].to(device, non_blocking=True)
    labels = batch["label"]
    t = cfg.TRAIN
    if t.LOSS == "actionclip":
        hard = labels if labels.dim() == 1 else labels.argmax(1)
        rows = torch.randint(tokens.shape[0], (len(hard),), generator=gen)
        text = tokens[rows, hard].to(device)
        v, e = step_module(video, text, pairwise=True)
        model = getattr(step_module, "module", step_module).model
        return actionclip_loss(v, e, hard.to(device), model.logit_scale)
    if t.MIXUP > 0 or t.CUTMIX > 0:
        video, targets = mixup_cutmix(video, labels.to(device), num_classes,
                                      mixup_alpha=t.MIXUP, cutmix_alpha=t.CUTMIX,
                                      switch_prob=t.MIXUP_SWITCH_PROB,
                                      label_smoothing=t.LABEL_SMOOTH, generator=gen)
    else:  # hard labels work too (the reference code crashed here)
        targets = smooth_one_hot(labels.to(device), num_classes, t.LABEL_SMOOTH)
    rows = torch.randperm(tokens.shape[0], generator=_step_generator(cfg, step, -1))[
        : min(t.TEXT_ROWS, tokens.shape[0])]
    text = text_feats[rows.to(text_feats.device)] if text_feats is not None else \
        tokens[rows].to(device)
    return soft_target_cross_entropy(step_module(video, text), targets)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:  # not on Linux/macOS
        return 0.0


def _manifest_name(cfg: Config) -> str:
    return f"few_shot_k{cfg.DATA.FEW_SHOT_K}_seed{cfg.SEED}.txt"


def _undo_manifest(cfg: Config, out: Path, entries: list[Path], existed: bool) -> None:
    """A start that failed: remove the few-shot manifest it wrote (if OUTPUT had none) and
    the folder if this start created it and left it empty."""
    manifest = out / _manifest_name(cfg)
    if cfg.DATA.FEW_SHOT_K > 0 and manifest not in entries and manifest.is_file():
        manifest.unlink()
    if not existed and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _build(cfg: Config, world: World) -> tuple:
    """Class names, model, text tokens, dataset, loader and step counts; validates all."""
    names = engine_data.class_names(cfg)
    model = engine_data.build_model(cfg).to(world.device)
    tokens = engine_data.tokenize_rows(engine_data.text_rows(cfg, names))
    dataset = engine_data.train_dataset(cfg, len(names))
    loader = engine_data.train_loader(cfg, dataset)
    accum = accumulation_steps(cfg, world.size)
    steps_per_epoch = len(loader) // accum
    if steps_per_epoch == 0:
        raise ConfigError(f"{len(dataset)} training videos give no full optimizer step with "
                          f"batch {cfg.TRAIN.BATCH_SIZE} x {world.size} x accumulation {accum}")
    total = steps_per_epoch * cfg.TRAIN.EPOCHS
    if cfg.TRAIN.MAX_STEPS:
        total = min(total, cfg.TRAIN.MAX_STEPS)
    return names, model, tokens, dataset, loader, accum, steps_per_epoch, total


def _setup(cfg: Config, world: World, *, resume: str | None, auto_resume: bool,
           allow_changed_settings: bool, say: Any) -> tuple:
    """Everything a run needs, built and checked before anything is written to OUTPUT:
    model, data, optimizer, schedule and (when resuming) the checkpoint's state."""
    (names, model, tokens, dataset, loader, accum, steps_per_epoch,
     total) = _build(cfg, world)
    out, dev = Path(cfg.OUTPUT), world.device
    t = cfg.TRAIN
    optimizer = build_optimizer(model, t.LR, t.WEIGHT_DECAY, t.NEW_PARAM_LR_MULT,
                                tuple(t.BETAS), t.EPS)
    schedule = WarmupCosine(optimizer, t.LR, total, round(t.WARMUP_EPOCHS * steps_per_epoch),
                            t.MIN_LR_RATIO)
    scaler = torch.amp.GradScaler(dev.type) if t.AMP == "fp16" else None
    settings = run_settings(cfg, world.size, accum, steps_per_epoch, total, len(dataset))

    step, best, state = 0, None, None
    if not resume and auto_resume:
        found = latest_checkpoint(out)
        resume = str(found) if found else None
        if not resume:
            say(f"no checkpoint in {out} to resume: starting from scratch")
    if resume:
        state = load_checkpoint(resume)
        check_resume_settings(resume, state, settings, allow=allow_changed_settings, say=say)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        step, best = state["step"], state["best"]
        set_rng_state(state["rng"])  # again after a mid-epoch resume's loader has started
        within = step % steps_per_epoch
        where = f" (epoch {step // steps_per_epoch}, step {within} of {steps_per_epoch})" \
            if within else ""
        say(f"resumed from {resume} at step {step}{where}")
    return (names, model, tokens, dataset, loader, accum, steps_per_epoch, total, optimizer,
            schedule, scaler, settings, step, best, state)


def train(cfg: Config, *, resume: str | None = None, auto_resume: bool = False,
          overwrite: bool = False, allow_changed_settings: bool = False,
          log: Any = print, device: str | None = None) -> dict[str, Any]:
    """Run training as configured; returns the final metrics.

    ``resume``: a training checkpoint to continue; ``auto_resume``: continue from
    OUTPUT/last.pth when there is one; ``overwrite``: start over in an OUTPUT that holds an
    earlier run (its run files are replaced); ``allow_changed_settings``: resume even when
    the schedule / data-order settings differ from the checkpoint's (with a warning)."""
    world: World = init_distributed(device)
    dev = world.device
    if cfg.DETERMINISTIC:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.SEED + world.rank)
    out = Path(cfg.OUTPUT)
    say = log if world.is_main else (lambda *_: None)
    continuing = bool(resume or auto_resume)
    existed = out.exists()
    # read-only until everything below is built: a start that fails leaves OUTPUT as it was
    entries = check_output(out, continuing=continuing, overwrite=overwrite) \
        if world.is_main else []
    try:
        built = _setup(cfg, world, resume=resume, auto_resume=auto_resume,
                       allow_changed_settings=allow_changed_settings, say=say)
    except BaseException:
        if world.is_main:
            _undo_manifest(cfg, out, entries, existed)
        raise
    (names, model, tokens, dataset, loader, accum, steps_per_epoch, total, optimizer,
     schedule, scaler, settings, step, best, resumed) = built
    t = cfg.TRAIN
    start_epoch = step // steps_per_epoch
    if world.is_main:
        if overwrite and entries:
            keep = {_manifest_name(cfg)} if cfg.DATA.FEW_SHOT_K > 0 else set()
            replaced, left = clear_previous_run(out, entries, keep)
            say(f"--overwrite: starting over in {out}, replacing "
                f"{', '.join(replaced) or 'nothing'}"
                + (f" (left as they are: {', '.join(left)})" if left else ""))
        save_config(cfg, out / "config.yaml")

    step_module: nn.Module = TrainStep(model)
    if world.size > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[dev.index] if dev.type == "cuda" else None)
    say(parameter_summary(model))
    say(f"{len(dataset)} training videos, {len(names)} classes, {tokens.shape[0]} text rows; "
        f"batch {t.BATCH_SIZE} x {world.size} process(es) x {accum} accumulation = "
        f"{t.BATCH_SIZE * world.size * accum}; {steps_per_epoch} steps/epoch, {total} steps")
    metrics = MetricsLog(out, enabled=world.is_main)
    text_feats = None
    if cfg.MODEL.FIX_TEXT:  # frozen text tower: encode every row once (eval mode, no grad)
        text_feats = encode_text_rows(model, tokens, dev)
    failures = LoadReport(len(dataset))
    skipped_steps = resumed.get("skipped_steps", 0) if resumed else 0
    result: dict[str, Any] = {}
    stopper = StopSignals(t.STOP_SIGNALS, say=say)
    with stopper:
        step, best, skipped_steps, stopped, result = _loop(
            cfg, world, model, step_module, optimizer, schedule, scaler, dataset, loader,
            names, tokens, text_feats, accum, steps_per_epoch, total, settings, metrics,
            failures, stopper, resumed, start_epoch, step, best, skipped_steps, say)
    if failures.failures:
        say(f"{len(failures.failures)} video load failure(s) during training (replaced); "
            f"first: {failures.failures[0]}")
    metrics.close()
    if stopped is not None:
        barrier()  # no rank exits (and gets its launcher to kill the rest) before the save
        saved = out / "last.pth" if world.is_main else None
        say(f"stopped on {stopped} after step {step} of {total}; saved {out / 'last.pth'}; "
            f"exiting with code {STOPPED_EXIT_CODE}: continue with --auto-resume")
        raise TrainingStopped(stopped, step, saved)
    return {"step": step, "best_top1": best, "skipped_steps": skipped_steps,
            "bad_videos": len(failures.failures), **result}


def _loop(cfg: Config, world: World, model: nn.Module, step_module: nn.Module,
          optimizer: Any, schedule: Any, scaler: Any, dataset: Any, loader: Any,
          names: list[str], tokens: torch.Tensor, text_feats: torch.Tensor | None,
          accum: int, steps_per_epoch: int, total: int, settings: dict[str, Any],
          metrics: MetricsLog, failures: LoadReport, stopper: StopSignals,
          resumed: dict[str, Any] | None, start_epoch: int, step: int, best: float | None,
          skipped_steps: int, say: Any) -> tuple:
    """The epochs from ``start_epoch`` (from ``step`` inside it when resuming mid-epoch);
    returns (step, best, skipped steps, stop signal or None, last evaluation)."""
    t, dev, out = cfg.TRAIN, world.device, Path(cfg.OUTPUT)
    result: dict[str, Any] = {}
    stopped: str | None = None

    # what `claver predict --model` needs to score the training classes the way training did
    text = {"classes": list(names), "templates": engine_data.templates(cfg)}

    def save_last(epoch: int, because: str, epoch_rng: dict[str, Any] | None) -> None:
        if world.is_main:
            save_checkpoint(out / "last.pth", model=model, optimizer=optimizer, scaler=scaler,
                            epoch=epoch, step=step, run_config=cfg.to_dict(), best=best,
                            extra=text,
                            settings=settings, step_in_epoch=step - epoch * steps_per_epoch,
                            rng_epoch_start=epoch_rng, saved_because=because,
                            skipped_steps=skipped_steps)

    model.train()
    for epoch in range(start_epoch, cfg.TRAIN.EPOCHS):
        if step >= total:
            break
        dataset.set_epoch(epoch)
        done_in_epoch = step - epoch * steps_per_epoch
        sampler = SkipSampler(loader.sampler, done_in_epoch * accum * t.BATCH_SIZE)
        sampler.set_epoch(epoch)
        epoch_loader = loader_with_sampler(loader, sampler)  # same workers and timeout
        progress = _progress(world, steps_per_epoch - done_in_epoch, f"epoch {epoch}")
        tick, wait, seen, micro, losses = time.perf_counter(), 0.0, 0, 0, []
        # Starting a loader draws from the global torch RNG (its worker seeds): a mid-epoch
        # resume starts it from the state the interrupted epoch started from, then goes on
        # from the state saved at the step it stopped after
        mid_resume = done_in_epoch > 0 and resumed is not None and \
            resumed.get("rng_epoch_start") is not None
        if mid_resume:
            set_rng_state(resumed["rng_epoch_start"])
        epoch_rng = rng_state()
        batches = iter(epoch_loader)
        if mid_resume:
            set_rng_state(resumed["rng"])
        resumed = None
        fetch = time.perf_counter()
        for batch in batches:
            wait += time.perf_counter() - fetch
            failures.failures.extend(batch["failures"])
            last = micro == accum - 1
            defer = world.size > 1 and not last  # no gradient all-reduce until the last

            def sync(defer: bool = defer) -> contextlib.AbstractContextManager:
                return step_module.no_sync() if defer else contextlib.nullcontext()

            with sync(), amp_context(dev, t.AMP):
                loss = compute_loss(cfg, step_module, batch, tokens, len(names), step, micro,
                                    dev, text_feats) / accum
            finite = math.isfinite(all_reduce_mean(float(loss.detach())))
            if finite:
                with sync():
                    (scaler.scale(loss) if scaler else loss).backward()
            losses.append(float(loss.detach()) * accum)
            seen += len(batch["index"]) * world.size
            micro += 1
            if last:
                micro = 0
                lr = schedule.apply(step)
                if not finite or not all(math.isfinite(x) for x in losses[-accum:]):
                    skipped_steps += 1
                    optimizer.zero_grad(set_to_none=True)
                    say(f"step {step}: non-finite loss, step skipped "
                        f"({skipped_steps} so far)")
                else:
                    if scaler:
                        scaler.unscale_(optimizer)
                    if t.CLIP_GRAD > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), t.CLIP_GRAD)
                    if scaler:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step += 1
                elapsed = time.perf_counter() - tick
                record = {"step": step, "epoch": epoch, "loss": sum(losses[-accum:]) / accum,
                          "lr": lr, "clips_per_s": seen / max(elapsed, 1e-9),
                          "data_wait": wait / max(elapsed, 1e-9),
                          "mem_mb": _memory_mb(dev), "skipped_steps": skipped_steps,
                          "bad_videos": len(failures.failures)}
                progress(record)
                if step % cfg.PRINT_FREQ == 0 or step == total:
                    metrics.write(record)
                if step >= total:
                    break
                # every rank stops after the same step: one that got the signal tells all
                if any_rank(stopper.received is not None):
                    stopped = stopper.received or "a stop signal on another rank"
                end_of_epoch = step % steps_per_epoch == 0
                if stopped:  # saved below at an epoch end
                    if not end_of_epoch:
                        save_last(epoch, f"signal {stopped}", epoch_rng)
                    break
                if t.SAVE_EVERY and step % t.SAVE_EVERY == 0 and not end_of_epoch:
                    save_last(epoch, f"every {t.SAVE_EVERY} steps", epoch_rng)
            fetch = time.perf_counter()
        progress(None)
        end_of_epoch = step % steps_per_epoch == 0 or step >= total
        if end_of_epoch and ((epoch + 1) % cfg.SAVE_FREQ == 0 or step >= total or stopped):
            save_last(epoch, "end of training" if step >= total else "epoch end", epoch_rng)
        if stopped:  # no validation in a preemption's grace period
            break
        if cfg.DATA.VAL_FILE and end_of_epoch:
            result = run_evaluation(cfg, model, names, dev, log=say, tag=f"epoch{epoch}")
            if world.is_main and (best is None or result["top1"] > best):
                best = result["top1"]
                save_checkpoint(out / "best.pth", model=model, optimizer=None, scaler=None,
                                epoch=epoch, step=step, run_config=cfg.to_dict(), best=best,
                                extra=text, settings=settings,
                                step_in_epoch=step - epoch * steps_per_epoch,
                                saved_because="best")
    return step, best, skipped_steps, stopped, result


def run_evaluation(cfg: Config, model: nn.Module, names: list[str], dev: torch.device, *,
                   log: Any = print, tag: str = "test", list_file: str | None = None,
                   checkpoint: str | None = None) -> dict[str, Any]:
    """Evaluate on DATA.VAL_FILE (or ``list_file``), write result files (naming
    ``checkpoint``, the weights evaluated, when given), return metrics."""
    dataset = engine_data.eval_dataset(cfg, len(names), list_file)
    loader = engine_data.eval_loader(cfg, dataset)
    tokens = engine_data.tokenize_rows(engine_data.text_rows(cfg, names))
    result = evaluate(model, loader, tokens, device=dev, amp=cfg.TRAIN.AMP, class_names=names)
    log(f"[{tag}] {result.summary()}")
    summary = write_eval_outputs(cfg, result, names, tokens.shape[0], tag,
                                 checkpoint=checkpoint)
    return summary


def _progress(world: World, total: int, desc: str) -> Any:
    """A callable updating a tqdm bar with the latest record (None closes it)."""
    if not world.is_main:
        return lambda record: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)

    def update(record: dict | None) -> None:
        if record is None:
            bar.close()
            return
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                        clips_s=f"{record['clips_per_s']:.1f}",
                        wait=f"{record['data_wait']:.0%}", mem=f"{record['mem_mb']:.0f}MB")

    return update
