package train

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/internal/shared"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/optim"
)

// secondDevice opens another device on the test adapter: two devices of
// one process, as a split model uses them, without two GPUs. (In the
// package's tests: testgpu, the TestMain every GPU package shares, must not
// import gpu, whose own tests use it.)
func secondDevice(t *testing.T) *gpu.Device {
	t.Helper()
	d, err := gpu.Open(gpu.Options{Adapter: strconv.Itoa(dev.Info.Index)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// splitConfig is a short COPA fine-tune of stories260K that saves its
// final model and evaluates on two examples only.
func splitConfig(t *testing.T, out string) Config {
	c := copaConfig(t, out)
	c.ZeroShotEval = false
	c.TrainBatchSize, c.EvalBatchSize = 2, 4
	c.MaxSteps = 2
	c.SaveStrategy = "end"
	lines, err := os.ReadFile(c.TrainFile)
	if err != nil {
		t.Fatal(err)
	}
	eval := filepath.Join(t.TempDir(), "eval.jsonl")
	if err := os.WriteFile(eval, []byte(strings.Join(strings.SplitN(string(lines), "\n", 3)[:2], "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.EvalFile = eval
	return c
}

// TestSplitFineTuneMatchesOneDevice: LOMO and AdaLomo fine-tunes of
// stories260K split 3+2 over two devices save a checkpoint byte for byte
// equal to the one-device run's (one HF model whatever the split), with
// and without checkpointing, f32 and f16 (the two-pass norm clipping and,
// under f16, the loss scaler's overflow check run across both devices).
// The summary reports each device and the boundary copies per step.
func TestSplitFineTuneMatchesOneDevice(t *testing.T) {
	dev2 := secondDevice(t)
	for _, opt := range []string{"lomo", "adalomo"} {
		for _, dt := range []string{"f32", "f16"} {
			for _, ckpt := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/%s/ckpt=%v", opt, dt, ckpt), func(t *testing.T) {
					cfg := func(out string) Config {
						c := splitConfig(t, out)
						c.Optimizer, c.DType, c.GradCheckpoint = opt, dt, ckpt
						// LOMO: one step, at a loss scale that does not
						// overflow, so that it updates; AdaLomo: two, so the
						// second uses the factored state of the first.
						c.MaxSteps, c.LossScale = 1, 1024
						if opt == "adalomo" {
							c.MaxSteps, c.LearningRate = 2, 0.01
							if dt == "f32" {
								c.ClipGradNorm = 0 // one pass; f16 needs the norm pass
							}
						}
						return c
					}
					run := func(ds []*gpu.Device, split string) (string, Summary) {
						c := cfg(t.TempDir())
						if len(ds) > 1 {
							c.Devices, c.DeviceSplit = "0,0", split
						}
						tr, err := NewSplit(c, ds, Options{})
						if err != nil {
							t.Fatal(err)
						}
						defer tr.Release()
						s, err := tr.Run()
						if err != nil {
							t.Fatal(err)
						}
						b, err := os.ReadFile(filepath.Join(c.OutputDir, "final", "model.safetensors"))
						if err != nil {
							t.Fatal(err)
						}
						return string(b), s
					}
					one, s1 := run([]*gpu.Device{dev}, "")
					two, s2 := run([]*gpu.Device{dev, dev2}, "3,2")
					if one != two {
						t.Errorf("split run saved a different model.safetensors than the one-device run")
					}
					if s1.FinalLoss != s2.FinalLoss || s1.Devices != nil {
						t.Errorf("final loss %v (one device) vs %v (split); one-device devices %v", s1.FinalLoss, s2.FinalLoss, s1.Devices)
					}
					if len(s2.Devices) != 2 || s2.Devices[0].Layers != "0-2" || s2.Devices[1].Layers != "3-4" || s2.Devices[1].Peak <= 0 {
						t.Errorf("split summary devices %+v: want layers 0-2 and 3-4 with their peaks", s2.Devices)
					}
					// Per step: forward and back across the boundary, and the
					// tied head's hidden state to the first device and back,
					// in each pass (two with clip_grad_norm).
					passes := 1.0
					if cfg("").ClipGradNorm > 0 {
						passes = 2
					}
					if s2.SkippedSteps != 0 || s2.Transfers == nil || s2.Transfers.Count != 4*passes {
						t.Errorf("transfers %+v, %d skipped steps: want %v copies per step, none skipped", s2.Transfers, s2.SkippedSteps, 4*passes)
					}
				})
			}
		}
	}
}

// measureSplit runs the planned step on fresh devices of the test adapter
// holding m split as req.Split, and returns each device's table.
func measureSplit(t *testing.T, ds []*gpu.Device, req PlanRequest) []DevicePlan {
	t.Helper()
	m, err := nn.LoadLlamaSplit(nn.Placement{Devices: ds, Layers: req.Split}, shared.Path(t, "models/stories260K"), req.DType)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	m.Checkpointing = req.Checkpointing
	opt, err := optim.New(ds[0], optim.Config{Name: req.Optimizer, Schedule: optim.Schedule{Kind: "constant", LR: 1e-3}, ClipGradNorm: req.ClipGradNorm}, req.DType)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Release()
	in := planBatch(t, m, req)
	defer in.Release()
	for i := 0; i < 2; i++ { // as PlanStep
		if _, err := opt.Step(m.Params(), StepForward(m, in, 0)); err != nil {
			t.Fatal(err)
		}
	}
	var out []DevicePlan
	for i, d := range ds {
		out = append(out, devicePlan(d.Stats(), req.Split[i]))
	}
	return out
}

// TestSplitPlanMatchesMeasurement: for stories260K split 3+2 over two
// fresh devices, each device's measured peaks (total and per tag) equal
// the planner's figures for that device, byte for byte.
func TestSplitPlanMatchesMeasurement(t *testing.T) {
	cfgDir := shared.Path(t, "models/stories260K")
	for _, req := range []PlanRequest{
		{Optimizer: "lomo", DType: gpu.F32, Batch: 2, Seq: 24, Checkpointing: true, ClipGradNorm: 1},
		{Optimizer: "adalomo", DType: gpu.F16, Batch: 3, Seq: 16, Checkpointing: false, ClipGradNorm: 1},
	} {
		t.Run(fmt.Sprintf("%s/%v/ckpt=%v", req.Optimizer, req.DType, req.Checkpointing), func(t *testing.T) {
			cfg, err := config.Load(cfgDir)
			if err != nil {
				t.Fatal(err)
			}
			req.Config, req.Devices, req.Split = cfg, 2, []int{3, 2}
			plan, err := PlanStep(req)
			if err != nil {
				t.Fatal(err)
			}
			ds := []*gpu.Device{secondDevice(t), secondDevice(t)}
			got := measureSplit(t, ds, req)
			for i := range ds {
				if got[i] != plan.PerDevice[i] {
					t.Errorf("device %d: measured %+v\n planned %+v", i, got[i], plan.PerDevice[i])
				}
			}
			if plan.Total != max(plan.PerDevice[0].Total, plan.PerDevice[1].Total) {
				t.Errorf("plan total %d is not the largest device peak of %+v", plan.Total, plan.PerDevice)
			}
			t.Logf("per device (planned = measured): %+v", got)
		})
	}
}

// TestPlanChoosesSplit: with no split given, the planner's split of
// stories260K over two devices has the smallest largest per-device peak
// of every possible split; a split that does not fit is refused.
func TestPlanChoosesSplit(t *testing.T) {
	cfg, err := config.Load(shared.Path(t, "models/stories260K"))
	if err != nil {
		t.Fatal(err)
	}
	req := PlanRequest{Config: cfg, Optimizer: "lomo", DType: gpu.F32, Batch: 2, Seq: 32, Checkpointing: true, ClipGradNorm: 1, Devices: 2}
	chosen, err := PlanStep(req)
	if err != nil {
		t.Fatal(err)
	}
	for k := 1; k < cfg.NumLayers; k++ {
		r := req
		r.Split = []int{k, cfg.NumLayers - k}
		p, err := PlanStep(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("split %v: largest peak %d", r.Split, p.Total)
		if p.Total < chosen.Total {
			t.Errorf("split %v peaks at %d, below the chosen %v at %d", r.Split, p.Total, chosen.Split, chosen.Total)
		}
	}
	for _, bad := range []struct {
		devices int
		split   []int
		want    string
	}{{6, nil, "6 devices for a model of 5 layers"}, {2, []int{3, 3}, "covers 6 layers"}, {2, []int{5}, "1 layer counts for 2 devices"}} {
		r := req
		r.Devices, r.Split = bad.devices, bad.split
		if _, err := PlanStep(r); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("devices %d split %v: error %v, want one saying %q", bad.devices, bad.split, err, bad.want)
		}
	}
}

// failOn closes a device when a given step has finished: the next step
// then fails on it, as after a device loss.
type failOn struct {
	d     *gpu.Device
	after int
	steps int
}

func (f *failOn) Start(int, string) {}
func (f *failOn) Finish()           {}
func (f *failOn) Step(float64) {
	if f.steps++; f.steps == f.after {
		f.d.Close()
	}
}

// TestSplitDeviceFailure: when one device of a split run fails, the run
// stops with an error naming that device and the last checkpoint, which
// stays intact and loads.
func TestSplitDeviceFailure(t *testing.T) {
	dev2 := secondDevice(t)
	c := splitConfig(t, t.TempDir())
	c.EvalFile, c.TrainSize = "", 4 // two steps per epoch
	c.MaxSteps, c.NumTrainEpochs = 0, 2
	c.SaveStrategy, c.Devices, c.DeviceSplit = "epoch", "0,0", "2,3"
	tr, err := NewSplit(c, []*gpu.Device{dev, dev2}, Options{Progress: &failOn{d: dev2, after: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Release()
	_, err = tr.Run()
	ck := filepath.Join(c.OutputDir, "checkpoint-2")
	if err == nil || !strings.Contains(err.Error(), "device 1 (") || !strings.Contains(err.Error(), ck+", is intact") {
		t.Fatalf("run error %v: want one naming device 1 and %s", err, ck)
	}
	t.Logf("error: %v", err)
	m, err := nn.LoadLlama(dev, ck, gpu.F32)
	if err != nil {
		t.Fatalf("the last checkpoint does not load: %v", err)
	}
	m.Release()
}
