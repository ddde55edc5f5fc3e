//go:build !js

// Command stress runs lomo's training step and evaluations many times each,
// with the CPU kept busy and websocket viewers on a training run's live
// dashboard, and fails loudly when any run crashes, exits non-zero, or prints
// numbers that differ from its case's first run. Earlier versions of lomo
// segfaulted or printed wrong numbers in exactly these conditions, and only
// some of the time, hence the repetitions.
//
//	go run ./bench/stress                                   # every case, 20 runs each (hours on lavapipe)
//	go run ./bench/stress -runs 2 -cases eval-rte-b16       # a quick look
//	go run ./bench/stress -validation -runs 3               # with the Khronos validation layer
//
// The exit status is 0 only when every run passed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"
)

// caseSpec is one thing to run repeatedly.
type caseSpec struct {
	name  string
	train bool     // the training run with viewers; otherwise an eval
	task  string   // eval task name, as lomo eval --task spells it
	dir   string   // the task's folder under superglue/
	args  []string // extra eval flags
}

var allCases = []caseSpec{
	{name: "train-copa-b16-viewers", train: true},
	{name: "eval-rte-b16", task: "rte", dir: "RTE", args: []string{"--batch", "16", "--limit", "5"}},
	{name: "eval-rte-defaults", task: "rte", dir: "RTE", args: []string{"--limit", "16"}},
	{name: "eval-multirc-defaults", task: "multirc", dir: "MultiRC", args: []string{"--limit", "8"}},
	{name: "eval-record-defaults", task: "record", dir: "ReCoRD", args: []string{"--limit", "4"}},
	{name: "eval-multirc-b2-l600", task: "multirc", dir: "MultiRC", args: []string{"--batch", "2", "--max-length", "600", "--limit", "8"}},
	{name: "eval-multirc-b2-l1024", task: "multirc", dir: "MultiRC", args: []string{"--batch", "2", "--max-length", "1024", "--limit", "8"}},
}

// crashMarkers in a run's stderr mean it crashed even when it exited with a
// status: Go turns SIGSEGV in C code into "fatal error" and exit status 2,
// and wgpu reports use-after-release as a misused handle.
var crashMarkers = []string{"SIGSEGV", "SIGABRT", "panic:", "fatal error:", "misuse of an invalid Handle"}

// timingWords mark summary keys whose values depend on the clock, not on
// the arithmetic; output_dir differs per run by construction.
var timingWords = []string{"per_sec", "seconds", "time", "elapsed", "output_dir"}

var (
	dashboardRE = regexp.MustCompile(`dashboard: (\S+)\n`)
	adapterRE   = regexp.MustCompile(`(?m)^adapter: (.+)$`)
	addrRE      = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)
)

// spinSink keeps the busy loops' results observable so the compiler cannot
// drop them.
var spinSink atomic.Uint64

type config struct {
	root       string // repository root
	lomo       string
	testdata   string
	out        string
	runs       int
	busy       int
	viewers    int
	validation bool
	timeout    time.Duration
	cases      []caseSpec
	tmp        string
	env        []string // environment of every lomo process
}

// report is the JSON file.
type report struct {
	Date        string       `json:"date"`
	Commit      string       `json:"commit"`
	Dirty       bool         `json:"dirty"` // uncommitted changes in the tree that was built
	Go          string       `json:"go"`
	CPUs        int          `json:"cpus"`
	Adapter     adapterInfo  `json:"adapter"`      // lomo devices --json, first adapter
	AdapterUsed string       `json:"adapter_used"` // what the runs printed (lomo may pick another)
	Flags       flagsInfo    `json:"flags"`
	Cases       []*caseStats `json:"cases"`
	Interrupted bool         `json:"interrupted,omitempty"`
	Pass        bool         `json:"pass"`
	Failures    []string     `json:"failures,omitempty"`
}

type adapterInfo struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Backend string `json:"backend"`
	Driver  string `json:"driver"`
}

type flagsInfo struct {
	Runs       int      `json:"runs"`
	Busy       int      `json:"busy"`
	Viewers    int      `json:"viewers"`
	Validation bool     `json:"validation"`
	Timeout    string   `json:"timeout"`
	Cases      []string `json:"cases"`
}

type caseStats struct {
	Name    string   `json:"name"`
	Command []string `json:"command"` // lomo's arguments, with this machine's paths
	Runs    int      `json:"runs"`
	Crashes struct {
		Count   int            `json:"count"`
		Signals map[string]int `json:"signals,omitempty"` // signal or stderr marker: count
	} `json:"crashes"`
	NonzeroExits       int             `json:"nonzero_exits"` // non-zero exits that were not crashes
	Timeouts           int             `json:"timeouts"`
	ValidationFailures int             `json:"validation_failures"`
	ViewerFailures     int             `json:"viewer_failures"` // runs where some viewer could not connect
	Identical          bool            `json:"identical"`       // every run printed run 1's numbers
	Failed             int             `json:"failed"`          // runs with any failure
	MedianSeconds      float64         `json:"median_seconds"`
	Reference          json.RawMessage `json:"reference"` // run 1's numbers
	Results            []*runResult    `json:"results"`

	ref string
}

type runResult struct {
	Run          int             `json:"run"`
	Exit         int             `json:"exit"` // -1 when killed by a signal
	Signal       string          `json:"signal,omitempty"`
	Seconds      float64         `json:"seconds"`
	NumbersMatch bool            `json:"numbers_match"`
	Numbers      json.RawMessage `json:"numbers,omitempty"` // only when they differ from run 1's
	// Viewers, for the training case only.
	ViewersConnected *int           `json:"viewers_connected,omitempty"`
	ViewersReceived  *int           `json:"viewers_received,omitempty"`
	ViewerErrors     map[string]int `json:"viewer_errors,omitempty"` // how viewers ended, other than a clean close
	Crash            string         `json:"crash,omitempty"`
	Timeout          bool           `json:"timeout,omitempty"`
	Validation       []string       `json:"validation,omitempty"` // the first validation messages
	Error            string         `json:"error,omitempty"`      // every failure of the run, or empty
	StderrTail       []string       `json:"stderr_tail,omitempty"`

	numbers      string
	adapter      string   // as the run printed it
	stderr       []string // the tail, kept for a failure found later
	viewerFailed bool
	failures     []string
}

func (r *runResult) fail(format string, a ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, a...))
}

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second interrupt kills stress itself
	}()

	cfg.tmp, err = os.MkdirTemp("", "lomo-stress-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
		return 2
	}
	defer os.RemoveAll(cfg.tmp)
	if cfg.lomo == "" {
		cfg.lomo = filepath.Join(cfg.tmp, "lomo")
		fmt.Fprintln(os.Stderr, "stress: go build -o", cfg.lomo, "./cmd/native")
		b := exec.CommandContext(ctx, "go", "build", "-o", cfg.lomo, "./cmd/native")
		b.Dir, b.Stdout, b.Stderr = cfg.root, os.Stderr, os.Stderr
		if err := b.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "stress: build lomo:", err)
			return 2
		}
	}

	rep := &report{
		Date: time.Now().Format(time.RFC3339),
		Go:   runtime.Version(),
		CPUs: runtime.NumCPU(),
		Flags: flagsInfo{Runs: cfg.runs, Busy: cfg.busy, Viewers: cfg.viewers, Validation: cfg.validation,
			Timeout: cfg.timeout.String()},
	}
	for _, c := range cfg.cases {
		rep.Flags.Cases = append(rep.Flags.Cases, c.name)
	}
	rep.Commit, rep.Dirty = gitState(cfg.root)
	rep.Adapter, err = devices(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress: lomo devices:", err)
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(cfg.root, "bench", "results",
			fmt.Sprintf("stress-%s-%s.json", time.Now().Format("2006-01-02"), slug(rep.Adapter.Name)))
	}
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "stress: %d case(s) x %d run(s) on %s, %d busy goroutine(s), results in %s\n",
		len(cfg.cases), cfg.runs, rep.Adapter.Name, cfg.busy, cfg.out)

	// The load: spinning goroutines for the whole duration.
	var halt atomic.Bool
	var spinners sync.WaitGroup
	for range cfg.busy {
		spinners.Go(func() { spin(&halt) })
	}
	defer func() {
		halt.Store(true)
		spinners.Wait()
	}()

cases:
	for _, c := range cfg.cases {
		cs := &caseStats{Name: c.name, Command: command(cfg, c, "RUNDIR")}
		rep.Cases = append(rep.Cases, cs)
		for i := 1; i <= cfg.runs; i++ {
			if ctx.Err() != nil {
				rep.Interrupted = true
				break cases
			}
			r := runOnce(ctx, cfg, c, i)
			if ctx.Err() != nil && !r.Timeout {
				// Killed by our interrupt: not a result.
				rep.Interrupted = true
				break cases
			}
			if rep.AdapterUsed == "" {
				rep.AdapterUsed = r.adapter
			}
			record(cs, r)
			fmt.Fprintln(os.Stderr, progressLine(cfg, cs, r))
			if err := writeReport(cfg.out, finish(rep)); err != nil {
				fmt.Fprintln(os.Stderr, "stress:", err)
			}
		}
	}
	finish(rep)
	if err := writeReport(cfg.out, rep); err != nil {
		fmt.Fprintln(os.Stderr, "stress:", err)
	}
	printTable(os.Stdout, rep)
	if rep.Pass {
		return 0
	}
	return 1
}

func parseFlags() (*config, error) {
	cfg := &config{}
	var caseList string
	flag.StringVar(&cfg.lomo, "lomo", "", "lomo binary to run (default: build ./cmd/native into a temporary folder)")
	flag.StringVar(&cfg.testdata, "testdata", "", "test data folder (default: $LOMO_TESTDATA, else ../shared/testdata beside the repository)")
	flag.StringVar(&cfg.out, "out", "", "JSON report (default: bench/results/stress-DATE-ADAPTER.json)")
	flag.IntVar(&cfg.runs, "runs", 20, "runs per case")
	flag.IntVar(&cfg.busy, "busy", 3, "goroutines spinning in this process for the whole duration, to load the CPU")
	flag.IntVar(&cfg.viewers, "viewers", 200, "websocket viewers on the training run's dashboard")
	flag.BoolVar(&cfg.validation, "validation", false, "run lomo under the Khronos validation layer; any message fails the run")
	flag.DurationVar(&cfg.timeout, "timeout", 15*time.Minute, "limit per run; the process group is killed after it")
	names := make([]string, len(allCases))
	for i, c := range allCases {
		names[i] = c.name
	}
	flag.StringVar(&caseList, "cases", "", "cases to run, comma separated (default: all): "+strings.Join(names, ", "))
	flag.Parse()
	if flag.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", flag.Args())
	}
	if cfg.runs < 1 || cfg.busy < 0 || cfg.viewers < 0 || cfg.timeout <= 0 {
		return nil, errors.New("-runs must be at least 1, -busy, -viewers and -timeout not negative")
	}
	if caseList == "" {
		cfg.cases = allCases
	} else {
		for n := range strings.SplitSeq(caseList, ",") {
			n = strings.TrimSpace(n)
			i := slices.Index(names, n)
			if i < 0 {
				return nil, fmt.Errorf("unknown case %q (known: %s)", n, strings.Join(names, ", "))
			}
			cfg.cases = append(cfg.cases, allCases[i])
		}
	}

	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	cfg.root = repoRoot(wd)
	if cfg.testdata == "" {
		cfg.testdata = os.Getenv("LOMO_TESTDATA")
	}
	if cfg.testdata == "" {
		cfg.testdata = filepath.Join(cfg.root, "..", "shared", "testdata")
	}
	if cfg.testdata, err = filepath.Abs(cfg.testdata); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.testdata, "models", "stories260K")); err != nil {
		return nil, fmt.Errorf("test data: %w (set -testdata or LOMO_TESTDATA)", err)
	}
	if cfg.lomo != "" {
		if cfg.lomo, err = filepath.Abs(cfg.lomo); err != nil {
			return nil, err
		}
	}
	if cfg.out != "" {
		if cfg.out, err = filepath.Abs(cfg.out); err != nil {
			return nil, err
		}
	}
	cfg.env = os.Environ()
	if os.Getenv("XDG_RUNTIME_DIR") == "" {
		// wgpu and Mesa look for it; unset, some drivers log noise or fail.
		cfg.env = append(cfg.env, "XDG_RUNTIME_DIR=/tmp")
	}
	return cfg, nil
}

// repoRoot is the nearest folder at or above dir with a go.mod, else dir.
func repoRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// gitState is HEAD's commit and whether the tree has uncommitted changes.
func gitState(root string) (string, bool) {
	out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		return "", false
	}
	st, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output()
	return strings.TrimSpace(string(out)), len(bytes.TrimSpace(st)) > 0
}

// devices is the first adapter lomo lists.
func devices(ctx context.Context, cfg *config) (adapterInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.lomo, "devices", "--json")
	cmd.Env = cfg.env
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	if err != nil {
		return adapterInfo{Name: "unknown"}, fmt.Errorf("%w: %s", err, strings.TrimSpace(errBuf.String()))
	}
	line, _, _ := bytes.Cut(out, []byte("\n"))
	var a adapterInfo
	if err := json.Unmarshal(line, &a); err != nil || a.Name == "" {
		return adapterInfo{Name: "unknown"}, fmt.Errorf("unexpected output %q", line)
	}
	return a, nil
}

// slug makes an adapter name fit a file name: "NVIDIA H200" is nvidia-h200.
func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
		} else {
			dash = true
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

// spin burns a CPU until halt, so that lomo competes for cores: thread
// scheduling under contention is where races in the GPU layer showed.
func spin(halt *atomic.Bool) {
	x := uint64(1)
	for !halt.Load() {
		for range 1 << 20 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		spinSink.Add(x)
	}
}

// dataFile is the task's validation file, or another split where the
// dataset has none (ReCoRD ships without val.jsonl).
func dataFile(testdata, dir string) string {
	base := filepath.Join(testdata, "superglue", dir)
	for _, n := range []string{"val.jsonl", "dev32.jsonl", "train.jsonl"} {
		if _, err := os.Stat(filepath.Join(base, n)); err == nil {
			return filepath.Join(base, n)
		}
	}
	return filepath.Join(base, "val.jsonl") // lomo will say it is missing
}

// command is lomo's arguments for case c, run in runDir.
func command(cfg *config, c caseSpec, runDir string) []string {
	if c.train {
		return []string{"train", "--config", filepath.Join(runDir, "run.yaml"), "--monitor", "127.0.0.1:0", "--run", "stress"}
	}
	args := []string{"eval", "--model", filepath.Join(cfg.testdata, "models", "stories260K"),
		"--task", c.task, "--data", dataFile(cfg.testdata, c.dir)}
	return append(args, c.args...)
}

// trainConfig is the training run: a few steps of the small model with
// checkpointing and two-pass clipping, the paths that crashed before.
func trainConfig(cfg *config, outDir string) string {
	return strings.Join([]string{
		"model_name_or_path: " + strconv.Quote(filepath.Join(cfg.testdata, "models", "stories260K")),
		"dataset_name: copa",
		"train_file: " + strconv.Quote(dataFile(cfg.testdata, "COPA")),
		"train_size: 64",
		"data_max_length: 64",
		"per_device_train_batch_size: 16",
		"gradient_checkpointing: true",
		"learning_rate: 0.01",
		"max_steps: 3",
		"clip_grad_norm: 1",
		"zero_shot_eval: false",
		`evaluation_strategy: "no"`,
		`save_strategy: "no"`,
		"output_dir: " + strconv.Quote(outDir),
	}, "\n") + "\n"
}

// stderrWatch keeps a process's stderr and hands over the dashboard URL
// once a complete line with it has arrived.
type stderrWatch struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	url  chan string // nil when nobody waits
	sent bool
}

func (w *stderrWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.url != nil && !w.sent {
		if m := dashboardRE.FindSubmatch(w.buf.Bytes()); m != nil {
			w.sent = true
			w.url <- string(m[1])
		}
	}
	return len(p), nil
}

func (w *stderrWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// runOnce runs case c once and judges the result, all but the comparison
// with run 1.
func runOnce(ctx context.Context, cfg *config, c caseSpec, i int) *runResult {
	r := &runResult{Run: i}
	dir := filepath.Join(cfg.tmp, fmt.Sprintf("%s-%d", c.name, i))
	defer os.RemoveAll(dir)
	outDir := filepath.Join(dir, "out")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.fail("%v", err)
		return r
	}
	if c.train {
		if err := os.WriteFile(filepath.Join(dir, "run.yaml"), []byte(trainConfig(cfg, outDir)), 0o644); err != nil {
			r.fail("%v", err)
			return r
		}
	}
	env := cfg.env
	vkLog := filepath.Join(dir, "vk", "validation.log")
	if cfg.validation {
		settings := strings.Join([]string{
			"khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG",
			"khronos_validation.log_filename = " + vkLog,
			"khronos_validation.report_flags = error,warn,perf",
		}, "\n") + "\n"
		err := os.MkdirAll(filepath.Dir(vkLog), 0o755)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "vk", "vk_layer_settings.txt"), []byte(settings), 0o644)
		}
		if err != nil {
			r.fail("validation settings: %v", err)
			return r
		}
		env = append(slices.Clip(env), "VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation",
			"VK_LAYER_SETTINGS_PATH="+filepath.Join(dir, "vk"))
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, cfg.lomo, command(cfg, c, dir)...)
	cmd.Dir, cmd.Env = dir, env
	var stdout bytes.Buffer
	stderr := &stderrWatch{}
	cmd.Stdout, cmd.Stderr = &stdout, stderr
	// Its own process group, so a timeout kills whatever it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second

	var vw *viewers
	var urlCh chan string
	if c.train && cfg.viewers > 0 {
		urlCh = make(chan string, 1)
		stderr.url = urlCh
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		r.fail("start: %v", err)
		return r
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	if urlCh != nil {
		select {
		case u := <-urlCh:
			vw = startViewers(u, cfg.viewers)
		case <-exited:
			// It may have served and exited at once: the viewers then
			// fail to connect, which is the finding.
			select {
			case u := <-urlCh:
				vw = startViewers(u, cfg.viewers)
			default:
			}
		}
	}
	<-exited
	r.Seconds = time.Since(start).Round(time.Millisecond).Seconds()

	// Exit status.
	timedOut := errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
	var ee *exec.ExitError
	switch {
	case waitErr == nil:
	case errors.As(waitErr, &ee):
		r.Exit = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.Exit = -1
			r.Signal = signalName(ws.Signal())
		}
	default:
		r.Exit = -1
		r.fail("wait: %v", waitErr)
	}
	errText := stderr.String()
	if m := adapterRE.FindStringSubmatch(errText); m != nil {
		r.adapter = m[1]
	}
	if timedOut {
		r.Timeout = true
		r.fail("timeout after %s", cfg.timeout)
	} else if r.Signal != "" {
		r.Crash = r.Signal
	}
	if r.Crash == "" {
		for _, m := range crashMarkers {
			if strings.Contains(errText, m) {
				r.Crash = strings.TrimSuffix(m, ":") + " (stderr)"
				break
			}
		}
	}
	if r.Crash != "" {
		r.fail("crash: %s", r.Crash)
	} else if r.Exit != 0 && !r.Timeout {
		r.fail("exit status %d", r.Exit)
	}

	// Viewers: let them read to the end, then close what is left.
	if vw != nil {
		vw.finish(5 * time.Second)
		conn, recv := int(vw.connected.Load()), int(vw.received.Load())
		r.ViewersConnected, r.ViewersReceived = &conn, &recv
		r.ViewerErrors = vw.errs
		if conn < cfg.viewers {
			r.viewerFailed = true
			r.fail("viewers: %d of %d could not connect", cfg.viewers-conn, cfg.viewers)
		}
	} else if urlCh != nil {
		zero := 0
		r.ViewersConnected, r.ViewersReceived = &zero, &zero
		r.viewerFailed = true
		r.fail("viewers: no dashboard URL on stderr")
	}

	// Numbers, only from a run that finished.
	if r.Exit == 0 && r.Signal == "" && !r.Timeout {
		var err error
		if c.train {
			r.numbers, err = trainNumbers(stdout.String(), outDir)
		} else {
			r.numbers, err = evalNumbers(stdout.String())
		}
		if err != nil {
			r.fail("numbers: %v", err)
		}
	}

	if cfg.validation {
		checkValidation(r, vkLog)
	}
	r.stderr = tail(errText, 20)
	return r
}

// checkValidation fails the run on any validation message, and when the
// layer left no log (it did not load, so nothing was checked).
func checkValidation(r *runResult, log string) {
	b, err := os.ReadFile(log)
	if err != nil {
		r.Validation = []string{"no log: the validation layer did not load"}
		r.fail("validation layer did not load (no %s)", filepath.Base(log))
		return
	}
	var lines []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > 0 {
		r.Validation = lines[:min(2, len(lines))]
		r.fail("validation messages: %d", len(lines))
	}
}

// signalName names the signals a crash would show; others by number.
func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGSEGV: "SIGSEGV", syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGILL: "SIGILL",
		syscall.SIGFPE: "SIGFPE", syscall.SIGTRAP: "SIGTRAP", syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM",
		syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGPIPE: "SIGPIPE",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}

// tail is the last n non-empty lines of s; progress lines rewritten with
// \r count once each.
func tail(s string, n int) []string {
	var lines []string
	for l := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return lines[max(0, len(lines)-n):]
}

// viewers are the websocket clients of one run's dashboard.
type viewers struct {
	wg                  sync.WaitGroup
	cancel              context.CancelFunc
	connected, received atomic.Int64
	mu                  sync.Mutex
	errs                map[string]int
}

// startViewers connects n viewers to the run of dashboard URL page, at
// once, and reads every message until their connection ends.
func startViewers(page string, n int) *viewers {
	ctx, cancel := context.WithCancel(context.Background())
	v := &viewers{cancel: cancel}
	u, err := url.Parse(page)
	if err != nil {
		v.note("dashboard URL: " + err.Error())
		return v
	}
	u.Scheme, u.Path = "ws", "/ws/view" // the query keeps run= and any token=
	if u.Query().Get("run") == "" {
		q := u.Query()
		q.Set("run", "stress")
		u.RawQuery = q.Encode()
	}
	ws := u.String()
	for range n {
		v.wg.Go(func() {
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			c, _, err := websocket.Dial(dctx, ws, nil)
			dcancel()
			if err != nil {
				v.note("dial: " + err.Error())
				return
			}
			v.connected.Add(1)
			defer c.CloseNow()
			c.SetReadLimit(16 << 20) // the history replay may be large
			got := false
			for {
				_, _, err := c.Read(ctx)
				if err != nil {
					v.ended(ctx, err)
					return
				}
				if !got {
					got = true
					v.received.Add(1)
				}
			}
		})
	}
	return v
}

// ended notes how a viewer's connection ended, unless it was the hub's
// clean close at shutdown.
func (v *viewers) ended(ctx context.Context, err error) {
	switch st := websocket.CloseStatus(err); {
	case st == websocket.StatusGoingAway || st == websocket.StatusNormalClosure:
	case st != -1:
		var ce websocket.CloseError
		errors.As(err, &ce)
		v.note(fmt.Sprintf("closed with status %d: %s", int(st), ce.Reason))
	case ctx.Err() != nil:
		v.note("still open after lomo exited")
	default:
		v.note("read: " + err.Error())
	}
}

func (v *viewers) note(msg string) {
	msg = addrRE.ReplaceAllString(msg, "ADDR") // one key per kind, not per port
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.errs == nil {
		v.errs = map[string]int{}
	}
	v.errs[msg]++
}

// finish waits up to grace for the viewers to see their connections end,
// then closes the rest.
func (v *viewers) finish(grace time.Duration) {
	done := make(chan struct{})
	go func() {
		v.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
	}
	v.cancel()
	<-done
}

// evalNumbers is lomo eval's result line, canonical.
func evalNumbers(stdout string) (string, error) {
	var m map[string]any
	if err := decodeLastLine(stdout, &m); err != nil {
		return "", err
	}
	return canonical(m)
}

// trainNumbers is every step's loss and gradient norm, the evaluations, and
// the final summary without its timings.
func trainNumbers(stdout, outDir string) (string, error) {
	var summary map[string]any
	if err := decodeLastLine(stdout, &summary); err != nil {
		return "", err
	}
	for k := range summary {
		for _, w := range timingWords {
			if strings.Contains(k, w) {
				delete(summary, k)
			}
		}
	}
	f, err := os.Open(filepath.Join(outDir, "metrics.jsonl"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	var steps, evals []any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m map[string]any
		if err := decode(sc.Bytes(), &m); err != nil {
			return "", fmt.Errorf("metrics.jsonl: %w", err)
		}
		switch {
		case m["eval"] != nil:
			evals = append(evals, m["eval"])
		case m["loss"] != nil:
			s := map[string]any{"step": m["step"], "loss": m["loss"]}
			if g, ok := m["grad_norm"]; ok {
				s["grad_norm"] = g
			}
			steps = append(steps, s)
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("metrics.jsonl: %w", err)
	}
	if len(steps) == 0 {
		return "", errors.New("metrics.jsonl has no step with a loss")
	}
	return canonical(map[string]any{"steps": steps, "evals": evals, "summary": summary})
}

func decodeLastLine(stdout string, v any) error {
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return errors.New("nothing on stdout")
	}
	if err := decode([]byte(last), v); err != nil {
		return fmt.Errorf("last stdout line %q: %w", last, err)
	}
	return nil
}

// decode keeps numbers as lomo printed them, digit for digit.
func decode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// canonical encodes v with sorted keys, so equal numbers give equal text.
func canonical(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

// record adds run r to its case, comparing its numbers with run 1's.
func record(cs *caseStats, r *runResult) {
	if r.Run == 1 {
		cs.ref = r.numbers
		if r.numbers != "" {
			cs.Reference = json.RawMessage(r.numbers)
		}
	}
	r.NumbersMatch = r.numbers != "" && r.numbers == cs.ref
	if r.Run > 1 && r.numbers != "" && !r.NumbersMatch {
		r.Numbers = json.RawMessage(r.numbers)
		if cs.ref == "" {
			r.fail("numbers: run 1 printed none to compare with")
		} else {
			r.fail("numbers differ from run 1")
		}
	}
	r.Error = strings.Join(r.failures, "; ")
	if r.Error != "" {
		r.StderrTail = r.stderr
	}

	cs.Runs++
	cs.Results = append(cs.Results, r)
	if r.Crash != "" {
		cs.Crashes.Count++
		if cs.Crashes.Signals == nil {
			cs.Crashes.Signals = map[string]int{}
		}
		cs.Crashes.Signals[r.Crash]++
	} else if r.Exit != 0 && !r.Timeout {
		cs.NonzeroExits++
	}
	if r.Timeout {
		cs.Timeouts++
	}
	if len(r.Validation) > 0 {
		cs.ValidationFailures++
	}
	if r.viewerFailed {
		cs.ViewerFailures++
	}
	if len(r.failures) > 0 {
		cs.Failed++
	}
	cs.Identical = true
	secs := make([]float64, 0, len(cs.Results))
	for _, x := range cs.Results {
		cs.Identical = cs.Identical && x.NumbersMatch
		secs = append(secs, x.Seconds)
	}
	cs.MedianSeconds = median(secs)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return float64(int(m*100+0.5)) / 100
}

// finish sets the verdict of the runs so far.
func finish(rep *report) *report {
	rep.Failures = nil
	for _, cs := range rep.Cases {
		var why []string
		if cs.Crashes.Count > 0 {
			var sigs []string
			for s, n := range cs.Crashes.Signals {
				sigs = append(sigs, fmt.Sprintf("%s x%d", s, n))
			}
			sort.Strings(sigs)
			why = append(why, fmt.Sprintf("%d crash(es): %s", cs.Crashes.Count, strings.Join(sigs, ", ")))
		}
		if cs.NonzeroExits > 0 {
			why = append(why, fmt.Sprintf("%d non-zero exit(s)", cs.NonzeroExits))
		}
		if cs.Timeouts > 0 {
			why = append(why, fmt.Sprintf("%d timeout(s)", cs.Timeouts))
		}
		if cs.ValidationFailures > 0 {
			why = append(why, fmt.Sprintf("%d run(s) with validation failures", cs.ValidationFailures))
		}
		if cs.ViewerFailures > 0 {
			why = append(why, fmt.Sprintf("%d run(s) with viewers that could not connect", cs.ViewerFailures))
		}
		if cs.Runs > 0 && !cs.Identical {
			why = append(why, "numbers not identical")
		}
		if len(why) == 0 && cs.Failed > 0 {
			why = append(why, fmt.Sprintf("%d failed run(s)", cs.Failed))
		}
		if len(why) > 0 {
			rep.Failures = append(rep.Failures, cs.Name+": "+strings.Join(why, ", "))
		}
	}
	if rep.Interrupted {
		rep.Failures = append(rep.Failures, "interrupted")
	}
	rep.Pass = len(rep.Failures) == 0 && len(rep.Cases) > 0
	return rep
}

func progressLine(cfg *config, cs *caseStats, r *runResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s run %d/%d: ", cs.Name, r.Run, cfg.runs)
	switch {
	case r.Timeout:
		b.WriteString("timeout")
	case r.Signal != "":
		b.WriteString(r.Signal)
	default:
		fmt.Fprintf(&b, "exit %d", r.Exit)
	}
	fmt.Fprintf(&b, ", %.1fs, ", r.Seconds)
	switch {
	case r.numbers == "":
		b.WriteString("no numbers")
	case r.Run == 1:
		b.WriteString("reference numbers")
	case r.NumbersMatch:
		b.WriteString("numbers same as run 1")
	default:
		b.WriteString("DIFFERENT")
	}
	if r.ViewersConnected != nil {
		fmt.Fprintf(&b, ", viewers %d/%d connected, %d received", *r.ViewersConnected, cfg.viewers, *r.ViewersReceived)
	}
	if r.Error != "" {
		b.WriteString(", FAILED: " + r.Error)
	}
	return b.String()
}

func writeReport(path string, rep *report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func printTable(w io.Writer, rep *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "case\truns\tcrashes\tbad exits\tidentical\tmedian s")
	for _, cs := range rep.Cases {
		ident := "no"
		if cs.Identical {
			ident = "yes"
		} else if cs.Runs == 0 {
			ident = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%.1f\n", cs.Name, cs.Runs, cs.Crashes.Count, cs.NonzeroExits, ident, cs.MedianSeconds)
	}
	tw.Flush()
	if rep.Pass {
		fmt.Fprintln(w, "stress: PASS")
	} else {
		fmt.Fprintf(w, "stress: FAIL (%s)\n", strings.Join(rep.Failures, "; "))
	}
}
