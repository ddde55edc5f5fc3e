package main

import (
	"encoding/json"
	"fmt"
	"io"
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
		if *asJSON {
			b, _ := json.Marshal(a)
			fmt.Fprintln(stdout, string(b))
			continue
		}
		fmt.Fprintf(stdout, "[%d] %s\n    type %s, backend %s\n", a.Index, a.Name, a.Type, a.Backend)
		fmt.Fprintf(stdout, "    features: %s\n", strings.Join(a.Features, " "))
		l := a.Limits
		fmt.Fprintf(stdout, "    max buffer %s, max storage binding %s, %d storage buffers/stage, workgroup memory %d B, %d invocations/workgroup\n",
			bytesString(int64(l.MaxBufferSize)), bytesString(int64(l.MaxStorageBufferBindingSize)), l.MaxStorageBuffersPerStage, l.MaxComputeWorkgroupStorageSize, l.MaxComputeInvocations)
	}
	return nil
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
