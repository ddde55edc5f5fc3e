package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

var (
	// ErrNotCached: the name is neither a local path nor a model (or
	// revision) present in the Hugging Face cache.
	ErrNotCached = errors.New("not in the local Hugging Face cache")
	// ErrBroken: the cache holds the model, but its snapshot is unusable
	// (a ref naming a missing snapshot, a dangling link, no config.json).
	ErrBroken = errors.New("broken snapshot in the Hugging Face cache")
)

// commitHash is file_download.py's REGEX_COMMIT_HASH.
var commitHash = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Dir returns the Hugging Face Hub cache folder, chosen from the environment
// as huggingface_hub's constants.py does (see the package documentation).
func Dir() string {
	if d := os.Getenv("HF_HUB_CACHE"); d != "" {
		return expand(d)
	}
	if d := os.Getenv("HUGGINGFACE_HUB_CACHE"); d != "" {
		return expand(d)
	}
	if d := os.Getenv("HF_HOME"); d != "" {
		return filepath.Join(expand(d), "hub")
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		base = filepath.Join("~", ".cache")
	}
	return filepath.Join(expand(base), "huggingface", "hub")
}

// expand is Python's os.path.expandvars(os.path.expanduser(p)): a leading
// ~ becomes the home folder, and $VAR or ${VAR} its value; an unset
// variable is kept (as ${VAR}), as expandvars keeps it.
func expand(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") || strings.HasPrefix(p, "~"+string(filepath.Separator)) {
		if home, err := os.UserHomeDir(); err == nil {
			p = home + p[1:]
		}
	}
	return os.Expand(p, func(name string) string {
		if v, ok := os.LookupEnv(name); ok {
			return v
		}
		return "${" + name + "}"
	})
}

// Resolve returns the folder (or file) that nameOrPath names. A path that
// exists is returned unchanged: a local folder wins over a Hub id of the
// same spelling. Otherwise nameOrPath must be a Hub model id, "org/name"
// or "name", optionally followed by "@revision" (a branch, tag or commit
// hash; "main" when absent), and Resolve returns its snapshot folder in the
// cache of Dir, after checking that every file in it can be read (no
// dangling links into blobs/) and that it has a config.json. Errors wrap
// ErrNotCached or ErrBroken and say which command downloads the model.
func Resolve(nameOrPath string) (string, error) {
	if nameOrPath == "" {
		return "", errors.New("cache: empty model name")
	}
	_, err := os.Stat(nameOrPath)
	if err == nil {
		return nameOrPath, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("cache: %w", err)
	}
	id, revision, hasRevision := strings.Cut(nameOrPath, "@")
	if !validID(id) || (hasRevision && !validRevision(revision)) {
		return "", fmt.Errorf("cache: %q: no such file or folder, and not a Hub model id (org/name[@revision])", nameOrPath)
	}
	if !hasRevision {
		revision = "main"
	}
	return resolveIn(Dir(), id, revision, hasRevision)
}

// resolveIn finds revision of the model id in the cache folder dir.
func resolveIn(dir, id, revision string, explicit bool) (string, error) {
	download := "hf download " + id
	if explicit {
		download += " --revision " + revision
	}
	repoName := "models--" + strings.ReplaceAll(id, "/", "--")
	repo := filepath.Join(dir, repoName)
	notCached := func(format string, args ...any) error {
		return fmt.Errorf("cache: %q: %w: %s; download it with: %s", id, ErrNotCached, fmt.Sprintf(format, args...), download)
	}
	broken := func(format string, args ...any) error {
		return fmt.Errorf("cache: %q: %w: %s (in %s); download it again with: %s", id, ErrBroken, fmt.Sprintf(format, args...), repo, download)
	}
	if st, err := os.Stat(repo); err != nil || !st.IsDir() {
		return "", notCached("no folder %s in the cache %s (and no local folder %q)", repoName, dir, id)
	}
	commit := revision
	fromRef := !commitHash.MatchString(revision)
	if fromRef {
		b, err := os.ReadFile(filepath.Join(repo, "refs", filepath.FromSlash(revision)))
		if errors.Is(err, fs.ErrNotExist) {
			return "", notCached("revision %q has no refs/%s in %s (cached revisions: %s)", revision, revision, repo, cachedRefs(repo))
		}
		if err != nil {
			return "", broken("refs/%s: %v", revision, err)
		}
		// huggingface_hub writes the bare hash; a trailing newline from an
		// editor or another tool is tolerated.
		commit = strings.TrimSpace(string(b))
		if !commitHash.MatchString(commit) {
			return "", broken("refs/%s holds %q, not a 40-hex commit hash", revision, commit)
		}
	}
	snapshot := filepath.Join(repo, "snapshots", commit)
	if st, err := os.Stat(snapshot); err != nil || !st.IsDir() {
		if !fromRef {
			return "", notCached("commit %s has no snapshots/%s in %s", commit, commit, repo)
		}
		return "", broken("refs/%s names commit %s, but snapshots/%s is missing", revision, commit, commit)
	}
	if err := checkSnapshot(snapshot); err != nil {
		return "", broken("snapshots/%s: %v", commit, err)
	}
	if _, err := os.Stat(filepath.Join(snapshot, "config.json")); err != nil {
		return "", broken("snapshots/%s has no config.json", commit)
	}
	return snapshot, nil
}

// checkSnapshot reports the first file of a snapshot that cannot be read
// through: a link whose blob is missing (an interrupted download, a blob
// deleted by hand).
func checkSnapshot(snapshot string) error {
	return filepath.WalkDir(snapshot, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		if _, err := os.Stat(path); err != nil {
			rel, _ := filepath.Rel(snapshot, path)
			if target, lerr := os.Readlink(path); lerr == nil {
				return fmt.Errorf("%s links to %s, which is missing", filepath.ToSlash(rel), target)
			}
			return fmt.Errorf("%s: %w", filepath.ToSlash(rel), err)
		}
		return nil
	})
}

// cachedRefs lists the revisions under repo/refs, for an error message.
func cachedRefs(repo string) string {
	refs := filepath.Join(repo, "refs")
	var names []string
	filepath.WalkDir(refs, func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(refs, path)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// validID is huggingface_hub's validate_repo_id: "name" or
// "namespace/name" of letters, digits, "-", "_" and ".", each part starting
// and ending with a letter, digit or "_" (the regex's \b), the name at most
// 96 characters, no "--" or "..", not ending in ".git".
func validID(id string) bool {
	if strings.Contains(id, "--") || strings.Contains(id, "..") || strings.HasSuffix(id, ".git") {
		return false
	}
	parts := strings.Split(id, "/")
	if len(parts) > 2 || len([]rune(parts[len(parts)-1])) > 96 {
		return false
	}
	word := func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	for _, p := range parts {
		r := []rune(p)
		if len(r) == 0 || !word(r[0]) || !word(r[len(r)-1]) {
			return false
		}
		for _, c := range r {
			if !word(c) && c != '-' && c != '.' {
				return false
			}
		}
	}
	return true
}

// validRevision refuses a revision that would leave refs/ or snapshots/
// (file_download.py's _get_pointer_path refuses the same).
func validRevision(rev string) bool {
	if rev == "" || strings.HasPrefix(rev, "/") || strings.Contains(rev, `\`) {
		return false
	}
	for _, part := range strings.Split(rev, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}
