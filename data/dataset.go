package data

// Datasets: a task is a list of prompted examples read from a jsonl file,
// either one of the SuperGLUE tasks in their official format (superglue.go)
// or one of two generic formats:
//
//	jsonl   {"prompt": "...", "completion": "..."}            instruction data
//	choice  {"prompt": "...", "options": ["a","b"], "label": 1} multiple choice
//
// Both generic formats take an optional "id" (string or number). The prompt
// is used exactly as written; nothing is added to it.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
)

// An Example is one training/eval item after prompting.
type Example struct {
	// Prompt is the text the model conditions on. SuperGLUE prompts end with
	// "\nAnswer: " like the reference's.
	Prompt string
	// Options are the candidate answers of a multiple-choice item (the
	// target is Options[Label]); nil for generation/instruction data.
	Options []string
	// Label is the index of the right option; -1 when unknown (an unlabelled
	// test file, or a ReCoRD query whose answer is not among the entities).
	Label int
	// Target is the completion to train on: Options[Label] for multiple
	// choice, the first answer for ReCoRD, the completion for instruction
	// data; "" when unknown.
	Target string
	// Answers are all acceptable answers of a generation task (ReCoRD, and
	// the completion of instruction data) for exact match / F1.
	Answers []string
	ID      string
}

// Task kinds.
const (
	KindChoice   = "choice"   // multiple choice, scored by per-option NLL
	KindGenerate = "generate" // generation, scored by exact match / F1
)

// A Task is a named list of examples.
type Task struct {
	Name     string // boolq, cb, copa, multirc, rte, wic, wsc, record, jsonl, choice
	Kind     string // KindChoice or KindGenerate
	Examples []Example
}

// TaskNames lists the names LoadTask and ParseTask accept.
func TaskNames() []string {
	names := make([]string, 0, len(dsParsers))
	for n := range dsParsers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// DatasetError reports a malformed line of a task file.
type DatasetError struct {
	File string // the source name given to ParseTask (the path for LoadTask)
	Line int    // 1-based line number
	Err  error
}

func (e *DatasetError) Error() string {
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

func (e *DatasetError) Unwrap() error { return e.Err }

// dsParser turns one non-blank jsonl line into zero or more examples.
type dsParser struct {
	kind  string
	parse func(line []byte) ([]Example, error)
}

var dsParsers = map[string]dsParser{
	"boolq":   {KindChoice, sgBoolQ},
	"cb":      {KindChoice, sgCB},
	"copa":    {KindChoice, sgCOPA},
	"multirc": {KindChoice, sgMultiRC},
	"rte":     {KindChoice, sgRTE},
	"wic":     {KindChoice, sgWiC},
	"wsc":     {KindChoice, sgWSC},
	"record":  {KindGenerate, sgReCoRD},
	"jsonl":   {KindGenerate, dsInstruction},
	"choice":  {KindChoice, dsChoice},
}

// dsCanonical maps a task name (any case; "superglue-" prefix and the
// SuperGLUE folder spellings such as "ReCoRD" allowed) to its key.
func dsCanonical(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	n = strings.TrimPrefix(n, "superglue-")
	n = strings.TrimPrefix(n, "super_glue/")
	return n
}

// LoadTask reads a task file: name is one of boolq cb copa multirc rte wic
// wsc record (official SuperGLUE jsonl), "jsonl" (generic instruction data
// {"prompt","completion"} per line), or "choice" (generic multiple choice
// {"prompt","options":[...],"label":N} per line). Errors name the file and
// the line; no partial task is returned.
func LoadTask(name, path string) (*Task, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseTask(name, f, path)
}

// ParseTask is LoadTask on a reader; source names it in errors. Blank lines
// are skipped; a file with no examples is an error.
func ParseTask(name string, r io.Reader, source string) (*Task, error) {
	key := dsCanonical(name)
	p, ok := dsParsers[key]
	if !ok {
		return nil, fmt.Errorf("%s: unknown task %q (want one of %s)", source, name, strings.Join(TaskNames(), ", "))
	}
	t := &Task{Name: key, Kind: p.kind}
	br := bufio.NewReaderSize(r, 1<<16)
	line := 0
	for {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 {
			line++
			b = bytes.TrimSpace(b)
			if line == 1 {
				b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // UTF-8 BOM
			}
			if len(b) > 0 {
				exs, perr := p.parse(b)
				if perr != nil {
					return nil, &DatasetError{File: source, Line: line, Err: perr}
				}
				for i := range exs {
					if exs[i].ID == "" {
						exs[i].ID = strconv.Itoa(line)
						if len(exs) > 1 {
							exs[i].ID += "-" + strconv.Itoa(i)
						}
					}
				}
				t.Examples = append(t.Examples, exs...)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", source, line+1, err)
		}
	}
	if len(t.Examples) == 0 {
		return nil, &DatasetError{File: source, Line: line + 1, Err: errors.New("no examples (empty file)")}
	}
	return t, nil
}

// Split shuffles the examples with a seeded PRNG (math/rand/v2
// PCG(seed, 0)) and returns the first n as train and the rest as eval (the
// LOMO paper's recipe, applied to val.jsonl). n is clamped to [0, len]. The
// receiver is not changed; both halves share its Name and Kind.
func (t *Task) Split(n int, seed uint64) (train, eval *Task) {
	perm := make([]int, len(t.Examples))
	for i := range perm {
		perm[i] = i
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
	n = max(0, min(n, len(perm)))
	pick := func(idx []int) *Task {
		out := &Task{Name: t.Name, Kind: t.Kind, Examples: make([]Example, len(idx))}
		for i, k := range idx {
			out.Examples[i] = t.Examples[k]
		}
		return out
	}
	return pick(perm[:n]), pick(perm[n:])
}

// Labelled returns the task with only the examples that have an answer to
// learn and score against (a label for multiple choice; a target or
// answers for generation), and how many it left out: SuperGLUE's test
// files have no labels, and training or scoring on them would report
// figures that mean nothing. The receiver is not changed.
func (t *Task) Labelled() (labelled *Task, unlabelled int) {
	out := &Task{Name: t.Name, Kind: t.Kind, Examples: make([]Example, 0, len(t.Examples))}
	for _, ex := range t.Examples {
		ok := ex.Target != "" || len(ex.Answers) > 0
		if t.Kind == KindChoice {
			ok = ex.Label >= 0 && ex.Label < len(ex.Options)
		}
		if ok {
			out.Examples = append(out.Examples, ex)
		}
	}
	return out, len(t.Examples) - len(out.Examples)
}

// Chance is the expected accuracy of a uniform guess: the mean over the
// examples of 1/len(Options). It is 0 for generation tasks and empty tasks.
func (t *Task) Chance() float64 {
	if t.Kind != KindChoice || len(t.Examples) == 0 {
		return 0
	}
	s := 0.0
	for _, ex := range t.Examples {
		if len(ex.Options) > 0 {
			s += 1 / float64(len(ex.Options))
		}
	}
	return s / float64(len(t.Examples))
}

// ---------------------------------------------------------------------------
// Generic formats

// dsUnmarshal decodes one line into v, describing a failure as bad JSON.
func dsUnmarshal(line []byte, v any) error {
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("bad JSON: %v", err)
	}
	return nil
}

// dsMissing is the error for an absent required field.
func dsMissing(field string) error { return fmt.Errorf("missing field %q", field) }

// dsID renders an "id"/"idx" value (string or number) as a string.
func dsID(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func dsInstruction(line []byte) ([]Example, error) {
	var v struct {
		Prompt     *string         `json:"prompt"`
		Completion *string         `json:"completion"`
		ID         json.RawMessage `json:"id"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if v.Prompt == nil {
		return nil, dsMissing("prompt")
	}
	if v.Completion == nil {
		return nil, dsMissing("completion")
	}
	return []Example{{
		Prompt:  *v.Prompt,
		Label:   -1,
		Target:  *v.Completion,
		Answers: []string{*v.Completion},
		ID:      dsID(v.ID),
	}}, nil
}

func dsChoice(line []byte) ([]Example, error) {
	var v struct {
		Prompt  *string         `json:"prompt"`
		Options []string        `json:"options"`
		Label   json.RawMessage `json:"label"`
		ID      json.RawMessage `json:"id"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if v.Prompt == nil {
		return nil, dsMissing("prompt")
	}
	if v.Options == nil {
		return nil, dsMissing("options")
	}
	if len(v.Options) < 2 {
		return nil, fmt.Errorf("options: need at least 2, have %d", len(v.Options))
	}
	label, err := sgLabel(v.Label, nil, len(v.Options), false)
	if err != nil {
		return nil, err
	}
	return []Example{sgChoiceExample(*v.Prompt, v.Options, label, dsID(v.ID))}, nil
}
