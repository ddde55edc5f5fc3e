package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"

	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("demo", "fine-tune the built-in model on the built-in task and report", cmdDemo)
}

func cmdDemo(args []string, stdout, stderr io.Writer) error {
	o := train.DefaultDemo()
	fs := newOptions("demo", stderr).withAdapter()
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	fs.StringVar(&o.Out, "out", o.Out, "output folder: the task files, metrics and the fine-tuned model")
	fs.StringVar(&o.BaseModel, "base", "", "base model folder (default: the model built into lomo)")
	fs.Float64Var(&o.LR, "lr", o.LR, "LOMO learning rate")
	fs.within("lr", &o.LR, 0, math.Inf(1))
	fs.IntVar(&o.Epochs, "epochs", o.Epochs, "epochs over the training examples")
	fs.atLeast("epochs", &o.Epochs, 1)
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the task and the batches")
	monAddr := fs.String("monitor", "127.0.0.1:0", `serve the live dashboard on this address ("" for none)`)
	if err := fs.parse(args); err != nil {
		return err
	}
	d, err := fs.open(stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	o.Log, o.Progress = stderr, &bar{w: stderr}
	if *monAddr != "" {
		hub, stop, err := serveMonitor(*monAddr, "", o.Run, monitor.HubOptions{}, nil, stderr)
		if err != nil {
			return err
		}
		defer stop()
		o.Sink = hub
		o.Control = func(f func(string)) { hub.OnControl(o.Run, f) }
	}
	r, err := train.Demo(d, o)
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	printDemo(stdout, r)
	return nil
}

func printDemo(w io.Writer, r train.DemoReport) {
	fmt.Fprintf(w, "\nlomo demo: full-parameter fine-tuning with LOMO on %s\n", r.Adapter)
	fmt.Fprintf(w, "  model      %s parameters, pretrained by lomo (built in)\n", count(r.Params))
	fmt.Fprintf(w, "  task       %s\n", r.Task)
	fmt.Fprintf(w, "  accuracy   %.3f zero-shot -> %.3f fine-tuned (chance %.2f)\n", r.ZeroShotAccuracy, r.FinetunedAccuracy, r.ChanceAccuracy)
	fmt.Fprintf(w, "  training   %d steps, loss %.3f -> %.3f, %.0f tokens/s, %.0f s in all\n", r.Steps, r.FirstLoss, r.FinalLoss, r.TokensPerSec, r.Seconds)
	fmt.Fprintf(w, "  memory     one step of batch %d x %d tokens, activation checkpointing:\n", r.Batch, r.Seq)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\t\tparams\tgrads\toptimizer\tactivations\ttotal peak\t")
	fmt.Fprintf(tw, "\tLOMO (measured)\t%s\t%s\t%s\t%s\t%s\t\n", decimalBytes(r.PeakByTag["param"]), decimalBytes(r.PeakByTag["grad"]),
		decimalBytes(r.PeakByTag["optimizer"]), decimalBytes(r.PeakByTag["activation"]), decimalBytes(r.PeakBytes))
	for _, p := range []train.Plan{r.PlannedSGDTags, r.PlannedAdamTags} {
		name := map[string]string{"sgd": "SGD (planned)", "adamw": "AdamW (planned)"}[p.Optimizer]
		fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name, decimalBytes(p.Params), decimalBytes(p.Grads), decimalBytes(p.OptimizerSt), decimalBytes(p.Activations), decimalBytes(p.Total))
	}
	tw.Flush()
	fmt.Fprintf(w, "  model      fine-tuned weights in %s (Hugging Face layout)\n", r.ModelDir)
}
