//go:build js

package gpu

import (
	"errors"
	"testing"
	"time"
)

// A lost device (here destroyed on purpose; in real life a driver reset)
// is reported as such by every later operation, never as zeros read back.
// Natively wgpu-native cannot destroy a device (wgpuDeviceDestroy is a
// no-op), so this runs in the browser only.
func TestDeviceLostIsReported(t *testing.T) {
	d := openTest(t)
	b, err := d.NewBuffer(TagScratch, 16)
	if err != nil {
		t.Fatal(err)
	}
	d.plat.dev.Call("destroy")
	for i := 0; i < 100 && d.usable() == nil; i++ {
		time.Sleep(10 * time.Millisecond) // lets the lost promise resolve
	}
	if _, err := d.Read(b, 0, 0); !errors.Is(err, ErrDeviceLost) {
		t.Fatalf("read after the device was lost: got %v, want ErrDeviceLost", err)
	} else {
		t.Logf("error as reported: %v", err)
	}
	if _, err := d.NewBuffer(TagScratch, 16); !errors.Is(err, ErrDeviceLost) {
		t.Errorf("new buffer after the device was lost: got %v", err)
	}
	b.Release()
}
