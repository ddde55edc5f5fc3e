package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	commitMain = "0123456789abcdef0123456789abcdef01234567"
	commitOld  = "89abcdef0123456789abcdef0123456789abcdef"
)

// hubModel lays out a model in a cache folder as huggingface_hub does:
// blobs named by content hash, snapshots/<commit>/<file> as relative
// symlinks into blobs, and refs/<ref> holding the commit (no newline).
func hubModel(t *testing.T, cacheDir, id, commit string, refs []string, files map[string]string) string {
	t.Helper()
	repo := filepath.Join(cacheDir, "models--"+strings.ReplaceAll(id, "/", "--"))
	snap := filepath.Join(repo, "snapshots", commit)
	for name, content := range files {
		sum := sha256.Sum256([]byte(content))
		blob := filepath.Join(repo, "blobs", hex.EncodeToString(sum[:]))
		link := filepath.Join(snap, filepath.FromSlash(name))
		for _, d := range []string{filepath.Dir(blob), filepath.Dir(link)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(blob, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(filepath.Dir(link), blob)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(rel, link); err != nil {
			t.Fatal(err)
		}
	}
	for _, ref := range refs {
		p := filepath.Join(repo, "refs", filepath.FromSlash(ref))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(commit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return snap
}

// TestDir: the cache folder follows huggingface_hub's constants.py:
// HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME, ~/.cache.
func TestDir(t *testing.T) {
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skip("no home folder: ", err)
	}
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, filepath.Join(home, ".cache", "huggingface", "hub")},
		{map[string]string{"XDG_CACHE_HOME": "/xdg"}, "/xdg/huggingface/hub"},
		{map[string]string{"XDG_CACHE_HOME": "/xdg", "HF_HOME": "/hf"}, "/hf/hub"},
		{map[string]string{"HF_HOME": "~/hf"}, filepath.Join(home, "hf", "hub")},
		{map[string]string{"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy"}, "/legacy"},
		{map[string]string{"HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HUB_CACHE": "/hub"}, "/hub"},
		{map[string]string{"HF_HUB_CACHE": "$LOMO_TEST_ROOT/c", "LOMO_TEST_ROOT": "/r"}, "/r/c"},
		{map[string]string{"HF_HUB_CACHE": "${LOMO_TEST_UNSET}/c"}, "${LOMO_TEST_UNSET}/c"},
	}
	for _, c := range cases {
		for _, k := range []string{"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "LOMO_TEST_ROOT", "LOMO_TEST_UNSET"} {
			t.Setenv(k, c.env[k])
			if c.env[k] == "" {
				os.Unsetenv(k)
			}
		}
		if got := Dir(); got != c.want {
			t.Errorf("env %v: Dir() = %q, want %q", c.env, got, c.want)
		}
	}
}

func TestResolve(t *testing.T) {
	hub := t.TempDir()
	t.Setenv("HF_HUB_CACHE", hub)
	files := map[string]string{"config.json": "{}", "model.safetensors": "weights", "tokenizer.json": "{}"}
	snapMain := hubModel(t, hub, "org/name", commitMain, []string{"main", "v1.0", "refs/pr/1"}, files)
	snapOld := hubModel(t, hub, "org/name", commitOld, nil, files)
	snapBare := hubModel(t, hub, "gpt2", commitMain, []string{"main"}, files)
	// A ref written with a trailing newline (by hand) still resolves.
	os.WriteFile(filepath.Join(hub, "models--org--name", "refs", "v1.0"), []byte(commitMain+"\n"), 0o644)

	local := t.TempDir()
	cases := []struct{ name, want string }{
		{"org/name", snapMain},
		{"org/name@main", snapMain},
		{"org/name@v1.0", snapMain},
		{"org/name@refs/pr/1", snapMain},
		{"org/name@" + commitOld, snapOld}, // a commit hash names its snapshot directly
		{"gpt2", snapBare},
		{local, local}, // a path that exists is returned as it is
	}
	for _, c := range cases {
		got, err := Resolve(c.name)
		if err != nil || got != c.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	b, err := os.ReadFile(filepath.Join(snapMain, "model.safetensors"))
	if err != nil || string(b) != "weights" {
		t.Errorf("reading through the snapshot link: %q, %v", b, err)
	}

	// A local folder wins over a Hub id of the same spelling.
	t.Chdir(t.TempDir())
	if err := os.MkdirAll("org/name", 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := Resolve("org/name"); err != nil || got != "org/name" {
		t.Errorf("Resolve(org/name) with a local org/name folder = %q, %v; want the local folder", got, err)
	}
}

// TestResolveErrors: a model or revision that is not cached, and each kind
// of broken snapshot, give an error that names the model, the cache folder
// searched, what is wrong and the command that downloads it.
func TestResolveErrors(t *testing.T) {
	hub := t.TempDir()
	t.Setenv("HF_HUB_CACHE", hub)
	files := map[string]string{"config.json": "{}", "model.safetensors": "weights"}
	hubModel(t, hub, "org/ok", commitMain, []string{"main"}, files)

	snap := hubModel(t, hub, "org/dangling", commitMain, []string{"main"}, files)
	target, _ := os.Readlink(filepath.Join(snap, "model.safetensors"))
	os.Remove(filepath.Join(snap, target))

	hubModel(t, hub, "org/noconfig", commitMain, []string{"main"}, map[string]string{"model.safetensors": "weights"})

	hubModel(t, hub, "org/nosnapshot", commitMain, []string{"main"}, files)
	os.RemoveAll(filepath.Join(hub, "models--org--nosnapshot", "snapshots"))

	hubModel(t, hub, "org/badref", commitMain, []string{"main"}, files)
	os.WriteFile(filepath.Join(hub, "models--org--badref", "refs", "main"), []byte("not a hash"), 0o644)

	cases := []struct {
		name string
		err  error
		want []string
	}{
		{"org/missing", ErrNotCached, []string{`"org/missing"`, hub, "models--org--missing", "hf download org/missing"}},
		{"org/ok@v2", ErrNotCached, []string{`revision "v2"`, "refs/v2", "cached revisions: main", "hf download org/ok --revision v2"}},
		{"org/ok@" + commitOld, ErrNotCached, []string{"snapshots/" + commitOld, "hf download org/ok --revision " + commitOld}},
		{"org/dangling", ErrBroken, []string{"model.safetensors links to ../../blobs/", "which is missing", "hf download org/dangling"}},
		{"org/noconfig", ErrBroken, []string{"no config.json", "hf download org/noconfig"}},
		{"org/nosnapshot", ErrBroken, []string{"refs/main names commit " + commitMain, "snapshots/" + commitMain + " is missing"}},
		{"org/badref", ErrBroken, []string{`refs/main holds "not a hash"`}},
	}
	for _, c := range cases {
		_, err := Resolve(c.name)
		if !errors.Is(err, c.err) {
			t.Errorf("Resolve(%q): error %v, want %v", c.name, err, c.err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Resolve(%q): error %q does not mention %q", c.name, err, w)
			}
		}
	}

	// Names that are neither an existing path nor a valid Hub id.
	for _, name := range []string{"", "./missing/dir", "/no/such/folder", "a/b/c", "org/na--me", "org/name.git",
		"-org/name", "org/name@", "org/name@../../x", "org/" + strings.Repeat("x", 97)} {
		_, err := Resolve(name)
		if err == nil || errors.Is(err, ErrNotCached) || errors.Is(err, ErrBroken) {
			t.Errorf("Resolve(%q): error %v, want a not-a-path-nor-an-id error", name, err)
		}
	}
}
