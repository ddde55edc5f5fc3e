// Package shared locates the third-party test material that lives beside
// the repository (../shared/testdata), never inside it.
//
// LOMO_TESTDATA overrides the location. When the folder is absent, tests skip
// with a printed reason, unless LOMO_REQUIRE_TESTDATA=1 (set by CI), which
// turns the skip into a failure so that CI always runs them.
package shared

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// Dir returns the test data folder, or "" when it cannot be found.
func Dir() string {
	if d := os.Getenv("LOMO_TESTDATA"); d != "" {
		return d
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	// file is <root>/internal/testdata/testdata.go; the data is <root>/../shared/testdata.
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	d := filepath.Join(root, "..", "shared", "testdata")
	if _, err := os.Stat(d); err != nil {
		return ""
	}
	return d
}

// Path returns the path of rel inside the test data folder. If the folder or
// the file is missing it skips the test with the reason, or fails it when
// LOMO_REQUIRE_TESTDATA=1.
func Path(t testing.TB, rel string) string {
	t.Helper()
	d := Dir()
	if d == "" {
		missing(t, "test data folder ../shared/testdata not found (set LOMO_TESTDATA)")
		return ""
	}
	p := filepath.Join(d, rel)
	if _, err := os.Stat(p); err != nil {
		missing(t, "test data "+p+" not found: "+err.Error())
		return ""
	}
	return p
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("LOMO_REQUIRE_TESTDATA") == "1" {
		t.Fatal(why + " (LOMO_REQUIRE_TESTDATA=1)")
	}
	t.Skip(why)
}
