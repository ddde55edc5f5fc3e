#!/usr/bin/env python3
"""PyTorch reference for `lomo bench`: the same LOMO step (fp16 weights,
activation checkpointing, two-pass gradient-norm clipping, the SGD update
fused into backward through post-accumulate-grad hooks) on the same card,
so that step time and peak memory compare. With --optimizer adamw, the
usual mixed-precision AdamW step instead (fp32 weights, fp16 autocast,
loss scaling, fused AdamW, clipping): the baseline LOMO is measured
against. Prints one JSON object; running out of memory is a result
("error": "out of memory"), not a failure."""
import argparse, json, sys, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--clip-grad-norm", type=float, default=1.0)
ap.add_argument("--optimizer", choices=["lomo", "adamw"], default="lomo")
a = ap.parse_args()
impl = {"lomo": "pytorch-lomo-hooks", "adamw": "pytorch-adamw-amp"}[a.optimizer]

def report(**kw):
    print(json.dumps({"impl": impl, "torch": torch.__version__, "device": torch.cuda.get_device_name(),
                      "batch": a.batch, "seq": a.seq, **kw}))

torch.manual_seed(1)
cfg = LlamaConfig(**json.load(open(a.config)))
cfg.use_cache = False
try:
    model = LlamaForCausalLM(cfg).to("cuda", dtype=torch.float16 if a.optimizer == "lomo" else torch.float32)
except torch.cuda.OutOfMemoryError:
    report(error="out of memory", stage="model", peak_bytes=torch.cuda.max_memory_allocated())
    sys.exit(0)
model.gradient_checkpointing_enable()
model.train()
params = [p for p in model.parameters() if p.requires_grad]
ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq), device="cuda")

state = {"mode": "norm", "sumsq": torch.zeros((), device="cuda", dtype=torch.float32), "coef": 1.0}

def hook(p):
    # Called once per parameter when its gradient is complete; the gradient
    # is used and dropped at once (LOMO).
    g = p.grad
    if state["mode"] == "norm":
        state["sumsq"] += g.float().pow(2).sum()
    else:
        p.data.add_(g, alpha=-a.lr * state["coef"])
    p.grad = None

if a.optimizer == "lomo":
    for p in params:
        p.register_post_accumulate_grad_hook(hook)
else:
    opt = torch.optim.AdamW(params, lr=a.lr, fused=True)
    scaler = torch.amp.GradScaler("cuda")

def adamw_step():
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(input_ids=ids, labels=ids).loss
    scaler.scale(loss).backward()
    if a.clip_grad_norm > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, a.clip_grad_norm)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return loss.item()

def lomo_step():
    if a.clip_grad_norm > 0:
        state["mode"], state["sumsq"] = "norm", torch.zeros((), device="cuda", dtype=torch.float32)
        model(input_ids=ids, labels=ids).loss.backward()
        norm = state["sumsq"].sqrt().item()
        state["coef"] = min(1.0, a.clip_grad_norm / (norm + 1e-6))
    state["mode"] = "update"
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item()

step = lomo_step if a.optimizer == "lomo" else adamw_step
try:
    step()  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(a.steps):
        loss = step()
    torch.cuda.synchronize()
except torch.cuda.OutOfMemoryError:
    report(error="out of memory", stage="step", params=sum(p.numel() for p in params), peak_bytes=torch.cuda.max_memory_allocated())
    sys.exit(0)
dt = (time.time() - t0) / a.steps
report(params=sum(p.numel() for p in params), step_seconds=dt, tokens_per_sec=a.batch * a.seq / dt,
       peak_bytes=torch.cuda.max_memory_allocated(), final_loss=loss)
