"""The wallclock training loop of PR #1533 (spec §3.2, §4).

One step: forward/backward over the rank's micro-batches → gradient clip (on the *local*
gradients, as the record does; ``fix_clip_after_reduce`` clips the all-reduced ones) →
launch the banks' reduce-scatters → all-reduce the replicated parameters and step AdamW →
Muon on the rank's bank shards, all-gathered back → EMA update. No DDP wrapper.

The host keeps ahead of the GPU: the micro-batches come from ``golf.prefetch`` one at
a time, made ahead in a thread, and the loss is read (a sync) only at logging steps. The record
logs every N steps too; with several ranks the wallclock-stop check syncs every step, as there.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from tqdm import tqdm  # the console bar: in a kernel (plots import this module) no IProgress warning

from golf.compile_policy import prepare_compile, set_fast_matmul, use_compile
from golf.config import Config, differences_from_record, save_config
from golf.config_rules import EMA_INIT_SHARE_WARN, ema_init_share, inert_settings
from golf.banking import save_checkpoint
from golf.model import BOS_ID, GPT, build_model
from golf.muon import BankMuon, ns_coefficients, zeropower_via_newtonschulz
from golf.prefetch import PrefetchLoader
from golf.runs import MODEL, RunDir
from golf.runtime import (
    DistInfo, GolfError, JsonlWriter, all_reduce_, atomic_write_json, bar_interval, environment_record,
    write_code_diff,
)

log = logging.getLogger("golf")


def lr_multiplier(frac: float, warmdown_frac: float, min_lr: float) -> float:
    """Flat, then linear warmdown to ``min_lr`` over the last ``warmdown_frac`` of training (spec §4.4)."""
    if frac < 1.0 - warmdown_frac:
        return 1.0
    return max((1.0 - frac) / warmdown_frac, min_lr)


def muon_momentum_at(step: int, cfg: Config) -> float:
    f = min(step / cfg.muon_momentum_warmup_steps, 1.0) if cfg.muon_momentum_warmup_steps > 0 else 1.0
    return (1 - f) * cfg.muon_momentum_warmup_start + f * cfg.muon_momentum


def muon_wd_multiplier(frac: float, cfg: Config) -> float:
    """The late Muon weight-decay taper of #1729: 1 until ``muon_wd_taper_at`` of the budget, then
    linear to ``muon_wd_taper_final`` at its end; always 1 when the taper is off (0)."""
    start = cfg.muon_wd_taper_at
    if start <= 0 or frac <= start:
        return 1.0
    return 1.0 - (1.0 - cfg.muon_wd_taper_final) * min((frac - start) / (1.0 - start), 1.0)


def grad_accum_steps(cfg: Config, world_size: int) -> int:
    if cfg.grad_accum_total % world_size:
        raise GolfError(f"params key 'grad_accum_total' ({cfg.grad_accum_total}) must be a multiple of the "
                        f"world size ({world_size})")
    return cfg.grad_accum_total // world_size


def micro_batch_seqs(cfg: Config, world_size: int) -> int:
    per_micro = cfg.train_batch_tokens // (world_size * grad_accum_steps(cfg, world_size))
    if per_micro % cfg.train_seq_len or per_micro == 0:
        raise GolfError(f"params key 'train_batch_tokens' ({cfg.train_batch_tokens}) must split into whole "
                        f"{cfg.train_seq_len}-token sequences over {world_size} ranks x grad accumulation")
    return per_micro // cfg.train_seq_len


class Trainer:
    """Optimizers and the step of spec §3.2 around a built model; usable without a run folder."""

    def __init__(self, model: GPT, cfg: Config, dist: DistInfo):
        self.model, self.cfg, self.dist = model, cfg, dist
        fused = next(model.parameters()).is_cuda
        self.muon = BankMuon(model.bank_params(), lr=cfg.matrix_lr, momentum=cfg.muon_momentum_warmup_start,
                             weight_decay=cfg.muon_wd, row_normalize=cfg.muon_row_normalize,
                             ns_steps=cfg.muon_backend_steps, coefficients=ns_coefficients(cfg.muon_ns_coefficients))
        betas = (cfg.beta1, cfg.beta2)
        self.adam_embed = torch.optim.AdamW([model.tok_emb.weight], lr=cfg.tied_embed_lr, betas=betas,
                                            eps=cfg.adam_eps, weight_decay=cfg.embed_wd, fused=fused)
        self.adam_scalar = torch.optim.AdamW(model.scalar_params(), lr=cfg.scalar_lr, betas=betas,
                                             eps=cfg.adam_eps, weight_decay=cfg.adam_wd, fused=fused)
        self.optimizers = (self.muon, self.adam_embed, self.adam_scalar)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
        for group in self.muon.param_groups:
            group["base_wd"] = group["weight_decay"]

    def set_schedule(self, lr_mult: float, step: int, frac: float = 0.0) -> None:
        """Learning rates at ``lr_mult`` of their base, Muon momentum for ``step``, and Muon weight
        decay for ``frac`` of the budget done (the taper; unchanged when it is off)."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_mult
        wd_mult = muon_wd_multiplier(frac, self.cfg)
        for group in self.muon.param_groups:
            group["momentum"] = muon_momentum_at(step, self.cfg)
            group["weight_decay"] = group["base_wd"] * wd_mult

    def replicated_params(self) -> list[torch.nn.Parameter]:
        return [self.model.tok_emb.weight, *self.model.scalar_params()]

    def step(self, micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]], forward=None,
             n_micro: int | None = None) -> torch.Tensor:
        """One optimizer step over this rank's micro-batches; returns the rank's mean loss, a 0-d device tensor.

        The micro-batches are taken one at a time, so a lazy iterator's loading overlaps the GPU work
        of the previous micro-batch; it must come with ``n_micro`` (each loss is scaled by 1/n_micro
        before its backward). The loss stays on the device: ``.item()`` waits for the GPU, so the
        training loop reads it only at logging steps.
        """
        forward = self.model if forward is None else forward
        if n_micro is None:
            if not hasattr(micro_batches, "__len__"):
                raise TypeError("Trainer.step: pass n_micro with a lazy iterator of micro-batches")
            n_micro = len(micro_batches)
        loss_sum, seen = None, 0
        for x, y in micro_batches:
            loss = forward(x, y) / n_micro
            loss.backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            seen += 1
        if seen != n_micro:
            raise ValueError(f"Trainer.step: got {seen} micro-batches, expected n_micro={n_micro}")
        params = list(self.model.parameters())
        for p in params:  # a parameter unused in this phase still takes part in the collectives
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.cfg.fix_clip_after_reduce:
            # §9.6 fixed: average every gradient first, then clip the true global gradient.
            for p in params:
                all_reduce_(p.grad, "avg")
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip_norm)
            self.muon.launch_reduce_scatters()
        else:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip_norm)  # local gradients (§9.6)
            self.muon.launch_reduce_scatters()
            for p in self.replicated_params():
                all_reduce_(p.grad, "avg")
        self.adam_embed.step()
        self.adam_scalar.step()
        self.muon.step()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return loss_sum if loss_sum is not None else torch.full((), math.nan)


class EMA:
    """fp32 exponential moving average of the full state dict (spec §4.5)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
        self._targets = list(self.shadow.values())

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        # one fused lerp over all 52 tensors; .float() is free for the fp32 ones
        sources = [v.float() for v in model.state_dict().values()]
        torch._foreach_lerp_(self._targets, sources, 1.0 - self.decay)

    @torch.no_grad()
    def apply_to(self, model: torch.nn.Module) -> None:
        own = model.state_dict()
        model.load_state_dict({k: self.shadow[k].to(own[k].dtype) for k in own})


@dataclass
class TrainResult:
    steps: int
    train_ms: float
    looping_at_step: int | None
    prequant: dict
    summary: dict


def _peak_mem_mib(device: torch.device) -> float | None:
    """Peak allocated GPU memory; None (null in the metrics) where there is no GPU to measure."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def shuffled_loader(cfg: Config, dist: DistInfo):
    """The rank's shuffled loader of train_seq_len windows (spec §1.5)."""
    from golf.loaders import ShuffledSequenceLoader
    from golf.shards import list_shards

    return ShuffledSequenceLoader(list_shards(cfg.data_dir, "train"), dist.rank, dist.world_size, cfg.train_seq_len,
                                  micro_batch_seqs(cfg, dist.world_size),
                                  seed=cfg.seed if cfg.fix_seed_data_order else None)


def make_train_loader(cfg: Config, dist: DistInfo):
    """The rank's training loader: shuffled windows (#1533), or #1855's packed documents (``pack_documents``)."""
    from golf.loaders import PackedDocumentLoader
    from golf.shards import list_shards

    if not cfg.pack_documents:
        return shuffled_loader(cfg, dist)
    tokens = micro_batch_seqs(cfg, dist.world_size) * cfg.train_seq_len
    return PackedDocumentLoader(list_shards(cfg.data_dir, "train"), dist.rank, dist.world_size, tokens, BOS_ID)


def train_batches(cfg: Config, dist: DistInfo, device: torch.device) -> PrefetchLoader:
    """The rank's micro-batches on ``device``: made ahead in a thread (``loader_prefetch``) or inline.

    Either way the sequences and their order are the training loader's; ``close()`` it when done.
    """
    return PrefetchLoader(make_train_loader(cfg, dist), device, depth=4 if cfg.loader_prefetch else 0)


def hessian_path(run_dir: Path, rank: int) -> Path:
    """Hessians that training collected itself (``fix_gptq_in_budget``), one file per rank (§9.9)."""
    return RunDir(run_dir).hessians(rank)


def calibration_batches(cfg: Config, dist: DistInfo, device: torch.device):
    """A fresh shuffled loader: the records replay the start of its order (spec §5.2, §9.8); #1855 too,
    though it trains on packed documents."""
    loader = shuffled_loader(cfg, dist)
    while True:
        yield loader.next_batch(device)[0]


def compiled_forward(model: GPT, trainer: "Trainer", cfg: Config, device: torch.device):
    """The training forward: ``torch.compile``d (with Newton-Schulz) where compile is on, else the model."""
    if not use_compile(cfg, device):
        return model
    prepare_compile(cfg)
    trainer.muon.zeropower = torch.compile(zeropower_via_newtonschulz)
    return torch.compile(model, dynamic=False, fullgraph=True)


def check_finite(value: float, what: str, step: int, run_dir: Path) -> None:
    """A NaN or infinite loss ends training with one error; no model.pt is saved after it."""
    if not math.isfinite(value):
        raise GolfError(f"training diverged: {what} is {value} at step {step}; no {MODEL} was saved, the run "
                        f"folder {str(run_dir)!r} keeps its logs; lower the learning rates (or check the data)")


def train(cfg: Config, run_dir: Path, dist: DistInfo, device: torch.device, show_progress: bool = True) -> TrainResult:
    """Train, apply the EMA, run the pre-quant eval and save ``model.pt`` into ``run_dir``."""
    from golf.bpb import eval_byte_counts
    from golf.data_binding import tokenizer_fingerprint
    from golf.shards import list_shards
    from golf.val_stream import load_val_tokens
    from golf.evaluate import eval_plain

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    main = dist.is_main
    torch.manual_seed(cfg.seed)
    set_fast_matmul(device)

    train_files = list_shards(cfg.data_dir, "train")
    val_files = list_shards(cfg.data_dir, "val")
    accum = grad_accum_steps(cfg, dist.world_size)
    seqs = micro_batch_seqs(cfg, dist.world_size)

    val_tokens = load_val_tokens(cfg.data_dir, cfg.eval_seq_len, cfg.max_val_tokens)
    luts = eval_byte_counts(cfg, val_tokens).to(device)  # the tables, or CaseOps' byte sidecar

    model = build_model(cfg, device)
    trainer = Trainer(model, cfg, dist)
    forward = compiled_forward(model, trainer, cfg, device)
    if main:
        save_config(cfg, RunDir(run_dir).config_file)
        atomic_write_json(RunDir(run_dir).environment,
                          {**environment_record(dist.world_size, train_files + val_files),
                           "attention_backend": model.attention_backend, "compile": forward is not model,
                           "kernels_in_effect": model.fused_kernels(),
                           "grad_accum": accum, "micro_batch_seqs": seqs,
                           "tokenizer_sha256": tokenizer_fingerprint(cfg.tokenizer_path)})
        write_code_diff(RunDir(run_dir).code_diff)  # a dirty run (git_dirty) keeps the patch it ran
    changed = differences_from_record(cfg.to_dict())
    log.info("keys that differ from the record: %s", ", ".join(f"{k}={v}" for k, (_, v) in changed.items()) or "none")
    for note in inert_settings(cfg):
        log.warning("%s", note)
    log.info("model: %d params, attention %s, compile %s, grad_accum %d x %d seqs/rank",
             sum(p.numel() for p in model.parameters()), model.attention_backend, forward is not model, accum, seqs)

    # Compile warmup on both graph variants, then restore the initial state (spec §4.6).
    if cfg.warmup_steps > 0:
        initial = copy.deepcopy(model.state_dict())
        opt_states = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
        with train_batches(cfg, dist, device) as batches:
            for looping in (False, True):
                model.set_looping(looping)
                for _ in range(cfg.warmup_steps):
                    trainer.set_schedule(1.0, 0)
                    trainer.step((batches.next_batch() for _ in range(accum)), forward, accum)
        model.set_looping(False)
        model.load_state_dict(initial)
        for opt, state in zip(trainer.optimizers, opt_states):
            opt.load_state_dict(state)
        if cfg.fix_reset_muon_momentum:
            trainer.muon.reset_shard_momentum()  # §9.7 fixed; the record carries it over
        del initial, opt_states

    ema = EMA(model, cfg.ema_decay)
    metrics = JsonlWriter(RunDir(run_dir).metrics, enabled=main)
    cap_ms = (cfg.max_wallclock_seconds - cfg.gptq_reserve_seconds) * 1000 if cfg.max_wallclock_seconds > 0 else 0.0
    tokens_per_step = cfg.train_batch_tokens
    step, train_ms, looping_at = 0, 0.0, None
    logged_step, logged_ms = 0, 0.0  # the last train-log point: step_ms is the mean since then
    last_loss = "-"  # the loss as last logged
    # The bar counts toward whichever budget (steps or wallclock) ends first, in percent of it.
    bar = tqdm(total=100.0, desc="train", disable=not (main and show_progress), mininterval=bar_interval(2.0),
               bar_format="{desc}: {percentage:3.0f}% of budget|{bar}| {elapsed}<{remaining}{postfix}")

    def frac_done() -> float:
        fracs = [step / cfg.iterations] if cfg.iterations > 0 else []
        if cap_ms > 0:
            fracs.append(train_ms / cap_ms)
        return max(fracs)

    def validate() -> None:
        model.eval()
        res = eval_plain(model, val_tokens, luts, cfg)
        model.train()
        log.info("step %d val_loss %.4f val_bpb %.4f", step, res["val_loss"], res["val_bpb"])
        metrics.write({"step": step, "val_loss": res["val_loss"], "val_bpb": res["val_bpb"],
                       "looping": model.looping, "train_ms": train_ms})
        check_finite(res["val_loss"], "val_loss", step, run_dir)

    batches = train_batches(cfg, dist, device)  # made now, so its first micro-batches load during step 0's eval
    _sync(device)
    t0 = time.perf_counter()
    warmup_s = t0 - t_start  # set-up, compile and warmup steps: the wait before step 0
    log.info("warmup: %.1f s from the start of training to step 0", warmup_s)
    metrics.write({"step": 0, "warmup_s": warmup_s})
    try:
        while True:
            stop = step >= cfg.iterations
            if cap_ms > 0:
                over = train_ms >= cap_ms
                if dist.distributed:  # every rank stops on the same step (a sync per step, as in the record)
                    flag = torch.tensor([1.0 if over else 0.0], device=device)
                    over = bool(all_reduce_(flag, "max").item())
                stop = stop or over
            if step == 0 or stop or (cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0):
                _sync(device)
                train_ms += (time.perf_counter() - t0) * 1000  # the validation time is not training time
                validate()
                _sync(device)
                t0 = time.perf_counter()
            if stop:
                break
            frac = frac_done()
            mult = lr_multiplier(frac, cfg.warmdown_frac, cfg.min_lr)
            if not model.looping and cfg.num_loops > 0 and frac >= cfg.enable_looping_at:
                model.set_looping(True)
                looping_at = step
                log.info("step %d: depth recurrence on (frac %.3f)", step, frac)
            trainer.set_schedule(mult, step, frac)
            loss = trainer.step((batches.next_batch() for _ in range(accum)), forward, accum)
            ema.update(model)
            step += 1
            if cfg.train_log_every > 0 and (step % cfg.train_log_every == 0 or step == 1):
                _sync(device)  # the only sync of a training step: in between, the GPU runs behind the host
                train_loss = loss.item()
                elapsed = train_ms + (time.perf_counter() - t0) * 1000
                step_ms = (elapsed - logged_ms) / (step - logged_step)
                logged_step, logged_ms = step, elapsed
                record = {"step": step, "train_loss": train_loss, "lr_mult": mult,
                          "tokens_per_s": tokens_per_step / (step_ms / 1000) / dist.world_size,
                          "step_ms": step_ms, "looping": model.looping, "peak_mem_mib": _peak_mem_mib(device),
                          "train_ms": elapsed}
                metrics.write(record)
                last_loss = f"{train_loss:.3f}"
                log.info("step %d loss %.4f lr_mult %.3f step_ms %.1f", step, train_loss, mult, step_ms)
                check_finite(train_loss, "train_loss", step, run_dir)
            # the loss shown is the last logged one, with its step (reading it every step would sync the GPU)
            bar.set_postfix_str(f"step={step}, loss@{logged_step}={last_loss}, looping={int(model.looping)}",
                                refresh=False)
            train_ms += (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            bar.update(min(100.0 * frac_done(), 100.0) - bar.n)
    finally:
        batches.close()
        bar.close()

    ema.apply_to(model)
    init_share = ema_init_share(cfg.ema_decay, step)
    if init_share > EMA_INIT_SHARE_WARN:
        log.warning("the saved EMA weights are still %.0f%% the initial weights after %d step%s (ema_decay %s)",
                    100 * init_share, step, "s" * (step != 1), cfg.ema_decay)
    model.set_looping(cfg.num_loops > 0)  # every evaluation runs with looping on (spec §2.7)
    model.eval()
    data_end_s = None
    if cfg.fix_gptq_in_budget:
        # §9.10 fixed: read the calibration data right after training, inside the reserve, before
        # the eval and the checkpoint write; `golf quantize` then uses these Hessians.
        from golf.gptq import collect_hessians

        t_h = time.perf_counter()
        hessians = collect_hessians(model, calibration_batches(cfg, dist, device), cfg.gptq_calibration_batches,
                                    device, all_reduce=cfg.fix_allreduce_hessians)
        data_end_s = (train_ms + (time.perf_counter() - t_h) * 1000) / 1000
        torch.save({k: v.cpu() for k, v in hessians.items()}, hessian_path(run_dir, dist.rank))
        del hessians
        log.info("Hessians collected inside the budget: training-data access ends at %.1f s", data_end_s)
    prequant = eval_plain(model, val_tokens, luts, cfg)
    log.info("pre-quantization post-ema val_loss %.5f val_bpb %.5f", prequant["val_loss"], prequant["val_bpb"])
    check_finite(prequant["val_loss"], "the post-EMA val_loss", step, run_dir)
    summary = {"steps": step, "train_ms": train_ms, "warmup_s": warmup_s, "looping_at_step": looping_at,
               "peak_mem_mib": _peak_mem_mib(device), "world_size": dist.world_size,
               "training_data_end_s": data_end_s, "ema_init_share": init_share,
               "prequant_post_ema": prequant}
    metrics.write({"step": step, "stage": "pre-quantization post-ema", **prequant})
    metrics.close()
    if main:
        from golf.runtime import file_sha256

        save_checkpoint(model, RunDir(run_dir).model)
        summary["model_sha256"] = file_sha256(RunDir(run_dir).model)  # quantize and evaluate check it
        atomic_write_json(RunDir(run_dir).summary, summary)
    return TrainResult(step, train_ms, looping_at, prequant, summary)
