package main

import (
	"encoding/json"
	"fmt"
	"github.com/lomo-dev/lomo/wgsl"
	"io"
	"math"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("bench", "kernel and training-step benchmarks as JSON", cmdBench)
}

// benchReport is `lomo bench --json`.
type benchReport struct {
	Date    string              `json:"date"`
	Commit  string              `json:"commit,omitempty"`
	Adapter string              `json:"adapter"`
	Type    string              `json:"adapter_type"`
	Backend string              `json:"backend"`
	GOOS    string              `json:"goos"`
	Probe   *train.Probe        `json:"probe,omitempty"`
	Kernels []train.KernelBench `json:"kernels"`
	Steps   []train.BenchResult `json:"steps"`
	// Tuned: the kernel variants the device chose by timing (--tune), each
	// with every variant's time.
	Tuned []gpu.Choice `json:"tuned,omitempty"`
	// TuningCache is the file that kept choices between runs, and how many
	// of Tuned came from it (timed by an earlier run) rather than this one.
	TuningCache       string `json:"tuning_cache,omitempty"`
	TuningCacheLoaded int    `json:"tuning_cache_loaded,omitempty"`
}

func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs := newOptions("bench", stderr).withAdapter().withDType("f16")
	model := fs.String("model", "", "config.json (or model folder, or Hub id in the local HF cache) for the training-step benchmark; empty: kernels only")
	batch := fs.Int("batch", 4, "sequences per step")
	seq := fs.Int("seq", 512, "tokens per sequence")
	steps := fs.Int("steps", 3, "timed steps")
	opts := fs.String("optimizer", "lomo", "optimizers to time, comma separated")
	ckpt := fs.Bool("checkpointing", true, "activation checkpointing")
	clip := fs.Float64("clip-grad-norm", 1, "clip_grad_norm (LOMO then runs the two-pass step)")
	sizes := fs.String("matmul", "1024,2048,4096", "square matmul sizes to time (empty: none)")
	tileList := fs.String("matmul-tiles", "", "time the matmuls with each of these tilings (BMxBNxBK/TMxTN, comma separated, or \"all\"); default: the one lomo chooses")
	peak := fs.Float64("peak-tflops", 0, "the adapter's peak TFLOP/s, for the floor next to each step time (default: the probe's f32 FMA rate)")
	probe := fs.Bool("probe", true, "measure the adapter's ceilings first (FMA f32/f16, copy bandwidth)")
	attnKernels := fs.String("attention-kernels", "auto", "attention kernels: auto (tiled or block kernels where they fit, tuned on a GPU) or rows (one row per workgroup everywhere; same results)")
	fs.oneOf("attention-kernels", attnKernels, "auto", "rows")
	profile := fs.Bool("profile", false, "after the timed steps, run one with each dispatch timed alone and report the time per kernel")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.atLeast("batch", batch, 1)
	fs.atLeast("seq", seq, 1)
	fs.atLeast("steps", steps, 1)
	fs.listOf("optimizer", opts, "lomo", "adalomo", "sgd", "adamw")
	fs.within("clip-grad-norm", clip, 0, math.Inf(1))
	fs.within("peak-tflops", peak, 0, math.Inf(1))
	var ns []int
	var tiles []wgsl.Tile
	fs.check(func() error {
		switch *tileList {
		case "":
		case "all":
			tiles = wgsl.Tiles
		default:
			for _, s := range strings.Split(*tileList, ",") {
				t, err := wgsl.ParseTile(s)
				if err != nil {
					return fmt.Errorf("--matmul-tiles: %v", err)
				}
				tiles = append(tiles, t)
			}
		}
		return nil
	})
	fs.check(func() error {
		if *sizes == "" {
			return nil
		}
		for _, s := range strings.Split(*sizes, ",") {
			var n int
			if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
				return fmt.Errorf("--matmul %q: want positive sizes, comma separated", *sizes)
			}
			ns = append(ns, n)
		}
		return nil
	})
	if err := fs.parse(args); err != nil {
		return err
	}
	wgsl.AttentionRowKernels = *attnKernels == "rows"
	d, err := fs.open(stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	for _, t := range tiles {
		if err := t.Fits(d); err != nil {
			return fmt.Errorf("%w: --matmul-tiles: %v", errUsage, err)
		}
	}
	rep := benchReport{Date: time.Now().UTC().Format(time.RFC3339), Adapter: d.Info.Name, Type: d.Info.Type, Backend: d.Info.Backend, GOOS: runtime.GOOS}
	if b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rep.Commit = strings.TrimSpace(string(b))
	}
	if *probe {
		p, err := train.ProbePeaks(d)
		if err != nil {
			return fmt.Errorf("bench probe: %w", err)
		}
		rep.Probe = &p
		if *peak == 0 {
			*peak = p.FMAF32GFLOPs / 1000
		}
	}
	if len(ns) > 0 {
		if rep.Kernels, err = train.BenchMatmul(d, ns, 5, tiles); err != nil {
			return err
		}
		for i := range rep.Kernels {
			if rep.Probe != nil && rep.Probe.FMAF32GFLOPs > 0 {
				rep.Kernels[i].OfProbe = rep.Kernels[i].GFLOPs / rep.Probe.FMAF32GFLOPs
			}
		}
	}
	if *model != "" {
		cfg, err := config.Load(*model)
		if err != nil {
			return err
		}
		for _, o := range strings.Split(*opts, ",") {
			r, err := train.BenchStep(d, train.BenchRequest{Config: cfg, Batch: *batch, Seq: *seq, Steps: *steps, Optimizer: o,
				DType: fs.DType(), Checkpointing: *ckpt, ClipGradNorm: *clip, PeakTFLOPs: *peak, Profile: *profile})
			if err != nil {
				return fmt.Errorf("bench %s: %w", o, err)
			}
			rep.Steps = append(rep.Steps, r)
		}
	}
	rep.Tuned = d.Choices()
	rep.TuningCache, rep.TuningCacheLoaded, _ = d.TuningCache()
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	fmt.Fprintf(stdout, "adapter %s (%s, %s)\n", rep.Adapter, rep.Type, rep.Backend)
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	if p := rep.Probe; p != nil {
		fmt.Fprintf(w, "probe\tfma f32 %.1f GFLOP/s\tfma f16 %.1f GFLOP/s\tcopy %.1f GB/s\t\n", p.FMAF32GFLOPs, p.FMAF16GFLOPs, p.CopyGBs)
	}
	for _, k := range rep.Kernels {
		of := ""
		if k.OfProbe > 0 {
			of = fmt.Sprintf("%.0f%% of probe", 100*k.OfProbe)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.3f ms\t%.1f GFLOP/s\t%s\t\n", k.Kernel, k.Shape, k.Tile, 1e3*k.Seconds, k.GFLOPs, of)
	}
	for _, s := range rep.Steps {
		fmt.Fprintf(w, "%s %s B%d T%d\t%.3f s/step\t%.0f tok/s\t%.2f TFLOP/s\tfloor %.3f s\tpeak %s (plan %s, %.2f%%)\t%d dispatches\t\n",
			s.Optimizer, s.DType, s.Batch, s.Seq, s.StepSeconds, s.TokensPerSec, s.TFLOPs, s.FloorSeconds,
			peakBytes(s.PeakBytes), peakBytes(s.PlannedBytes), s.PlanErrorPct, s.Dispatches)
		if len(s.Profile) > 0 {
			fmt.Fprintf(w, "  profiled step\t%.3f s\t(each dispatch alone)\t\n", s.ProfileSeconds)
		}
		for i, k := range s.Profile {
			if i == 12 {
				fmt.Fprintf(w, "  ...\t%d more kernels\t\n", len(s.Profile)-i)
				break
			}
			fmt.Fprintf(w, "  %s\t%d calls\t%.3f s\t%.1f%%\t\n", k.Kernel, k.Calls, k.Seconds, 100*k.Seconds/s.ProfileSeconds)
		}
	}
	for _, c := range rep.Tuned {
		// The chosen variant's time against the untuned one's (the first).
		var first, chosen float64
		for i, tm := range c.Timed {
			if i == 0 {
				first = tm.Seconds
			}
			if tm.Variant == c.Chosen {
				chosen = tm.Seconds
			}
		}
		fmt.Fprintf(w, "tuned %s\t%s\t%.3f ms\t%.2fx the untuned %s\t\n", c.Key, c.Chosen, 1e3*chosen, first/chosen, c.Timed[0].Variant)
	}
	return w.Flush()
}
