// Package monitor streams training metrics from a trainer to live dashboards.
//
// A trainer publishes Events (see events.go) either to an in-process Hub or,
// from another process, through a Publisher dialed to a standalone hub
// (`lomo monitor --listen ADDR`). The Hub keeps each run's history and fans
// events out to websocket viewers (the dashboard in package web) without ever
// blocking the publisher; viewers can send control actions ("checkpoint",
// "stop") back to the trainer.
//
// # Runs: who publishes, what is kept, for how long
//
// Only a run's owner publishes into it: the trainer in the hub's own process
// (`lomo train --monitor`; remote publishers cannot write into its run), or
// on a standalone hub the Publisher that created the run, by its run key.
// Viewing never creates a run: a viewer of an unknown run id is told it
// waits. Each run keeps at most 64 MiB of events and the hub 512 MiB in all
// (HubOptions), the oldest dropped first and later viewers told how many; an
// ended run leaves the hub 24 h after its last event, one whose publisher
// left without ending it after 1 h. A Publisher that reconnects sends its
// run's "run" event again; what the hub refuses, Publish reports.
//
// # Wire format
//
// Every event is one JSON object, one websocket text frame:
//
//	{"v":1,"run":"r1","seq":7,"time":"2025-01-02T03:04:05.6Z","kind":"step",
//	 "step":{"step":12,"loss":2.31,"lr":0.001,...}}
//
// The payload sits under a key named after its kind ("run_info" for kind
// "run", "step", "eval", "sample", "end"; kind "error" also uses "end").
//
// # Non-finite numbers
//
// JSON has no NaN or Inf, and a diverging run produces exactly those losses.
// The float fields of Step and Eval are therefore encoded as JSON numbers when
// finite and as the JSON strings "NaN", "Inf" and "-Inf" otherwise; decoding
// accepts both forms (and null, as NaN), so a NaN loss round-trips exactly.
// The dashboard draws such points as gaps. RunInfo.Config is encoded with
// encoding/json as is, so it must not hold non-finite floats (Publish reports
// the error).
package monitor

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// SchemaVersion is the version of the event schema; Event.V must equal it.
// Bump it on any incompatible change.
const SchemaVersion = 1

// Event kinds.
const (
	KindRun    = "run"    // run started: RunInfo
	KindStep   = "step"   // one optimizer step: Step
	KindEval   = "eval"   // one evaluation result: Eval
	KindSample = "sample" // one generated sample: Sample
	KindEnd    = "end"    // run finished (terminal): End
	KindError  = "error"  // a non-terminal error report: End with Err set
)

// Event is one message of a run's stream. Exactly one payload pointer is set,
// the one matching Kind.
type Event struct {
	V    int       `json:"v"`
	Run  string    `json:"run"`
	Seq  uint64    `json:"seq"` // assigned by the Hub: 1, 2, 3... per run
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`

	RunInfo *RunInfo `json:"run_info,omitempty"`
	Step    *Step    `json:"step,omitempty"`
	Eval    *Eval    `json:"eval,omitempty"`
	Sample  *Sample  `json:"sample,omitempty"`
	End     *End     `json:"end,omitempty"`
}

// RunInfo describes a run; it is the payload of the first event of a run.
type RunInfo struct {
	Model   string         `json:"model"`
	Adapter string         `json:"adapter,omitempty"` // "webgpu", "wasm", ...
	Config  map[string]any `json:"config,omitempty"`
	Params  int64          `json:"params"`
	// LoRAParams counts the LoRA adapters' parameters, apart from the
	// model's (Params); 0 without adapters.
	LoRAParams int64  `json:"lora_params,omitempty"`
	Optimizer  string `json:"optimizer"`
	Dtype      string `json:"dtype"`
}

// MemStat is the device memory held under one tag, in bytes.
type MemStat struct {
	Live int64 `json:"live"`
	Peak int64 `json:"peak"`
}

// Step reports one optimizer step. Float fields may be NaN or ±Inf (see the
// package documentation for their encoding).
type Step struct {
	Step         int                `json:"step"`
	Epoch        float64            `json:"epoch"`
	Loss         float64            `json:"loss"`
	LR           float64            `json:"lr"`
	GradNorm     float64            `json:"grad_norm"`
	ClipCoef     float64            `json:"clip_coef"`
	LossScale    float64            `json:"loss_scale"`
	Skipped      bool               `json:"skipped,omitempty"` // overflow: update skipped
	TokensPerSec float64            `json:"tokens_per_sec"`
	Memory       map[string]MemStat `json:"memory,omitempty"` // tag -> bytes
}

// Eval reports one evaluation metric.
type Eval struct {
	Step     int     `json:"step"`
	Task     string  `json:"task"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	ZeroShot bool    `json:"zero_shot,omitempty"`
}

// Sample is a piece of text generated during training.
type Sample struct {
	Step   int    `json:"step"`
	Prompt string `json:"prompt"`
	Text   string `json:"text"`
}

// End closes a run (kind "end", Reason e.g. "done", "stopped", "error") or
// reports a non-terminal error (kind "error", Err required).
type End struct {
	Reason string `json:"reason,omitempty"`
	Err    string `json:"err,omitempty"`
}

// Validation errors.
var (
	ErrVersion = errors.New("monitor: unsupported event schema version")
	ErrKind    = errors.New("monitor: unknown event kind")
	ErrPayload = errors.New("monitor: event payload does not match its kind")
	ErrRunID   = errors.New("monitor: invalid run id")
)

// MaxRunIDLen bounds the length of a run id.
const MaxRunIDLen = 128

// ValidRunID reports whether id is a usable run id: 1 to MaxRunIDLen
// characters out of [A-Za-z0-9._:-]. Run ids travel in URLs and file names.
func ValidRunID(id string) bool {
	if len(id) == 0 || len(id) > MaxRunIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == ':':
		default:
			return false
		}
	}
	return true
}

// complete fills in V (when 0) and Time (when zero), as publishers may
// leave them, and validates the event.
func (e *Event) complete() error {
	if e.V == 0 {
		e.V = SchemaVersion
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	return e.Validate()
}

// Validate checks the version, the run id, the kind and that exactly the
// payload matching the kind is set.
func (e *Event) Validate() error {
	if e.V != SchemaVersion {
		return fmt.Errorf("%w: v=%d, want %d", ErrVersion, e.V, SchemaVersion)
	}
	if !ValidRunID(e.Run) {
		return fmt.Errorf("%w: %q", ErrRunID, truncate(e.Run, 40))
	}
	n := 0
	for _, set := range []bool{e.RunInfo != nil, e.Step != nil, e.Eval != nil, e.Sample != nil, e.End != nil} {
		if set {
			n++
		}
	}
	var ok bool
	switch e.Kind {
	case KindRun:
		ok = e.RunInfo != nil
	case KindStep:
		ok = e.Step != nil
	case KindEval:
		ok = e.Eval != nil
	case KindSample:
		ok = e.Sample != nil
	case KindEnd:
		ok = e.End != nil
	case KindError:
		ok = e.End != nil && e.End.Err != ""
	default:
		return fmt.Errorf("%w: %q", ErrKind, truncate(e.Kind, 40))
	}
	if !ok || n != 1 {
		return fmt.Errorf("%w: kind %q", ErrPayload, e.Kind)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// Float is a float64 that encodes as a JSON number when finite and as the
// JSON strings "NaN", "Inf" and "-Inf" otherwise, so that no figure is lost
// (encoding/json refuses non-finite numbers). The monitor's events and the
// trainer's metrics.jsonl use it.
type Float float64

func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

func (f *Float) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN", "nan":
			*f = Float(math.NaN())
		case "Inf", "+Inf", "inf", "Infinity":
			*f = Float(math.Inf(1))
		case "-Inf", "-inf", "-Infinity":
			*f = Float(math.Inf(-1))
		default:
			return fmt.Errorf("monitor: bad number %q", truncate(s, 20))
		}
		return nil
	}
	if string(b) == "null" {
		*f = Float(math.NaN())
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("monitor: bad number %q", truncate(string(b), 20))
	}
	*f = Float(v)
	return nil
}

type stepJSON struct {
	Step         int                `json:"step"`
	Epoch        Float              `json:"epoch"`
	Loss         Float              `json:"loss"`
	LR           Float              `json:"lr"`
	GradNorm     Float              `json:"grad_norm"`
	ClipCoef     Float              `json:"clip_coef"`
	LossScale    Float              `json:"loss_scale"`
	Skipped      bool               `json:"skipped,omitempty"`
	TokensPerSec Float              `json:"tokens_per_sec"`
	Memory       map[string]MemStat `json:"memory,omitempty"`
}

// MarshalJSON encodes s, writing non-finite floats as strings.
func (s Step) MarshalJSON() ([]byte, error) {
	return json.Marshal(stepJSON{s.Step, Float(s.Epoch), Float(s.Loss), Float(s.LR),
		Float(s.GradNorm), Float(s.ClipCoef), Float(s.LossScale), s.Skipped,
		Float(s.TokensPerSec), s.Memory})
}

// UnmarshalJSON decodes s, accepting numbers, "NaN", "Inf", "-Inf" and null.
func (s *Step) UnmarshalJSON(b []byte) error {
	var j stepJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Step{j.Step, float64(j.Epoch), float64(j.Loss), float64(j.LR), float64(j.GradNorm),
		float64(j.ClipCoef), float64(j.LossScale), j.Skipped, float64(j.TokensPerSec), j.Memory}
	return nil
}

type evalJSON struct {
	Step     int    `json:"step"`
	Task     string `json:"task"`
	Metric   string `json:"metric"`
	Value    Float  `json:"value"`
	ZeroShot bool   `json:"zero_shot,omitempty"`
}

// MarshalJSON encodes e, writing a non-finite Value as a string.
func (e Eval) MarshalJSON() ([]byte, error) {
	return json.Marshal(evalJSON{e.Step, e.Task, e.Metric, Float(e.Value), e.ZeroShot})
}

// UnmarshalJSON decodes e, accepting numbers, "NaN", "Inf", "-Inf" and null.
func (e *Eval) UnmarshalJSON(b []byte) error {
	var j evalJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = Eval{j.Step, j.Task, j.Metric, float64(j.Value), j.ZeroShot}
	return nil
}

// DecodeEvent parses one JSON event and validates it.
func DecodeEvent(b []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return Event{}, fmt.Errorf("monitor: malformed event: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return Event{}, err
	}
	return ev, nil
}
