#!/usr/bin/env bash
# The standing GPU check, run on an NVIDIA machine (no Go, no network) from
# the repository root, with .gl/ (the libvulkan1 package) and .gpu/ (lomo and
# test binaries) carried; see README "GPU machines". Build them here first:
#   go build -o .gpu/lomo ./cmd/native && git rev-parse --short HEAD >.gpu/commit.txt
#   for p in gpu wgsl nn optim; do go test -c -o .gpu/$p.test ./$p; done
# Writes JSON under $OUT (default bench/out) and prints a short table last.
#
# PARTS chooses what runs, in this order (default all; not yet timed with
# tuning on an H200: a session with a card may run "step 7b" and
# "tests extras" as two calls, each within the 10-minute limit):
#   step   the probe, the TinyLlama-1.1B LOMO step (then one more,
#          profiled per kernel), lomo then PyTorch, then the probe again and
#          the matmul tilings at 1024³ and 4096³. The warm-up step tunes (lomo --tune: every
#          matmul tiling and both attention kernels timed on each shape);
#          the table lists what each shape chose, and later runs on the
#          machine reuse the choices (~/.cache/lomo/tuning).
#   7b     the LLaMA-7B-shaped LOMO step (f16, random init, batch 8 x 512,
#          checkpointing), lomo then PyTorch LOMO and PyTorch AdamW (out of
#          memory is a result)
#   tests  the kernel and model tests on the card
#   extras the 1.1B step with the attention row kernels and in bf16, the
#          matmuls with naga's loop bounding and without its bounds
#          checks, and tilings that lomo does not tune over yet
#          (EXPLORE_TILES) at 2048³ and 4096³
# CONFIG_STEP and CONFIG_7B replace the models and MATMUL the matmul sizes
# (small ones run the script on any adapter, lavapipe included, to try it).
set -uo pipefail
OUT=${OUT:-bench/out}
PARTS=${PARTS:-"step 7b tests extras"}
CONFIG_STEP=${CONFIG_STEP:-bench/configs/tinyllama-1.1b.json}
CONFIG_7B=${CONFIG_7B:-bench/configs/llama-7b.json}
MATMUL=${MATMUL:-1024,4096}
# Tilings beyond wgsl.Tiles for "extras", within an H100's or H200's limits
# (1024 threads, 48 KiB of workgroup memory): K steps of 32, 512 threads of
# 8x4, rectangular tiles for the narrow products (k/v projections), 8x16
# and 16x8 blocks per thread, prefetch with BK 8.
EXPLORE_TILES=${EXPLORE_TILES:-128x128x32/8x8pw,128x128x32/8x8w,128x128x16/8x4w,128x64x16/8x4w,64x128x16/4x8w,128x256x8/8x16w,256x128x8/16x8w,128x128x8/8x8pw,128x128x8/8x8w}
EXPLORE_MATMUL=${EXPLORE_MATMUL:-2048,4096}
mkdir -p "$OUT"
has() { [[ " $PARTS " == *" $1 "* ]]; }
if command -v nvidia-smi >/dev/null; then
	for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
	ldconfig
	# The NVIDIA ICD that names libGLX_nvidia finds no device on headless
	# machines; the EGL library works.
	printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"1.3"}}' >/tmp/lomo_icd.json
	export VK_DRIVER_FILES=/tmp/lomo_icd.json XDG_RUNTIME_DIR=/tmp
	nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/nvidia.txt" 2>&1
else
	echo "no nvidia-smi: the first adapter lomo finds" >"$OUT/nvidia.txt"
fi
./.gpu/lomo devices --json >"$OUT/devices.json" 2>&1 || { cat "$OUT/devices.json"; exit 1; }
# The cooperative-matrix (tensor core) configurations the driver lists and
# wgpu accepts or skips: wgpu says them only in its log.
LOMO_WGPU_LOG=debug ./.gpu/lomo devices 2>&1 >/dev/null | grep -i 'coop' >"$OUT/coop_log.txt" || true
cat .gpu/commit.txt >"$OUT/commit.txt" 2>/dev/null || git rev-parse --short HEAD >"$OUT/commit.txt" 2>&1

# What the issue asks first, so that a run cut short still has it: the plan
# of LLaMA-7B, the 1.1B step and the 7B step, lomo then PyTorch; then the
# tests on the card; then the comparisons.
./.gpu/lomo plan --model "$CONFIG_7B" --batch 8 --seq 512 --checkpointing --json >"$OUT/plan_7b.jsonl" 2>&1
if has step; then
	# The step alone first, so that a timeout in the tiling sweep after it
	# cannot take its figures along.
	timeout 300 ./.gpu/lomo bench --json --model "$CONFIG_STEP" --batch 4 --seq 512 --steps 2 \
		--optimizer lomo --peak-tflops "${PEAK_TFLOPS:-67}" --matmul "" --profile >"$OUT/lomo_bench.json" 2>"$OUT/lomo_bench.err"
	timeout 180 python3 bench/torch_lomo.py --config "$CONFIG_STEP" --batch 4 --seq 512 --steps 2 >"$OUT/torch.json" 2>"$OUT/torch.err"
	timeout 150 ./.gpu/lomo bench --json --matmul "$MATMUL" --matmul-tiles all >"$OUT/lomo_tiles.json" 2>"$OUT/lomo_tiles.err"
fi
if has 7b; then
	timeout 300 ./.gpu/lomo bench --json --model "$CONFIG_7B" --batch 8 --seq 512 --steps 1 --probe=false --matmul "" \
		--optimizer lomo --peak-tflops "${PEAK_TFLOPS:-67}" >"$OUT/lomo_7b.json" 2>"$OUT/lomo_7b.err"
	timeout 180 python3 bench/torch_lomo.py --config "$CONFIG_7B" --batch 8 --seq 512 --steps 1 >"$OUT/torch_7b.json" 2>"$OUT/torch_7b.err"
	timeout 240 python3 bench/torch_lomo.py --config "$CONFIG_7B" --batch 8 --seq 512 --steps 1 --optimizer adamw >"$OUT/torch_7b_adamw.json" 2>"$OUT/torch_7b_adamw.err"
fi

# Kernel and model tests on the GPU (testdata-based tests skip: no ../shared here).
tests=""
if has tests; then
	for p in gpu wgsl nn optim; do
		[ -x ".gpu/$p.test" ] || continue
		out=$(cd "$OUT" && pwd)
		(cd "$p" && timeout 120 "../.gpu/$p.test" -test.count=1 >"$out/test_$p.txt" 2>&1)
		tests="$tests $p=$?"
	done
fi

if has extras; then
	# The 1.1B step with the attention row kernels, profiled: which are faster on this card.
	timeout 240 ./.gpu/lomo bench --json --model "$CONFIG_STEP" --batch 4 --seq 512 --steps 1 --probe=false --matmul "" \
		--optimizer lomo --attention-kernels rows --profile >"$OUT/lomo_rows.json" 2>"$OUT/lomo_rows.err"
	# The same step in bf16 (weights, activations and gradients; its 16-bit
	# stores outside the optimizers are atomic): what they cost on this card.
	timeout 180 ./.gpu/lomo bench --json --model "$CONFIG_STEP" --batch 4 --seq 512 --steps 1 --probe=false --matmul "" \
		--optimizer lomo --dtype bf16 >"$OUT/lomo_bf16.json" 2>"$OUT/lomo_bf16.err"
	# The matmuls with naga's loop bounding, as the binding compiles shaders
	# (lomo compiles without it): what it costs on this card.
	LOMO_SHADER_CHECKS=full timeout 120 ./.gpu/lomo bench --json --probe=false --matmul "$MATMUL" \
		>"$OUT/lomo_checks_full.json" 2>"$OUT/lomo_checks_full.err"
	# And without naga's bounds checks (a clamp of every array index, in
	# the inner loops too): what they cost on this card. A measurement only:
	# lomo never runs without them.
	LOMO_SHADER_CHECKS=none timeout 120 ./.gpu/lomo bench --json --probe=false --matmul "$MATMUL" \
		>"$OUT/lomo_checks_none.json" 2>"$OUT/lomo_checks_none.err"
	# Tilings lomo does not tune over yet: the ones that beat the tuned
	# tilings of "step" are the next to add to wgsl.Tiles.
	timeout 150 ./.gpu/lomo bench --json --probe=false --matmul "$EXPLORE_MATMUL" --matmul-tiles "$EXPLORE_TILES" \
		>"$OUT/lomo_explore.json" 2>"$OUT/lomo_explore.err"
fi

python3 - "$OUT" "$tests" <<'PY'
import json, os, sys
out, tests = sys.argv[1], sys.argv[2]
def load(p):
    try:
        return json.load(open(os.path.join(out, p)))
    except Exception as e:
        return {"error": str(e)}
def devices():
    try:
        return [json.loads(l) for l in open(os.path.join(out, "devices.json")) if l.startswith("{")]
    except Exception as e:
        return [{"error": str(e)}]
def plan7b():
    try:
        return [json.loads(l) for l in open(os.path.join(out, "plan_7b.jsonl")) if l.startswith("{")]
    except Exception as e:
        return [{"error": str(e)}]
r = {"card": open(os.path.join(out, "nvidia.txt")).read().strip(), "commit": open(os.path.join(out, "commit.txt")).read().strip(),
     "tests": tests.strip(), "devices": devices(), "plan_7b": plan7b(),
     "coop_log": [l.rstrip() for l in open(os.path.join(out, "coop_log.txt"))] if os.path.exists(os.path.join(out, "coop_log.txt")) else [],
     "lomo": load("lomo_bench.json"), "lomo_tiles": load("lomo_tiles.json"), "lomo_attention_rows": load("lomo_rows.json"), "lomo_bf16": load("lomo_bf16.json"), "torch": load("torch.json"),
     "lomo_loop_bounding": load("lomo_checks_full.json"), "lomo_no_bounds_checks": load("lomo_checks_none.json"), "lomo_explore_tiles": load("lomo_explore.json"),
     "lomo_7b": load("lomo_7b.json"), "torch_7b": load("torch_7b.json"), "torch_7b_adamw": load("torch_7b_adamw.json")}
json.dump(r, open(os.path.join(out, "gpu.json"), "w"), indent=2)
print("card:", r["card"]); print("tests:", r["tests"])
for d in r["devices"]:
    print(f'adapter [{d.get("index")}] {d.get("name")} ({d.get("type")}, {d.get("backend")}): caps {d.get("caps")}')
    print(f'  device limits {d.get("device_limits") or d.get("device_error")}')
for l in r["coop_log"][:12]:
    # The binding's log callback prints wgpu's messages as C strings, which
    # they are not: bytes after a message's end may follow it.
    print("  wgpu:", l[:130])
for name in ("lomo", "lomo_tiles"):
    p = r[name].get("probe")
    if p:
        print(f'probe ({name}): fma f32 {p["fma_f32_gflops"]:.1f} GFLOP/s, fma f16 {p.get("fma_f16_gflops", 0):.1f} GFLOP/s, copy {p["copy_gb_per_s"]:.0f} GB/s')
if "error" in r["lomo_tiles"]:
    print("tilings:", r["lomo_tiles"]["error"])
def fastest(rep):
    # The fastest tiling of each kernel and shape in a run's matmul table.
    best = {}
    for k in rep.get("kernels", []):
        key = (k["kernel"], k["shape"])
        if key not in best or k["gflops"] > best[key]["gflops"]:
            best[key] = k
    return best.values()
for k in fastest(r["lomo_tiles"]):
    print(f'{k["kernel"]:<32} {k["shape"]:>14} best tiling {k.get("tile", ""):>14} {k["gflops"]:10.1f} GFLOP/s {100*k.get("fraction_of_probe", 0):5.1f}% of probe')
def steps(name, rep):
    for s in rep.get("steps", []):
        print(f'lomo  {name} {s["optimizer"]} B{s["batch"]} T{s["seq"]}: {s["step_seconds"]:.3f} s/step {s["tokens_per_sec"]:.0f} tok/s '
              f'peak {s["peak_bytes"]/1e9:.2f} GB = {s["peak_bytes"]/2**30:.2f} GiB (plan {s["planned_bytes"]/1e9:.2f} GB, {s["plan_error_pct"]:.2f}% off) '
              f'floor {s["floor_step_seconds"]:.3f} s, {s["dispatches_per_step"]} dispatches; norm pass {s.get("norm_pass", "?")[:8]}')
        prof = s.get("profile") or []
        if prof:
            print(f'  profiled step {s["profile_step_seconds"]:.3f} s (each dispatch alone); slowest kernels:')
        for k in prof[:8]:
            print(f'    {k["kernel"]:<48} {k["calls"]:5d} calls {k["seconds"]:8.3f} s {100*k["seconds"]/s["profile_step_seconds"]:5.1f}%')
    if "error" in rep:
        print(f"lomo  {name}:", rep["error"])
def torch(name, t):
    if "step_seconds" in t:
        print(f'torch {name} {t["impl"]} B{t["batch"]} T{t["seq"]}: {t["step_seconds"]:.3f} s/step {t["tokens_per_sec"]:.0f} tok/s peak {t["peak_bytes"]/1e9:.2f} GB = {t["peak_bytes"]/2**30:.2f} GiB')
    else:
        print(f"torch {name}:", t)
steps("step", r["lomo"]); steps("step bf16", r["lomo_bf16"]); torch("step", r["torch"])
for k in r["lomo_loop_bounding"].get("kernels", []):
    print(f'  with loop bounding: {k["kernel"]:<32} {k["shape"]:>14} {k.get("tile", ""):>14} {k["gflops"]:10.1f} GFLOP/s')
for k in r["lomo_no_bounds_checks"].get("kernels", []):
    print(f'  no bounds checks:   {k["kernel"]:<32} {k["shape"]:>14} {k.get("tile", ""):>14} {k["gflops"]:10.1f} GFLOP/s')
for k in fastest(r["lomo_explore_tiles"]):
    print(f'  explored: {k["kernel"]:<32} {k["shape"]:>14} best {k.get("tile", ""):>14} {k["gflops"]:10.1f} GFLOP/s')
if "error" in r["lomo_explore_tiles"]:
    print("  explored tilings:", r["lomo_explore_tiles"]["error"])
def attention(rep):
    return sum(k["seconds"] for s in rep.get("steps", []) for k in s.get("profile", []) if k["kernel"].startswith("attention/"))
if r["lomo_attention_rows"].get("steps"):
    print(f'attention in the profiled step: tuned kernels {attention(r["lomo"]):.3f} s, row kernels {attention(r["lomo_attention_rows"]):.3f} s')
def tuned(name, rep):
    # The kernel variants the step chose by timing (lomo --tune): the chosen
    # one's time against the untuned first one's.
    for c in rep.get("tuned", []):
        t = {x["variant"]: x["seconds"] for x in c["timed"]}
        first = c["timed"][0]
        print(f'  tuned {name} {c["key"]:<44} {c["chosen"]:>16} {1e3*t[c["chosen"]]:8.3f} ms, {first["seconds"]/t[c["chosen"]]:5.2f}x {first["variant"]}')
tuned("step", r["lomo"])
steps("7b", r["lomo_7b"]); torch("7b", r["torch_7b"]); torch("7b", r["torch_7b_adamw"])
tuned("7b", r["lomo_7b"])
for s, t in ((r["lomo"].get("steps") or [{}])[0], r["torch"]), ((r["lomo_7b"].get("steps") or [{}])[0], r["torch_7b"]):
    if "tokens_per_sec" in s and "tokens_per_sec" in t:
        print(f'lomo / pytorch tokens/s: {s["tokens_per_sec"]/t["tokens_per_sec"]:.3f}x; peak {s["peak_bytes"]/t["peak_bytes"]:.3f}x')
PY
