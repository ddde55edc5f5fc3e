#!/usr/bin/env python3
"""PyTorch reference for `lomo bench`: the same LOMO step (fp16 weights,
activation checkpointing, two-pass gradient-norm clipping, the SGD update
fused into backward through post-accumulate-grad hooks) on the same card,
so that step time and peak memory compare. Prints one JSON object."""
import argparse, json, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--seq", type=int, default=512)
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--clip-grad-norm", type=float, default=1.0)
a = ap.parse_args()

torch.manual_seed(1)
cfg = LlamaConfig(**json.load(open(a.config)))
cfg.use_cache = False
model = LlamaForCausalLM(cfg).to("cuda", dtype=torch.float16)
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

for p in params:
    p.register_post_accumulate_grad_hook(hook)

def step():
    if a.clip_grad_norm > 0:
        state["mode"], state["sumsq"] = "norm", torch.zeros((), device="cuda", dtype=torch.float32)
        model(input_ids=ids, labels=ids).loss.backward()
        norm = state["sumsq"].sqrt().item()
        state["coef"] = min(1.0, a.clip_grad_norm / (norm + 1e-6))
    state["mode"] = "update"
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item()

step()  # warm-up
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
t0 = time.time()
for _ in range(a.steps):
    loss = step()
torch.cuda.synchronize()
dt = (time.time() - t0) / a.steps
print(json.dumps({
    "impl": "pytorch-lomo-hooks", "torch": torch.__version__, "device": torch.cuda.get_device_name(),
    "params": sum(p.numel() for p in params), "batch": a.batch, "seq": a.seq,
    "step_seconds": dt, "tokens_per_sec": a.batch * a.seq / dt,
    "peak_bytes": torch.cuda.max_memory_allocated(), "final_loss": loss,
}))
