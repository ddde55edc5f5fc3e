#!/usr/bin/env bash
# The standing GPU check, run on an NVIDIA machine (no Go, no network) from
# the repository root, with .gl/ (the libvulkan1 package) and .gpu/ (lomo and
# test binaries) carried; see README "GPU machines". Build them here first:
#   go build -o .gpu/lomo ./cmd/native
#   for p in gpu wgsl nn optim; do go test -c -o .gpu/$p.test ./$p; done
# Writes JSON under $OUT (default bench/out) and prints a short table last.
set -uo pipefail
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The NVIDIA ICD that names libGLX_nvidia finds no device on headless
# machines; the EGL library works.
printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"1.3"}}' >/tmp/lomo_icd.json
export VK_DRIVER_FILES=/tmp/lomo_icd.json XDG_RUNTIME_DIR=/tmp
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/nvidia.txt" 2>&1
./.gpu/lomo devices --json >"$OUT/devices.json" 2>&1 || { cat "$OUT/devices.json"; exit 1; }

# Kernel and model tests on the GPU (testdata-based tests skip: no ../shared here).
tests=""
for p in gpu wgsl nn optim; do
	[ -x ".gpu/$p.test" ] || continue
	out=$(cd "$OUT" && pwd)
	(cd "$p" && timeout 120 "../.gpu/$p.test" -test.count=1 >"$out/test_$p.txt" 2>&1)
	tests="$tests $p=$?"
done

# Peak probe (the plan for LLaMA-7B) and the step benchmarks, lomo then PyTorch.
./.gpu/lomo plan --model bench/configs/llama-7b.json --batch 8 --seq 512 --checkpointing --json >"$OUT/plan_7b.jsonl" 2>&1
timeout 300 ./.gpu/lomo bench --json --model bench/configs/tinyllama-1.1b.json --batch 4 --seq 512 --steps 2 \
	--optimizer lomo --peak-tflops "${PEAK_TFLOPS:-67}" --matmul 1024,4096 >"$OUT/lomo_bench.json" 2>"$OUT/lomo_bench.err"
timeout 180 python3 bench/torch_lomo.py --config bench/configs/tinyllama-1.1b.json --batch 4 --seq 512 --steps 2 >"$OUT/torch.json" 2>"$OUT/torch.err"

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
r = {"card": open(os.path.join(out, "nvidia.txt")).read().strip(), "tests": tests.strip(),
     "devices": devices(), "lomo": load("lomo_bench.json"), "torch": load("torch.json")}
json.dump(r, open(os.path.join(out, "gpu.json"), "w"), indent=2)
print("card:", r["card"]); print("tests:", r["tests"])
for d in r["devices"]:
    print(f'adapter [{d.get("index")}] {d.get("name")} ({d.get("type")}, {d.get("backend")}): caps {d.get("caps")}')
    print(f'  device limits {d.get("device_limits") or d.get("device_error")}')
p = r["lomo"].get("probe")
if p:
    print(f'probe: fma f32 {p["fma_f32_gflops"]/1e3:.1f} TFLOP/s, fma f16 {p.get("fma_f16_gflops", 0)/1e3:.1f} TFLOP/s, copy {p["copy_gb_per_s"]:.0f} GB/s')
for k in r["lomo"].get("kernels", []):
    print(f'{k["kernel"]:<22} {k["shape"]:>14} {k["gflops"]:10.1f} GFLOP/s {100*k.get("fraction_of_probe", 0):5.1f}% of probe')
for s in r["lomo"].get("steps", []):
    print(f'lomo  {s["optimizer"]} B{s["batch"]} T{s["seq"]}: {s["step_seconds"]:.3f} s/step {s["tokens_per_sec"]:.0f} tok/s peak {s["peak_bytes"]/1e9:.2f} GB (plan {s["planned_bytes"]/1e9:.2f} GB) floor {s["floor_step_seconds"]:.3f} s')
t = r["torch"]
if "step_seconds" in t:
    print(f'torch lomo B{t["batch"]} T{t["seq"]}: {t["step_seconds"]:.3f} s/step {t["tokens_per_sec"]:.0f} tok/s peak {t["peak_bytes"]/1e9:.2f} GB')
else:
    print("torch:", t)
PY
