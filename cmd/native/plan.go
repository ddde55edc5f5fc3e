package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"

	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("plan", "predict device memory for each optimizer and whether it fits a card", cmdPlan)
}

var cards = []struct {
	name  string
	bytes int64
}{{"24GB", 24e9}, {"48GB", 48e9}, {"80GB", 80e9}}

func cmdPlan(args []string, stdout, stderr io.Writer) error {
	fs := newOptions("plan", stderr).withDType("f16")
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
	opts := []string{"lomo", "adalomo", "sgd", "adamw"}
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
	var plans []train.Plan
	plan := func(req train.PlanRequest) error {
		req.Config, req.Batch, req.Seq, req.DType, req.Checkpointing, req.ClipGradNorm = cfg, *batch, *seq, fs.DType(), *ckpt, *clip
		p, err := train.PlanStep(req)
		if err != nil {
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
		if err := plan(train.PlanRequest{Optimizer: "adamw", LoRA: lora, LoRAOnly: true}); err != nil {
			return err
		}
		for _, o := range opts {
			if o == "lomo" || o == "adalomo" {
				if err := plan(train.PlanRequest{Optimizer: o, LoRA: lora}); err != nil {
					return err
				}
			}
		}
	}
	if *asJSON {
		for _, p := range plans {
			m := map[string]any{}
			b, _ := json.Marshal(p)
			json.Unmarshal(b, &m)
			for _, c := range cards {
				m["fits_"+c.name] = p.Total <= c.bytes
			}
			b, _ = json.Marshal(m)
			fmt.Fprintln(stdout, string(b))
		}
		return nil
	}
	fmt.Fprintf(stdout, "%s: %s parameters, batch %d, seq %d, %s, checkpointing %v (1 GB = 1e9 bytes)\n",
		*model, count(cfg.NumParams()), *batch, *seq, fs.DType(), *ckpt)
	if lora != nil {
		fmt.Fprintf(stdout, "LoRA r=%d on %s: %s adapter parameters (f32, in params)\n", *loraR, strings.Join(lora.TargetModules, ", "), count(plans[len(plans)-1].LoRAParams))
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "optimizer\tparams\tgrads\toptimizer\tactivations\tscratch\ttotal\t24GB\t48GB\t80GB\t")
	gb := decimalBytes
	for _, p := range plans {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s", p.Optimizer, gb(p.Params), gb(p.Grads), gb(p.OptimizerSt), gb(p.Activations), gb(p.Scratch), gb(p.Total))
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
	return nil
}

// decimalBytes formats bytes in decimal units (GB as GPU vendors count).
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
