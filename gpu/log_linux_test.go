package gpu

import (
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/oliverbestmann/webgpu/wgpu"
)

// TestWGPULogLines: wgpu-native's log lines (LOMO_WGPU_LOG) end where its
// messages do. The binding's callback read v29's messages, string views,
// as C strings and printed on past their ends ("... transient_saves_memory:
// false }~"); lomo's (wgpu_native.go) prints each view to its length. The
// adapters are listed with the debug log on and stderr (where the C
// callback writes) sent to a file.
func TestWGPULogLines(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "wgpu-log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved, err := syscall.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(int(f.Fd()), 2, 0); err != nil {
		t.Fatal(err)
	}
	wgpu.SetLogLevel(wgpu.LogLevelDebug)
	_, listErr := Adapters()
	wgpu.SetLogLevel(logLevel)
	if err := syscall.Dup3(saved, 2, 0); err != nil {
		t.Fatal(err)
	}
	syscall.Close(saved)
	if listErr != nil {
		t.Fatal(listErr)
	}
	log, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(log), "\n") {
		if !strings.HasPrefix(line, "[wgpu] [Debug] Adapter AdapterInfo {") {
			continue
		}
		n++
		if !strings.HasSuffix(line, "}") {
			t.Errorf("a log line runs on past its message: ...%q", line[max(0, len(line)-60):])
		}
	}
	if n == 0 {
		t.Fatalf("wgpu's debug log names no adapter:\n%s", log)
	}
}
