package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hubCommit = "5f1c0ffee0ddba11cafe5eed0123456789abcdef"

// hubCache lays out stories260K as huggingface_hub's cache holds a
// downloaded model: models--org--stories260K/blobs/<sha256>, snapshots/
// <commit>/<file> as relative symlinks into blobs, refs/main holding the
// commit. It sets HF_HUB_CACHE to it and returns the snapshot folder.
func hubCache(t *testing.T) (snapshot string) {
	t.Helper()
	src := storiesDir(t)
	hub := t.TempDir()
	t.Setenv("HF_HUB_CACHE", hub)
	repo := filepath.Join(hub, "models--org--stories260K")
	snapshot = filepath.Join(repo, "snapshots", hubCommit)
	for _, d := range []string{filepath.Join(repo, "blobs"), filepath.Join(repo, "refs"), snapshot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		blob := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(repo, "blobs", blob), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", blob), filepath.Join(snapshot, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte(hubCommit), 0o644); err != nil {
		t.Fatal(err)
	}
	return snapshot
}

// TestHubModel: --model takes a Hub id found in the local Hugging Face
// cache and gives the same text as the model's folder; a model that is not
// cached and a broken snapshot are clear errors (exit 1) naming the model,
// the cache and the download command.
func TestHubModel(t *testing.T) {
	folder := storiesDir(t)
	snapshot := hubCache(t)
	gen := func(model string) string {
		t.Helper()
		code, out, errs := lomo(t, "generate", "--model", model, "--prompt", "Once upon a time", "--max-new-tokens", "20", "--temperature", "0")
		if code != 0 {
			t.Fatalf("generate --model %s: exit %d: %s", model, code, errs)
		}
		return out
	}
	want := gen(folder)
	for _, id := range []string{"org/stories260K", "org/stories260K@" + hubCommit} {
		if got := gen(id); got != want {
			t.Errorf("generate --model %s:\n%q\nwant (the folder's):\n%q", id, got, want)
		}
	}
	code, out, errs := lomo(t, "tokenize", "--model", "org/stories260K@main", "--text", "Once upon a time")
	if code != 0 || !strings.HasPrefix(out, "[1,") {
		t.Errorf("tokenize --model org/stories260K@main: exit %d, %q, %s", code, out, errs)
	}
	code, out, errs = lomo(t, "plan", "--model", "org/stories260K", "--batch", "1", "--seq", "16", "--optimizer", "lomo")
	if code != 0 || !strings.Contains(out, "lomo") {
		t.Errorf("plan --model org/stories260K: exit %d, %q, %s", code, out, errs)
	}

	hub := os.Getenv("HF_HUB_CACHE")
	code, _, errs = lomo(t, "generate", "--model", "org/missing-model")
	for _, w := range []string{`"org/missing-model"`, "not in the local Hugging Face cache", hub, "hf download org/missing-model"} {
		if code != 1 || !strings.Contains(errs, w) {
			t.Errorf("missing model: exit %d, error %q does not mention %q", code, errs, w)
		}
	}
	// train says so before it opens a device.
	code, _, errs = lomo(t, "train", "--model_name_or_path", "org/missing-model", "--train_file", "unused.jsonl", "--output_dir", filepath.Join(t.TempDir(), "out"))
	if code != 1 || !strings.Contains(errs, "hf download org/missing-model") || strings.Contains(errs, "adapter:") {
		t.Errorf("train with a missing model: exit %d, stderr %q; want exit 1 naming the download, before any adapter line", code, errs)
	}
	// A blob deleted by hand leaves its snapshot link dangling.
	target, err := os.Readlink(filepath.Join(snapshot, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(snapshot, target)); err != nil {
		t.Fatal(err)
	}
	code, _, errs = lomo(t, "eval", "--model", "org/stories260K", "--task", "copa", "--data", "unused.jsonl")
	for _, w := range []string{"broken snapshot", "model.safetensors links to " + target, "which is missing", "hf download org/stories260K"} {
		if code != 1 || !strings.Contains(errs, w) {
			t.Errorf("dangling link: exit %d, error %q does not mention %q", code, errs, w)
		}
	}
}
