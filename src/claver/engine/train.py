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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from claver.data.dataset import VideoLoadError, loader_with_sampler
from claver.data.mixup import mixup_cutmix, smooth_one_hot
from claver.engine import data as engine_data
from claver.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from claver.engine.config import Config, ConfigError, origin, save_config
from claver.engine.distributed import (
    World,
    all_gather_objects,
    all_reduce_mean,
    any_rank,
    barrier,
    gather_batch,
    init_distributed,
    rank,
    world_size,
)
from claver.engine.evaluate import amp_context, encode_text_rows, evaluate
from claver.engine.losses import actionclip_loss, soft_target_cross_entropy
from claver.engine.optim import WarmupCosine, build_optimizer
from claver.engine.preemption import (  # noqa: F401 - STOPPED_EXIT_CODE, stop_requested: API
    STOPPED_EXIT_CODE,
    StopSignals,
    TrainingStopped,
    stop_requested,
)
from claver.engine.reporting import BadVideoLog, MetricsLog, write_eval_outputs
from claver.engine.run_folder import (  # noqa: F401 - the errors: API
    ChangedSettingsError,
    OutputExistsError,
    check_output,
    check_resumable,
    check_resume_settings,
    clear_previous_run,
    manifest_name,
    run_settings,
    undo_manifest,
)
from claver.engine.runlog import Progress, RunLog
from claver.figures import training_curves


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


def _step_generator(cfg: Config, step: int, micro: int, stream: str = "",
                    rank: int = 0) -> torch.Generator:
    """A generator that is a pure function of (SEED, step, micro-batch[, stream, rank]), so a
    resumed run draws exactly what the uninterrupted one did. The default stream (mixup) keeps
    its historical seed; a named ``stream`` (e.g. ``"rows"``) gets an independent one."""
    if not stream:
        return torch.Generator().manual_seed(cfg.SEED * 1_000_003 + step * 101 + micro)
    key = f"{cfg.SEED}/{step}/{micro}/{rank}/{stream}".encode()
    return torch.Generator().manual_seed(
        int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)


def compute_loss(cfg: Config, step_module: nn.Module, batch: dict[str, Any],
                 tokens: torch.Tensor, num_classes: int, step: int, micro: int,
                 device: torch.device, text_feats: torch.Tensor | None) -> torch.Tensor:
    """Loss of one micro-batch (see the module docstring). TRAIN.TEXT_ROW_DRAW "official":
    K = TRAIN.TEXT_ROWS text rows drawn with replacement for every micro-batch on every rank
    (``torch.randint(R, (K,))`` as the official loop); "per_step": K distinct rows once per
    optimizer step, shared by its micro-batches and ranks (accumulation and DDP then equal
    one big batch). Mixup draws per micro-batch. Every draw is a function of
    (SEED, step, micro-batch, rank)."""
    gen = _step_generator(cfg, step, micro)
    video = batch["video"].to(device, non_blocking=True)
    labels = batch["label"]
    t = cfg.TRAIN
    if t.LOSS == "actionclip":
        # one template per sample, drawn for the whole micro-batch of all ranks (the original
        # computes the in-batch loss over the whole batch: DataParallel gathers it); each rank
        # takes its samples' draws, embeddings and labels are gathered back in that order
        hard = labels if labels.dim() == 1 else labels.argmax(1)
        world, here = world_size(), rank()
        rows = torch.randint(tokens.shape[0], (len(hard) * world,), generator=gen)[here::world]
        text = tokens[rows, hard].to(device)
        v, e = step_module(video, text, pairwise=True)
        model = getattr(step_module, "module", step_module).model
        return actionclip_loss(gather_batch(v), gather_batch(e),
                               gather_batch(hard.to(device)), model.logit_scale)
    if t.MIXUP > 0 or t.CUTMIX > 0:
        video, targets = mixup_cutmix(video, labels.to(device), num_classes,
                                      mixup_alpha=t.MIXUP, cutmix_alpha=t.CUTMIX,
                                      switch_prob=t.MIXUP_SWITCH_PROB,
                                      label_smoothing=t.LABEL_SMOOTH, generator=gen)
    else:  # hard labels work too (the reference code crashed here)
        targets = smooth_one_hot(labels.to(device), num_classes, t.LABEL_SMOOTH)
    if t.TEXT_ROW_DRAW == "per_step":
        rows = torch.randperm(tokens.shape[0], generator=_step_generator(cfg, step, -1))[
            : min(t.TEXT_ROWS, tokens.shape[0])]
    else:  # official: with replacement, per micro-batch and rank
        rows = torch.randint(tokens.shape[0], (t.TEXT_ROWS,),
                             generator=_step_generator(cfg, step, micro, "rows", rank()))
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
        t = cfg.TRAIN
        why = (f"TRAIN.EFFECTIVE_BATCH_SIZE={t.EFFECTIVE_BATCH_SIZE} (from "
               f"{origin(cfg, 'TRAIN.EFFECTIVE_BATCH_SIZE')}) asks for {accum} batches of "
               f"{t.BATCH_SIZE} x {world.size} process(es) per optimizer step"
               if accum > 1 else f"one step takes {t.BATCH_SIZE} x {world.size} process(es)")
        fix = ("lower it (TRAIN.EFFECTIVE_BATCH_SIZE=0: no accumulation)" if accum > 1 else
               "lower TRAIN.BATCH_SIZE")
        raise ConfigError(f"{len(dataset)} training videos give no full optimizer step: {why} "
                          f"but an epoch has {len(loader)} batch(es); {fix} or train on more "
                          "videos")
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
        check_resumable(resume, state, model, out)
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
    the schedule / data-order settings differ from the checkpoint's (with a warning).
    ``log`` receives every message of rank 0 (all of them also go to ``OUTPUT/train.log``);
    other ranks print nothing."""
    world: World = init_distributed(device)
    if cfg.DETERMINISTIC:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.SEED + world.rank)
    out = Path(cfg.OUTPUT)
    say = RunLog(log, enabled=world.is_main)
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
            undo_manifest(cfg, out, entries, existed)
        raise
    (names, model, tokens, dataset, loader, accum, steps_per_epoch, total, optimizer,
     schedule, scaler, settings, step, best, resumed) = built
    t = cfg.TRAIN
    start_epoch = step // steps_per_epoch
    if world.is_main:
        if overwrite and entries:
            keep = {manifest_name(cfg)} if cfg.DATA.FEW_SHOT_K > 0 else set()
            replaced, left = clear_previous_run(out, entries, keep)
            say(f"--overwrite: starting over in {out}, replacing "
                f"{', '.join(replaced) or 'nothing'}"
                + (f" (left as they are: {', '.join(left)})" if left else ""))
        save_config(cfg, out / "config.yaml")
        say.attach(out / "train.log")

    step_module: nn.Module = TrainStep(model)
    if world.size > 1:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    if resumed is None:  # the table once per run, not again at every resume
        say(parameter_summary(model))
    say(f"{len(dataset)} training videos, {len(names)} classes, {tokens.shape[0]} text rows; "
        f"batch {t.BATCH_SIZE} x {world.size} process(es) x {accum} accumulation = "
        f"{t.BATCH_SIZE * world.size * accum}; {steps_per_epoch} steps/epoch, {total} steps")
    run = _Run(cfg, world, say, names, tokens, accum, steps_per_epoch, total, settings,
               MetricsLog(out, enabled=world.is_main,
                          resume_step=step if resumed is not None else None),
               BadVideoLog(out, world.rank))
    text_feats = None
    if cfg.MODEL.FIX_TEXT:  # frozen text tower: encode every row once (eval mode, no grad)
        text_feats = encode_text_rows(model, tokens, world.device)
    skipped_steps = resumed.get("skipped_steps", 0) if resumed else 0
    stopper = StopSignals(t.STOP_SIGNALS, say=say)
    try:
        with stopper:
            step, best, skipped_steps, stopped, result = _loop(
                run, model, step_module, optimizer, schedule, scaler, dataset, loader,
                text_feats, stopper, resumed, start_epoch, step, best, skipped_steps)
    except VideoLoadError as e:
        if cfg.DATA.ON_ERROR != "raise":
            raise
        raise VideoLoadError(f"{e} [DATA.ON_ERROR=raise stops at the first bad video: fix or "
                             "drop it, or set DATA.ON_ERROR=skip to replace bad videos and list "
                             "them in OUTPUT/bad_videos.jsonl]") from None
    finally:
        run.metrics.close()
    if stopped is not None:
        barrier()  # no rank exits (and gets its launcher to kill the rest) before the save
        saved = out / "last.pth" if world.is_main else None
        say(f"stopped on {stopped} after step {step} of {total}; saved {out / 'last.pth'}; "
            f"exiting with code {STOPPED_EXIT_CODE}: continue with --auto-resume")
        say.close()
        raise TrainingStopped(stopped, step, saved)
    bad = sum(all_gather_objects(run.bad_total))
    best_part = (f"best top-1 {best:.2%} ({out / 'best.pth'})" if best is not None else
                 "no validation (DATA.VAL_FILE is empty or VAL.EVERY=0)")
    say(f"done: {step} steps, {best_part}; last checkpoint {out / 'last.pth'}; metrics "
        f"{out / 'metrics.jsonl'}, log {out / 'train.log'}"
        + (f"; {bad} bad video load(s), see {out / 'bad_videos.jsonl'}" if bad else ""))
    say.close()
    return {"step": step, "best_top1": best, "skipped_steps": skipped_steps,
            "bad_videos": bad, **result}


class _Run:
    """What every part of the loop reads: config, world, log, text, step counts, outputs."""

    def __init__(self, cfg: Config, world: World, say: RunLog, names: list[str],
                 tokens: torch.Tensor, accum: int, steps_per_epoch: int, total: int,
                 settings: dict[str, Any], metrics: MetricsLog, bad: BadVideoLog) -> None:
        self.cfg, self.world, self.say, self.names, self.tokens = cfg, world, say, names, tokens
        self.accum, self.steps_per_epoch, self.total = accum, steps_per_epoch, total
        self.settings, self.metrics, self.bad = settings, metrics, bad
        self.bad_total = 0  # video load failures on this rank
        self.out = Path(cfg.OUTPUT)
        # what `claver predict --model` needs to score the training classes as training did
        self.text = {"classes": list(names), "templates": engine_data.templates(cfg)}


def _loop(run: _Run, model: nn.Module, step_module: nn.Module, optimizer: Any, schedule: Any,
          scaler: Any, dataset: Any, loader: Any, text_feats: torch.Tensor | None,
          stopper: StopSignals, resumed: dict[str, Any] | None, start_epoch: int, step: int,
          best: float | None, skipped_steps: int) -> tuple:
    """The epochs from ``start_epoch`` (from ``step`` inside it when resuming mid-epoch);
    returns (step, best, skipped steps, stop signal or None, last evaluation)."""
    cfg, world, say = run.cfg, run.world, run.say
    t, dev, out, accum = cfg.TRAIN, world.device, run.out, run.accum
    steps_per_epoch, total = run.steps_per_epoch, run.total
    result: dict[str, Any] = {}
    stopped: str | None = None
    last_save = time.monotonic()

    def save_last(epoch: int, because: str, epoch_rng: dict[str, Any] | None) -> None:
        nonlocal last_save
        last_save = time.monotonic()
        if world.is_main:
            save_checkpoint(out / "last.pth", model=model, optimizer=optimizer, scaler=scaler,
                            epoch=epoch, step=step, run_config=cfg.to_dict(), best=best,
                            extra=run.text, settings=run.settings,
                            step_in_epoch=step - epoch * steps_per_epoch,
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
        progress = Progress(min(steps_per_epoch, total - epoch * steps_per_epoch) -
                            done_in_epoch, f"epoch {epoch}", log=say,
                            interval=cfg.LOG_INTERVAL, enabled=world.is_main)
        tick, wait, seen, micro, losses, epoch_bad = time.perf_counter(), 0.0, 0, 0, [], 0
        first_step = step
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
        try:
            for batch in batches:
                wait += time.perf_counter() - fetch
                if batch["failures"]:
                    run.bad.write(batch["failures"], epoch, step)
                    epoch_bad += len(batch["failures"])
                    run.bad_total += len(batch["failures"])
                last = micro == accum - 1
                defer = world.size > 1 and not last  # no gradient all-reduce until the last

                def sync(defer: bool = defer) -> contextlib.AbstractContextManager:
                    return step_module.no_sync() if defer else contextlib.nullcontext()

                with sync(), amp_context(dev, t.AMP):
                    loss = compute_loss(cfg, step_module, batch, run.tokens, len(run.names),
                                        step, micro, dev, text_feats) / accum
                finite = math.isfinite(all_reduce_mean(float(loss.detach())))
                if finite:
                    with sync():
                        (scaler.scale(loss) if scaler else loss).backward()
                losses.append(float(loss.detach()) * accum)
                seen += len(batch["index"]) * world.size
                micro += 1
                if not last:
                    fetch = time.perf_counter()
                    continue
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
                          "bad_videos": run.bad_total}
                progress.update(1, loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}",
                                clips_s=f"{record['clips_per_s']:.1f}",
                                wait=f"{record['data_wait']:.0%}")
                if step % cfg.PRINT_FREQ == 0 or step == total:
                    run.metrics.write(record)
                # the epoch's last full step: micro-batches left over (fewer than
                # accumulation) are not run, so no gradient leaks into the next epoch
                end_of_epoch = step % steps_per_epoch == 0
                if step >= total:
                    break
                # every rank stops (and saves) after the same step: one that got the signal,
                # or rank 0's clock for TRAIN.SAVE_EVERY_MINUTES, decides for all
                minutes_due = (t.SAVE_EVERY_MINUTES > 0 and world.is_main and
                               time.monotonic() - last_save >= 60 * t.SAVE_EVERY_MINUTES)
                signal_seen, minutes_due = any_rank(stopper.received is not None, minutes_due)
                if signal_seen:
                    stopped = stopper.received or "a stop signal on another rank"
                if stopped:  # saved below at an epoch end
                    if not end_of_epoch:
                        save_last(epoch, f"signal {stopped}", epoch_rng)
                    break
                if end_of_epoch:
                    break
                if t.SAVE_EVERY and step % t.SAVE_EVERY == 0:
                    save_last(epoch, f"every {t.SAVE_EVERY} steps", epoch_rng)
                elif minutes_due:
                    save_last(epoch, f"every {t.SAVE_EVERY_MINUTES:g} minutes", epoch_rng)
                fetch = time.perf_counter()
        finally:
            progress.close()
        end_of_epoch = step % steps_per_epoch == 0 or step >= total
        epoch_bad = sum(all_gather_objects(epoch_bad))
        say(f"epoch {epoch}: steps {first_step + 1}-{step} of {total}"
            + (f", mean loss {sum(losses) / len(losses):.4f}" if losses else "")
            + f", {time.perf_counter() - tick:.1f} s, {epoch_bad} bad video load(s)"
            + (f" (replaced; see {out / 'bad_videos.jsonl'})" if epoch_bad else ""))
        if end_of_epoch and ((epoch + 1) % cfg.SAVE_FREQ == 0 or step >= total or stopped):
            save_last(epoch, "end of training" if step >= total else "epoch end", epoch_rng)
        if stopped:  # no validation in a preemption's grace period
            break
        every = cfg.VAL.EVERY
        if cfg.DATA.VAL_FILE and end_of_epoch and every and (
                (epoch + 1) % every == 0 or step >= total):
            result = run_evaluation(cfg, model, run.names, dev, log=say, tag=f"epoch{epoch}",
                                    protocol=cfg.VAL)
            run.metrics.write({"step": step, "epoch": epoch, "val_top1": result["top1"],
                               "val_top5": result["top5"],
                               "val_mean_class_acc": result["mean_class_acc"]})
            if world.is_main:
                training_curves(run.metrics.path, out / "curves.png")
            if world.is_main and (best is None or result["top1"] > best):
                best = result["top1"]
                save_checkpoint(out / "best.pth", model=model, optimizer=None, scaler=None,
                                epoch=epoch, step=step, run_config=cfg.to_dict(), best=best,
                                extra=run.text, settings=run.settings,
                                step_in_epoch=step - epoch * steps_per_epoch,
                                saved_because="best validation top-1")
    return step, best, skipped_steps, stopped, result


def run_evaluation(cfg: Config, model: nn.Module, names: list[str], dev: torch.device, *,
                   log: Any = print, tag: str = "test", list_file: str | None = None,
                   checkpoint: str | None = None, protocol: Any = None) -> dict[str, Any]:
    """Evaluate on DATA.VAL_FILE (or ``list_file``) with the views of ``protocol``
    (``cfg.TEST``, the default, or ``cfg.VAL``), showing progress; write the result files
    (naming ``checkpoint``, the weights evaluated, when given) and say where; return the
    metrics."""
    views = protocol or cfg.TEST
    dataset = engine_data.eval_dataset(cfg, len(names), list_file, protocol=views)
    loader = engine_data.eval_loader(cfg, dataset, protocol=views)
    tokens = engine_data.tokenize_rows(engine_data.text_rows(cfg, names))
    say = log if isinstance(log, RunLog) else RunLog(log, enabled=rank() == 0)
    progress = Progress(len(loader.sampler), f"[{tag}] evaluating", log=say, unit="videos",
                        interval=cfg.LOG_INTERVAL, enabled=rank() == 0)
    try:
        result = evaluate(model, loader, tokens, device=dev, amp=cfg.TRAIN.AMP,
                          class_names=names, progress=progress.update,
                          logit_scale=cfg.TEST.LOGIT_SCALE)
    finally:
        progress.close()
    summary = write_eval_outputs(cfg, result, names, tokens.shape[0], tag,
                                 checkpoint=checkpoint, protocol=views)
    written = Path(cfg.OUTPUT) / "eval" / f"{tag}.json"
    say(f"[{tag}] {result.summary()}; results in {written} (+ {tag}_predictions.jsonl, "
        f"{tag}_confusion.png)")
    return summary
