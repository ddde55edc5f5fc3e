package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

func init() {
	register("devices", "list WebGPU adapters, their features and limits", cmdDevices)
}

func cmdDevices(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("devices", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per adapter")
	if err := parse(fs, args); err != nil {
		return err
	}
	infos, err := gpu.Adapters()
	if err != nil {
		return err
	}
	if len(infos) == 0 {
		return gpu.ErrNoAdapter
	}
	for _, a := range infos {
		// The limits lomo's device got: open it as training would.
		var got *gpu.Limits
		var openErr string
		if d, err := gpu.Open(gpu.Options{Adapter: strconv.Itoa(a.Index)}); err != nil {
			openErr = err.Error()
		} else {
			l := d.Limits()
			got = &l
			d.Close()
		}
		if *asJSON {
			b, _ := json.Marshal(struct {
				gpu.AdapterInfo
				DeviceLimits *gpu.Limits `json:"device_limits,omitempty"`
				DeviceError  string      `json:"device_error,omitempty"`
			}{a, got, openErr})
			fmt.Fprintln(stdout, string(b))
			continue
		}
		fmt.Fprintf(stdout, "[%d] %s\n    type %s, backend %s", a.Index, a.Name, a.Type, a.Backend)
		if a.Driver != "" && a.Driver != a.Name {
			fmt.Fprintf(stdout, ", driver %s", a.Driver)
		}
		fmt.Fprintf(stdout, "\n    lomo can use: %s\n", a.Caps)
		if slices.Contains(a.Features, gpu.CooperativeMatrixFeature) {
			fmt.Fprintln(stdout, "    cooperative matrices: offered, not enabled (experimental in wgpu 29, whose C library cannot enable experimental features); matmuls use f32 FMAs")
		}
		if got == nil {
			fmt.Fprintf(stdout, "    device: %s\n", openErr)
		} else {
			fmt.Fprintf(stdout, "    device limits: %s\n", limitsString(*got))
		}
		fmt.Fprintf(stdout, "    adapter limits: %s\n", limitsString(a.Limits))
		fmt.Fprintln(stdout, "    memory: WebGPU does not report it; lomo plan --devices N --device-memory SIZE says what fits, and a run reports each device's peak")
		fmt.Fprintf(stdout, "    features: %s\n", strings.Join(a.Features, " "))
	}
	return nil
}

func limitsString(l gpu.Limits) string {
	return fmt.Sprintf("max buffer %s, max storage binding %s, %d storage buffers/stage, workgroup memory %d B, %d invocations/workgroup, %d workgroups/dimension",
		bytesString(int64(l.MaxBufferSize)), bytesString(int64(l.MaxStorageBufferBindingSize)), l.MaxStorageBuffersPerStage,
		l.MaxComputeWorkgroupStorageSize, l.MaxComputeInvocations, l.MaxWorkgroupsPerDimension)
}

// bytesString formats a byte count in binary units.
func bytesString(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
