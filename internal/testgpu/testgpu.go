// Package testgpu is the TestMain of lomo's GPU test packages. It runs the
// package's setup (opening the shared device), its tests and its teardown,
// and with LOMO_VALIDATION=1 runs them under the Khronos Vulkan validation
// layers: any message the layers log fails the test binary.
package testgpu

import (
	"fmt"
	"os"
	"testing"
)

// Main runs m between setup and its teardown, then exits. A setup error
// (no adapter, say) or a validation message fails the binary.
//
// Tuning choices go to a folder of the binary's own (LOMO_TUNE_CACHE),
// removed at the end: a test never reads what another run tuned, nor
// writes to the user's cache.
func Main(m *testing.M, setup func() (teardown func(), err error)) {
	if os.Getenv("LOMO_TUNE_CACHE") == "" {
		if dir, err := os.MkdirTemp("", "lomo-tuning-"); err == nil {
			os.Setenv("LOMO_TUNE_CACHE", dir)
			defer os.RemoveAll(dir)
		}
	}
	os.Exit(run(m, setup))
}

func run(m *testing.M, setup func() (teardown func(), err error)) int {
	finish, err := startValidation()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	teardown := func() {}
	if setup != nil {
		if teardown, err = setup(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	code := m.Run()
	teardown()
	// A binary whose setup opened a device created a Vulkan instance, so
	// the layer must have written its log; others may have created none.
	if err := finish(setup != nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}
