package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("plan", "predict device memory for each optimizer and whether it fits a card", cmdPlan)
}

// cards are the fit columns of the plan table. A card sold as 24 GB has 24
// GiB; comparing a plan with 24e9 bytes leaves the other 7% to what lomo
// does not count (the driver's context, a display).
var cards = []struct {
	name  string
	bytes int64
}{{"24GB", 24e9}, {"48GB", 48e9}, {"80GB", 80e9}}

func cmdPlan(args []string, stdout, stderr io.Writer) error {
	fs := newOptions("plan", stderr).withModelDType()
	model := fs.String("model", "", "model folder, config.json or Hub id org/name[@revision] in the local HF cache (only the config is read)")
	batch := fs.Int("batch", 8, "sequences per step")
	seq := fs.Int("seq", 512, "tokens per sequence")
	optName := fs.String("optimizer", "", "lomo, adalomo, sgd or adamw, or several comma separated (default: all)")
	ckpt := fs.Bool("checkpointing", false, "activation checkpointing per block")
	clip := fs.Float64("clip-grad-norm", 1, "clip_grad_norm (LOMO/AdaLomo then run two passes; activations are recomputed, not kept)")
	asJSON := fs.Bool("json", false, "one JSON object per line per optimizer")
	loraR := fs.Int("lora-r", 0, "also plan LoRA adapters of this rank: LoRA alone, and LoRA beside each of lomo and adalomo (0: none)")
	loraTargets := fs.String("lora-target-modules", strings.Join(peft.DefaultTargets, ","), "the layers the adapters adapt, comma separated")
	fs.atLeast("lora-r", loraR, 0)
	devices := fs.String("devices", "", "split the model over N devices (a count), or over the adapters listed by index or name (0,1,...)")
	split := fs.String("split", "", "blocks per device, e.g. 20,20 (default: the split with the smallest largest per-device peak)")
	devMem := fs.String("device-memory", "", "memory of each device, e.g. 24GB or 80GiB: says whether the plan fits it (WebGPU does not report an adapter's memory)")
	var nDev int
	var adapters []string
	var memBytes int64
	fs.check(func() error {
		var err error
		if nDev, adapters, err = planDevices(*devices); err != nil {
			return err
		}
		if *devMem != "" {
			if memBytes, err = parseBytes(*devMem); err != nil {
				return fmt.Errorf("--device-memory %q: %v", *devMem, err)
			}
		}
		if *split != "" {
			c := train.Config{DeviceSplit: *split}
			sp, err := c.Split()
			if err != nil {
				return fmt.Errorf("--split: %v", err)
			}
			if len(sp) != max(1, nDev) {
				return fmt.Errorf("--split %q gives %d devices, --devices %d", *split, len(sp), max(1, nDev))
			}
		}
		if nDev > 1 {
			for _, o := range strings.Split(*optName, ",") {
				if o == "sgd" || o == "adamw" {
					return fmt.Errorf("--optimizer %s with --devices %s: %s keeps every gradient on one device; a split model trains with lomo or adalomo", o, *devices, o)
				}
			}
		}
		return nil
	})
	fs.atLeast("batch", batch, 1)
	fs.atLeast("seq", seq, 1)
	fs.listOf("optimizer", optName, "lomo", "adalomo", "sgd", "adamw")
	fs.within("clip-grad-norm", clip, 0, math.Inf(1))
	if err := fs.parse(args); err != nil {
		return err
	}
	if *model == "" {
		return fmt.Errorf("%w: --model is required", errUsage)
	}
	cfg, err := config.Load(*model)
	if err != nil {
		return err
	}
	dt, err := nn.ResolveDType(fs.dtype, *model, cfg) // auto: what lomo train stores the model in by default
	if err != nil {
		return err
	}
	opts := []string{"lomo", "adalomo", "sgd", "adamw"}
	if nDev > 1 {
		opts = opts[:2] // sgd and adamw run on one device
	}
	if *optName != "" {
		opts = strings.Split(*optName, ",")
	}
	var lora *peft.Config
	if *loraR > 0 {
		lora = peft.New(*loraR, float64(2**loraR), 0, strings.Split(*loraTargets, ","), *model)
		if err := lora.Validate(); err != nil {
			return fmt.Errorf("%w: --lora-target-modules: %v", errUsage, err)
		}
	}
	var sp []int
	if *split != "" {
		sp, _ = (train.Config{DeviceSplit: *split}).Split() // checked in parse
	}
	var plans []train.Plan
	plan := func(req train.PlanRequest) error {
		req.Config, req.Batch, req.Seq, req.DType, req.Checkpointing, req.ClipGradNorm = cfg, *batch, *seq, dt, *ckpt, *clip
		req.Devices, req.Split = nDev, sp
		p, err := train.PlanStep(req)
		if err != nil {
			if errors.Is(err, nn.ErrPlacement) {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			return fmt.Errorf("%s: %w", p.Optimizer, err)
		}
		plans = append(plans, p)
		return nil
	}
	for _, o := range opts {
		if err := plan(train.PlanRequest{Optimizer: o}); err != nil {
			return err
		}
	}
	if lora != nil {
		// LoRA alone keeps the adapters' gradients on one device.
		if nDev <= 1 {
			if err := plan(train.PlanRequest{Optimizer: "adamw", LoRA: lora, LoRAOnly: true}); err != nil {
				return err
			}
		}
		for _, o := range opts {
			if o == "lomo" || o == "adalomo" {
				if err := plan(train.PlanRequest{Optimizer: o, LoRA: lora}); err != nil {
					return err
				}
			}
		}
	}
	if nDev > 1 {
		return printSplitPlans(stdout, *model, cfg, plans, *batch, *seq, dt.String(), *ckpt, adapters, memBytes, *asJSON)
	}
	if *asJSON {
		for _, p := range plans {
			m := map[string]any{}
			b, _ := json.Marshal(p)
			json.Unmarshal(b, &m)
			for _, c := range cards {
				m["fits_"+c.name] = p.Total <= c.bytes
			}
			if memBytes > 0 {
				m["device_memory_bytes"], m["fits"] = memBytes, p.Total <= memBytes
			}
			b, _ = json.Marshal(m)
			fmt.Fprintln(stdout, string(b))
		}
		return nil
	}
	fmt.Fprintf(stdout, "%s: %s parameters, batch %d, seq %d, %s, checkpointing %v (1 GB = 1e9 bytes)\n",
		*model, count(cfg.NumParams()), *batch, *seq, dt, *ckpt)
	if lora != nil {
		fmt.Fprintf(stdout, "LoRA r=%d on %s: %s adapter parameters (f32, in params)\n", *loraR, strings.Join(lora.TargetModules, ", "), count(plans[len(plans)-1].LoRAParams))
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "optimizer\tparams\tgrads\toptimizer\tactivations\tscratch\ttotal\t24GB\t48GB\t80GB\t")
	gb := decimalBytes
	for _, p := range plans {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s", p.Optimizer, gb(p.Params), gb(p.Grads), gb(p.OptimizerSt), gb(p.Activations), gb(p.Scratch), peakBytes(p.Total))
		for _, c := range cards {
			fit := "no"
			if p.Total <= c.bytes {
				fit = "yes"
			}
			fmt.Fprintf(w, "\t%s", fit)
		}
		fmt.Fprintln(w, "\t")
	}
	w.Flush()
	fmt.Fprintln(stdout, "total is the peak of the step, not the sum of the column peaks; planned by running the step on a dry device")
	if memBytes > 0 {
		for _, p := range plans {
			fmt.Fprintf(stdout, "%s on a device of %s: %s\n", p.Optimizer, gb(memBytes), fits(p.Total, memBytes))
		}
	}
	return nil
}

func fits(peak, mem int64) string {
	if peak <= mem {
		return "fits"
	}
	return fmt.Sprintf("does not fit (%s over)", decimalBytes(peak-mem))
}

// planDevices reads --devices: "" (one device), a count, or a list of
// adapters (their number is the count; they are named in the output).
func planDevices(v string) (int, []string, error) {
	if v == "" {
		return 1, nil, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 {
			return 0, nil, fmt.Errorf("--devices %d: must be at least 1", n)
		}
		return n, nil, nil
	}
	names := strings.Split(v, ",")
	for _, n := range names {
		if strings.TrimSpace(n) == "" {
			return 0, nil, fmt.Errorf("--devices %q: an empty adapter name", v)
		}
	}
	return len(names), names, nil
}

// parseBytes reads a memory size: 24GB (decimal, 24e9 bytes), 24GiB
// (binary), or plain bytes.
func parseBytes(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			x, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || !(x > 0) || math.IsInf(x, 0) {
				return 0, fmt.Errorf("not a positive size (e.g. 24GB, 80GiB)")
			}
			return int64(x * u.mult), nil
		}
	}
	return 0, fmt.Errorf("not a size")
}

func gb(n int64) string { return decimalBytes(n) }

// printSplitPlans prints the plans of a model split across devices: one
// table per optimizer, a row per device.
func printSplitPlans(w io.Writer, model string, cfg *config.Llama, plans []train.Plan, batch, seq int, dtype string, ckpt bool, adapters []string, mem int64, asJSON bool) error {
	if asJSON {
		for _, p := range plans {
			m := map[string]any{}
			b, _ := json.Marshal(p)
			json.Unmarshal(b, &m)
			if mem > 0 {
				m["device_memory_bytes"], m["fits"] = mem, p.Total <= mem
			}
			if adapters != nil {
				m["adapters"] = adapters
			}
			b, _ = json.Marshal(m)
			fmt.Fprintln(w, string(b))
		}
		return nil
	}
	n := len(plans[0].PerDevice)
	fmt.Fprintf(w, "%s: %s parameters, batch %d, seq %d, %s, checkpointing %v, split over %d devices (1 GB = 1e9 bytes)\n",
		model, count(cfg.NumParams()), batch, seq, dtype, ckpt, n)
	for _, p := range plans {
		fmt.Fprintf(w, "\n%s: blocks per device %s; largest per-device peak %s", p.Optimizer, joinInts(p.Split), peakBytes(p.Total))
		if mem > 0 {
			fmt.Fprintf(w, " on devices of %s: %s", gb(mem), fits(p.Total, mem))
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "device\tlayers\tparams\tgrads\toptimizer\tactivations\tscratch\tpeak\t")
		if mem > 0 {
			fmt.Fprint(tw, "fits\t")
		}
		fmt.Fprintln(tw)
		first := 0
		for i, d := range p.PerDevice {
			name := fmt.Sprint(i)
			if adapters != nil {
				name = fmt.Sprintf("%d (%s)", i, adapters[i])
			}
			fmt.Fprintf(tw, "%s\t%d-%d\t%s\t%s\t%s\t%s\t%s\t%s\t", name, first, first+d.Layers-1, gb(d.Params), gb(d.Grads), gb(d.OptimizerSt), gb(d.Activations), gb(d.Scratch), gb(d.Total))
			if mem > 0 {
				fit := "yes"
				if d.Total > mem {
					fit = "no"
				}
				fmt.Fprintf(tw, "%s\t", fit)
			}
			fmt.Fprintln(tw)
			first += d.Layers
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\neach device holds and updates its own blocks (the embedding with the first, the final norm and an untied head with the last); peak is each device's step peak; planned by running the step on dry devices")
	return nil
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, "+")
}

// decimalBytes formats bytes in decimal units.
func decimalBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// peakBytes is decimalBytes with GiB beside from 1 GB on, the unit that
// PyTorch's memory figures and the LOMO paper's use.
func peakBytes(n int64) string {
	if n < 1e9 {
		return decimalBytes(n)
	}
	return fmt.Sprintf("%s (%.2f GiB)", decimalBytes(n), float64(n)/(1<<30))
}

// count formats a parameter count.
func count(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
