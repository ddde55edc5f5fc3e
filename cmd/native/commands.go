package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/cache"
	"github.com/lomo-dev/lomo/hf/tokenizer"
	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("train", "fine-tune a model from a YAML config (LOMO reference keys)", cmdTrain)
	register("eval", "evaluate a model on a task and print a JSON line", cmdEval)
	register("generate", "continue a prompt", cmdGenerate)
	register("tokenize", "print the token ids of a text as a JSON array", cmdTokenize)
}

// bar is the progress display of a run: a progress bar on a terminal, and a
// plain line every tenth of the run otherwise (logs, CI).
type bar struct {
	w           io.Writer
	b           *progressbar.ProgressBar
	total, done int
	desc        string
	start       time.Time
}

func (p *bar) Start(total int, desc string) {
	p.total, p.done, p.desc, p.start = total, 0, desc, time.Now()
	if f, ok := p.w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		p.b = nil
		return
	}
	p.b = progressbar.NewOptions(total, progressbar.OptionSetWriter(p.w), progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(), progressbar.OptionClearOnFinish())
}

func (p *bar) Step(loss float64) {
	p.done++
	if p.b != nil {
		p.b.Describe(fmt.Sprintf("loss %.4f", loss))
		p.b.Add(1)
		return
	}
	if every := max(1, p.total/10); p.done%every == 0 || p.done == p.total {
		fmt.Fprintf(p.w, "%s: step %d/%d, loss %.4f, %s\n", p.desc, p.done, p.total, loss, time.Since(p.start).Round(time.Second))
	}
}

func (p *bar) Finish() {
	if p.b != nil {
		p.b.Finish()
	}
}

// keyValues splits train's arguments into its own flags and the --key value
// overrides of config keys that follow the YAML names.
func keyValues(args []string) (flags []string, kv [][2]string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		name := strings.SplitN(strings.TrimLeft(a, "-"), "=", 2)[0]
		takesValue, own := trainFlags[name]
		if !strings.HasPrefix(a, "--") || own {
			flags = append(flags, a)
			if takesValue && !strings.Contains(a, "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		k := strings.TrimPrefix(a, "--")
		if eq := strings.IndexByte(k, '='); eq >= 0 {
			kv = append(kv, [2]string{k[:eq], k[eq+1:]})
			continue
		}
		if i+1 >= len(args) {
			return nil, nil, fmt.Errorf("%w: --%s needs a value", errUsage, k)
		}
		kv = append(kv, [2]string{k, args[i+1]})
		i++
	}
	return flags, kv, nil
}

// trainFlags are train's own flags, and whether each takes a value.
var trainFlags = map[string]bool{
	"config": true, "adapter": true, "monitor": true, "monitor-token": true, "publish": true, "run": true,
	"resume": false, "h": false, "help": false,
}

func cmdTrain(args []string, stdout, stderr io.Writer) error {
	flagArgs, kv, err := keyValues(args)
	if err != nil {
		return err
	}
	fs := newOptions("train", stderr).withAdapter()
	cfgPath := fs.String("config", "", "YAML config (keys of the LOMO reference's args_lomo.yaml); --key value overrides any key")
	monAddr := fs.String("monitor", "", "serve the live dashboard and metric stream on this address (e.g. :8080 or 127.0.0.1:8080)")
	monToken := fs.String("monitor-token", "", "token for --monitor beyond loopback (default: generated and printed)")
	resume := fs.Bool("resume", false, "continue from the newest checkpoint in output_dir")
	runID := fs.String("run", "", "run id for the monitor (default: from output_dir)")
	publish := fs.String("publish", "", "publish metrics to a standalone hub (`lomo monitor`), e.g. ws://host:8080; its token from --monitor-token")
	fs.check(func() error {
		switch {
		case *monAddr != "" && *publish != "":
			return errors.New("--monitor and --publish: choose one (--monitor serves the dashboard here, --publish sends to a hub elsewhere)")
		case *monToken != "" && *monAddr == "" && *publish == "":
			return errors.New("--monitor-token is for --monitor or --publish, and neither is given")
		}
		return nil
	})
	if err := fs.parse(flagArgs); err != nil {
		return err
	}
	cfg := train.DefaultConfig()
	if *cfgPath != "" {
		if cfg, err = train.LoadConfig(*cfgPath); err != nil {
			return err
		}
	}
	for _, p := range kv {
		if err := cfg.Set(p[0], p[1]); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	// A model that is not there is said before a device opens (train.New
	// resolves it again, for callers of the package).
	if _, err := cache.Resolve(cfg.ModelNameOrPath); err != nil {
		return fmt.Errorf("train: model_name_or_path: %w", err)
	}
	var ds []*gpu.Device
	if names := cfg.DeviceNames(); len(names) > 0 {
		if fs.adapter != "" {
			return fmt.Errorf("%w: --adapter and devices %q: choose one (devices names every adapter of a split run)", errUsage, cfg.Devices)
		}
		if ds, err = openDevices(names, fs.tuning(), stderr); err != nil {
			return err
		}
	} else {
		d, err := fs.open(stderr)
		if err != nil {
			return err
		}
		ds = []*gpu.Device{d}
	}
	defer func() {
		for _, d := range ds {
			d.Close()
		}
	}()
	opts := train.Options{Progress: &bar{w: stderr}, Resume: *resume, Log: stderr, Run: *runID}
	if opts.Run == "" {
		opts.Run = runName(cfg.OutputDir)
	}
	var stopMonitor func()
	var hub *monitor.Hub
	if *monAddr != "" {
		hub, stopMonitor, err = serveMonitor(*monAddr, *monToken, opts.Run, monitor.HubOptions{}, nil, stderr)
		if err != nil {
			return err
		}
		defer stopMonitor()
		opts.Sink = hub
	}
	var pub *monitor.Publisher
	if *publish != "" {
		if pub, err = monitor.Dial(context.Background(), *publish, *monToken, opts.Run); err != nil {
			return err
		}
		defer func() {
			// Monitoring never fails a run, but what the hub never got is said.
			if err := pub.Close(); err != nil {
				fmt.Fprintf(stderr, "lomo train: %v\n", err)
			}
			if n := pub.Dropped(); n > 0 {
				fmt.Fprintf(stderr, "lomo train: %d events were dropped while the hub at %s was unreachable (the publisher's queue was full)\n", n, *publish)
			}
		}()
		opts.Sink = pub
		fmt.Fprintf(stderr, "publishing run %q to %s\n", opts.Run, *publish)
	}
	tr, err := train.NewSplit(cfg, ds, opts)
	if err != nil {
		return err
	}
	defer tr.Release()
	if hub != nil {
		cancel := hub.OnControl(opts.Run, tr.Control)
		defer cancel()
	}
	if pub != nil {
		pub.OnControl(tr.Control)
	}
	// Ctrl-C stops after the current step, with a checkpoint, and the run
	// exits 130 after its summary; a second one exits at once.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	var interrupted atomic.Bool
	go func() {
		<-sig
		interrupted.Store(true)
		fmt.Fprintln(stderr, "\ninterrupt: stopping after this step (again to quit now)")
		tr.RequestStop()
		<-sig
		os.Exit(130)
	}()
	s, err := tr.Run()
	if err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(b))
	if s.Stopped && interrupted.Load() {
		return fmt.Errorf("%w after step %d; its checkpoint is in %s: continue with --resume", errInterrupted, s.Steps, cfg.OutputDir)
	}
	return nil
}

// errInterrupted: the run stopped on Ctrl-C (exit status 130, as a shell
// reports a process ended by SIGINT).
var errInterrupted = errors.New("interrupted")

func runName(outDir string) string {
	n := filepath.Base(filepath.Clean(outDir))
	if !monitor.ValidRunID(n) {
		return "run"
	}
	return n
}

func cmdEval(args []string, stdout, stderr io.Writer) error {
	fs := newOptions("eval", stderr).withAdapter().withModelDType().withPeft()
	model := fs.String("model", "", "model folder (HF layout: config.json, model.safetensors, tokenizer.json) or Hub id org/name[@revision] in the local HF cache")
	task := fs.String("task", "", "task name: "+strings.Join(data.TaskNames(), ", "))
	file := fs.String("data", "", "task file (jsonl)")
	limit := fs.Int("limit", 0, "evaluate the first n examples only")
	batch := fs.Int("batch", 16, "sequences per forward pass")
	maxLen := fs.Int("max-length", 1024, "tokens per sequence")
	mean := fs.Bool("mean", false, "rank options by mean NLL per token (default: summed, as the reference)")
	fs.atLeast("limit", limit, 0)
	fs.atLeast("batch", batch, 1)
	fs.atLeast("max-length", maxLen, 4)
	if err := fs.parse(args); err != nil {
		return err
	}
	if *model == "" || *task == "" || *file == "" {
		return fmt.Errorf("%w: --model, --task and --data are required", errUsage)
	}
	t, err := data.LoadTask(*task, *file)
	if err != nil {
		return err
	}
	if *limit > 0 && *limit < len(t.Examples) {
		t.Examples = t.Examples[:*limit]
	}
	tok, err := tokenizer.Load(*model)
	if err != nil {
		return err
	}
	m, release, err := fs.loadModel(*model, stderr)
	if err != nil {
		return err
	}
	defer release()
	r, err := train.Evaluate(m, tok, t, train.EvalOptions{BatchSize: *batch, MaxLen: *maxLen, Mean: *mean, MaxNewTokens: 32})
	if err != nil {
		return err
	}
	out := map[string]any{"task": r.Task, "metric": r.Metric, r.Metric: r.Value, "n": r.N, "chance": t.Chance(), "dtype": m.DType.String()}
	if r.Metric == "em" {
		out["f1"] = r.F1
	}
	if r.Unlabelled > 0 {
		out["unlabelled"] = r.Unlabelled
		fmt.Fprintf(stderr, "%s: %d of %d examples have no label and were not scored\n", *file, r.Unlabelled, r.N+r.Unlabelled)
	}
	b, _ := json.Marshal(out)
	fmt.Fprintln(stdout, string(b))
	return nil
}

func cmdGenerate(args []string, stdout, stderr io.Writer) error {
	fs := newOptions("generate", stderr).withAdapter().withModelDType().withPeft().withOneShot()
	model := fs.String("model", "", "model folder (HF layout) or Hub id org/name[@revision] in the local HF cache")
	prompt := fs.String("prompt", "", "text to continue (empty: from BOS)")
	def := nn.DefaultSampleOptions()
	maxNew := fs.Int("max-new-tokens", def.MaxNewTokens, "tokens to generate at most")
	temp := fs.Float64("temperature", def.Temperature, "sampling temperature; 0 is greedy")
	topK := fs.Int("top-k", def.TopK, "keep the k most likely tokens (0: off)")
	topP := fs.Float64("top-p", def.TopP, "keep the smallest set with this probability mass (1: off)")
	rep := fs.Float64("repetition-penalty", def.RepetitionPenalty, "penalty for tokens already in the text (1: off)")
	seed := fs.Uint64("seed", def.Seed, "sampling seed")
	fs.atLeast("max-new-tokens", maxNew, 1)
	fs.within("temperature", temp, 0, math.Inf(1))
	fs.atLeast("top-k", topK, 0)
	fs.check(func() error {
		if !(*topP > 0 && *topP <= 1) {
			return fmt.Errorf("--top-p %v: must be a number above 0 and at most 1", *topP)
		}
		if !(*rep > 0) || math.IsInf(*rep, 0) {
			return fmt.Errorf("--repetition-penalty %v: must be a finite number above 0", *rep)
		}
		return nil
	})
	if err := fs.parse(args); err != nil {
		return err
	}
	if *model == "" {
		return fmt.Errorf("%w: --model is required", errUsage)
	}
	tok, err := tokenizer.Load(*model)
	if err != nil {
		return err
	}
	m, release, err := fs.loadModel(*model, io.Discard)
	if err != nil {
		return err
	}
	defer release()
	ids, err := train.PromptIDs(tok, *prompt)
	if err != nil {
		return err
	}
	// Print the continuation as it grows: decode the whole new text each
	// time and write what was not printed yet (byte-fallback tokens only
	// make characters together).
	var out []int
	printed := 0
	_, err = m.Generate(ids, nn.SampleOptions{MaxNewTokens: *maxNew, Temperature: *temp, TopK: *topK, TopP: *topP, RepetitionPenalty: *rep, Seed: *seed, EOS: tok.EOS()},
		func(id int) error {
			out = append(out, id)
			text := tok.Decode(out)
			if len(text) > printed && !strings.HasSuffix(text, "\uFFFD") {
				fmt.Fprint(stdout, text[printed:])
				printed = len(text)
			}
			return nil
		})
	if text := tok.Decode(out); len(text) > printed {
		fmt.Fprint(stdout, text[printed:])
	}
	fmt.Fprintln(stdout)
	return err
}

func cmdTokenize(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("tokenize", stderr)
	model := fs.String("model", "", "model folder, tokenizer.json, or Hub id org/name[@revision] in the local HF cache")
	text := fs.String("text", "", "text to tokenize")
	noSpecial := fs.Bool("no-special", false, "do not add BOS")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *model == "" {
		return fmt.Errorf("%w: --model is required", errUsage)
	}
	tok, err := tokenizer.Load(*model)
	if err != nil {
		return err
	}
	ids := tok.EncodeWithSpecial(*text)
	if *noSpecial {
		ids = tok.Encode(*text)
	}
	if ids == nil {
		ids = []int{}
	}
	b, _ := json.Marshal(ids)
	fmt.Fprintln(stdout, string(b))
	return nil
}
