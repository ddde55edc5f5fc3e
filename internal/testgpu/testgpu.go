// Package testgpu is the TestMain of lomo's GPU test packages. It runs the
// package's setup (opening the shared device), its tests and its teardown,
// and with LOMO_VALIDATION=1 runs them under the Khronos Vulkan validation
// layers: any message the layers log fails the test binary.
package testgpu

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
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

// SecondDevice opens another device on the adapter of d, closed when t
// ends: two devices of one process, as a model split over devices uses
// them, without two GPUs.
func SecondDevice(t testing.TB, d *gpu.Device) *gpu.Device {
	t.Helper()
	d2, err := gpu.Open(gpu.Options{Adapter: strconv.Itoa(d.Info.Index)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d2.Close)
	return d2
}
