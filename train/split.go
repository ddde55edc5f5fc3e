package train

import (
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/nn"
)

// DeviceReport is one device of a split model in a run's summary.
type DeviceReport struct {
	Index   int    `json:"index"`
	Adapter string `json:"adapter"`
	Layers  string `json:"layers"`     // the blocks it holds, e.g. "0-2"
	Peak    int64  `json:"peak_bytes"` // device memory peak of training
	Params  int64  `json:"params_bytes"`
}

// placement is where the trainer's model lives: one device, or the split
// of device_split or of the planner over several.
func (tr *Trainer) placement(modelDir string, dt gpu.DType) (nn.Placement, error) {
	if len(tr.Devs) == 1 {
		return nn.OnDevice(tr.D), nil
	}
	split, err := tr.Cfg.Split()
	if err != nil {
		return nn.Placement{}, fmt.Errorf("train: %w", err)
	}
	if split == nil {
		cfg, err := config.Load(modelDir)
		if err != nil {
			return nn.Placement{}, err
		}
		p, err := PlanStep(PlanRequest{
			Config: cfg, Batch: tr.Cfg.TrainBatchSize, Seq: tr.Cfg.DataMaxLength, Optimizer: tr.Cfg.Optimizer, DType: dt,
			Checkpointing: tr.Cfg.GradCheckpoint, ClipGradNorm: tr.Cfg.ClipGradNorm, Devices: len(tr.Devs),
		})
		if err != nil {
			return nn.Placement{}, fmt.Errorf("train: planning the split over %d devices: %w", len(tr.Devs), err)
		}
		split = p.Split
		fmt.Fprintf(tr.opts.Log, "device split %s (planned: largest per-device peak %s)\n", splitString(split), gb(p.Total))
	}
	return nn.Placement{Devices: tr.Devs, Layers: split}, nil
}

// deviceReports describes each device of a split model (nil for one).
func (tr *Trainer) deviceReports() []DeviceReport {
	if len(tr.Devs) < 2 {
		return nil
	}
	var out []DeviceReport
	first := 0
	for i, d := range tr.Devs {
		n := tr.Model.Split()[i]
		st := d.Stats()
		if i < len(tr.devStats) {
			st = tr.devStats[i]
		}
		out = append(out, DeviceReport{Index: i, Adapter: d.Info.Name, Layers: fmt.Sprintf("%d-%d", first, first+n-1),
			Peak: st.Total.Peak, Params: st.Tag(gpu.TagParam).Live})
		first += n
	}
	return out
}

// failedDevice names the device that failed, for a split model.
func (tr *Trainer) failedDevice() string {
	if len(tr.Devs) < 2 {
		return ""
	}
	for i, d := range tr.Devs {
		if err := d.Err(); err != nil {
			return fmt.Sprintf("device %d (%s) failed: %v; ", i, d.Info.Name, err)
		}
	}
	return ""
}

func splitString(split []int) string {
	s := make([]string, len(split))
	for i, n := range split {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, "+")
}

func gb(n int64) string { return fmt.Sprintf("%.2f GB", float64(n)/1e9) }
