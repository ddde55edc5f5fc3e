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
func Main(m *testing.M, setup func() (teardown func(), err error)) {
	finish, err := startValidation()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	teardown := func() {}
	if setup != nil {
		if teardown, err = setup(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
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
	os.Exit(code)
}
