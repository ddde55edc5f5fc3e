# lomo's tasks. `npx --yes rust-just <task>` runs them without installing just.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Mesa's EGL complains on headless machines without it.
export XDG_RUNTIME_DIR := env_var_or_default("XDG_RUNTIME_DIR", "/tmp")

# Fine-tune the built-in model on the built-in task and print the report.
demo *ARGS: (setup "demo")
    go run ./cmd/native demo {{ARGS}}

# Every check CI runs: format, vet, the browser build, Go tests (under the
# Vulkan validation layers: any message fails), the gpu and wgsl tests again
# on a newer lavapipe, browser tests.
test: (setup "test")
    test -z "$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }
    go vet ./...
    GOOS=js GOARCH=wasm go build ./...
    GOOS=js GOARCH=wasm go vet ./gpu ./wgsl ./internal/... ./cmd/wasm ./web
    LOMO_VALIDATION=1 go test -count=1 -timeout 40m ./...
    ./scripts/newer-lavapipe.sh
    cd e2e && node --test

# Build lomo for the browser (cmd/wasm) into web/wasm/ (git-ignored), where
# the native build embeds it for `lomo web`.
wasm:
    GOOS=js GOARCH=wasm go build -ldflags=-s -o web/wasm/lomo.wasm ./cmd/wasm
    cp "$(go env GOROOT)/lib/wasm/wasm_exec.js" web/wasm/wasm_exec.js

# Build the WASM, then lomo (which embeds it), and serve the page that
# fine-tunes in the browser on 127.0.0.1:8090 (with a monitoring hub).
web *ARGS: wasm
    go run ./cmd/native web --listen 127.0.0.1:8090 {{ARGS}}

# The GPU layer under load: training with 200 dashboard viewers and the
# evaluations that used to crash, 20 times each with the CPU busy (hours on
# lavapipe); `just stress -runs 2` for a quick look.
stress *ARGS:
    go run ./bench/stress {{ARGS}}

# Kernel benchmarks (GFLOP/s per adapter) and the planner's memory table.
bench:
    go test -run '^$' -bench . -benchtime 3x ./wgsl/
    go run ./cmd/native plan --model bench/configs/llama-7b.json --batch 8 --seq 512 --checkpointing

# Install the Vulkan driver (and for tests Chromium, playwright-core) if missing.
setup mode="demo":
    ./scripts/setup.sh {{mode}}
