package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/hf/tokenizer"
	"github.com/lomo-dev/lomo/monitor"
	"github.com/lomo-dev/lomo/nn"
)

// EvalResult is one evaluation.
type EvalResult struct {
	Task       string  `json:"task"`
	Metric     string  `json:"metric"` // acc, or em and f1 for generation
	Value      float64 `json:"value"`
	F1         float64 `json:"f1,omitempty"`
	N          int     `json:"n"`                    // examples scored
	Unlabelled int     `json:"unlabelled,omitempty"` // examples left out: no label to score against
	Step       int     `json:"step"`
	ZeroShot   bool    `json:"zero_shot,omitempty"`
}

// MarshalJSON writes a non-finite Value or F1 as "NaN", "Inf" or "-Inf"
// (see metricLine).
func (r EvalResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Task       string        `json:"task"`
		Metric     string        `json:"metric"`
		Value      monitor.Float `json:"value"`
		F1         monitor.Float `json:"f1,omitempty"`
		N          int           `json:"n"`
		Unlabelled int           `json:"unlabelled,omitempty"`
		Step       int           `json:"step"`
		ZeroShot   bool          `json:"zero_shot,omitempty"`
	}{r.Task, r.Metric, monitor.Float(r.Value), monitor.Float(r.F1), r.N, r.Unlabelled, r.Step, r.ZeroShot})
}

// Evaluate scores the task: multiple choice by per-option NLL (sum or mean
// per score_by), accuracy; generation tasks without options by greedy
// decoding, exact match and F1.
func (tr *Trainer) Evaluate(task *data.Task) (EvalResult, error) {
	return Evaluate(tr.Model, tr.Tok, task, EvalOptions{BatchSize: tr.Cfg.EvalBatchSize, MaxLen: tr.Cfg.DataMaxLength, Mean: tr.Cfg.ScoreBy == "mean", MaxNewTokens: tr.Cfg.MaxNewTokens})
}

// EvalOptions configure Evaluate.
type EvalOptions struct {
	BatchSize, MaxLen int
	Mean              bool // rank options by mean NLL per token instead of the sum
	MaxNewTokens      int
}

// Evaluate scores a task with model m (see Trainer.Evaluate). Examples
// without a label are left out (counted in Unlabelled); a task with none
// labelled is an error, not an accuracy of 0.
func Evaluate(m *nn.Llama, tok *tokenizer.Tokenizer, task *data.Task, opt EvalOptions) (EvalResult, error) {
	all := len(task.Examples)
	task, unlabelled := task.Labelled()
	r := EvalResult{Task: task.Name, N: len(task.Examples), Unlabelled: unlabelled}
	if r.N == 0 {
		return r, fmt.Errorf("train: evaluate %s: none of its %d examples has a label (an unlabelled test split?): there is nothing to score against", task.Name, all)
	}
	if opt.BatchSize <= 0 {
		opt.BatchSize = 16
	}
	if task.Kind == "choice" || allHaveOptions(task) {
		r.Metric = "acc"
		preds, gold, err := chooseAll(m, tok, task, opt)
		if err != nil {
			return r, err
		}
		r.Value = data.Accuracy(preds, gold)
		return r, nil
	}
	r.Metric = "em"
	var em, f1 float64
	for _, ex := range task.Examples {
		ids := append([]int{}, tok.EncodeWithSpecial(ex.Prompt)...)
		out, err := m.Generate(ids, nn.SampleOptions{MaxNewTokens: max(1, opt.MaxNewTokens), EOS: tok.EOS()}, nil)
		if err != nil {
			return r, err
		}
		text := strings.TrimSpace(strings.SplitN(tok.Decode(out), "\n", 2)[0])
		answers := ex.Answers
		if len(answers) == 0 {
			answers = []string{ex.Target}
		}
		em += data.ExactMatch(text, answers)
		f1 += data.F1(text, answers)
	}
	if n := len(task.Examples); n > 0 {
		r.Value, r.F1 = em/float64(n), f1/float64(n)
	}
	return r, nil
}

func allHaveOptions(t *data.Task) bool {
	for _, ex := range t.Examples {
		if len(ex.Options) < 2 {
			return false
		}
	}
	return len(t.Examples) > 0
}

type optionRef struct{ ex, opt int }

// chooseAll scores every option of every example in batches and picks the
// lowest NLL per example.
func chooseAll(m *nn.Llama, tok *tokenizer.Tokenizer, task *data.Task, opt EvalOptions) (preds, gold []int, err error) {
	var seqs []data.Sequence
	var refs []optionRef
	ntok := make([][]int, len(task.Examples))
	for i, ex := range task.Examples {
		ss, nt := data.ChoiceSequences(tok, ex, opt.MaxLen)
		ntok[i] = nt
		for j, s := range ss {
			seqs = append(seqs, s)
			refs = append(refs, optionRef{i, j})
		}
	}
	nll := make([][]float64, len(task.Examples))
	for i, ex := range task.Examples {
		nll[i] = make([]float64, len(ex.Options))
	}
	pad := max(0, tok.EOS())
	for lo := 0; lo < len(seqs); lo += opt.BatchSize {
		hi := min(lo+opt.BatchSize, len(seqs))
		b := data.Collate(seqs[lo:hi], pad)
		sums, err := SequenceNLL(m, b)
		if err != nil {
			return nil, nil, err
		}
		for k, s := range sums {
			ref := refs[lo+k]
			nll[ref.ex][ref.opt] = s
		}
	}
	for i, ex := range task.Examples {
		preds = append(preds, data.PickOption(nll[i], ntok[i], opt.Mean))
		gold = append(gold, ex.Label)
	}
	return preds, gold, nil
}

// SequenceNLL returns each row's summed next-token NLL over its labelled
// positions.
func SequenceNLL(m *nn.Llama, b data.Batch) ([]float64, error) {
	in, err := m.NewInputs(b.B, b.T, b.IDs, b.Labels, b.Start)
	if err != nil {
		return nil, err
	}
	defer in.Release()
	t := nn.NewTape(m.Device(), false)
	loss, err := m.Loss(t, in, nn.LossOptions{GradScale: 1})
	if err != nil {
		return nil, err
	}
	defer loss.Release()
	v, err := nn.ReadF32(loss.Buf.Device(), loss) // the head's device
	if err != nil {
		return nil, err
	}
	sums := make([]float64, b.B)
	for i, x := range v {
		sums[i/b.T] += float64(x)
	}
	return sums, nil
}

// PromptIDs encodes a generation prompt as the tokenizer does with its
// special tokens; an empty prompt starts from BOS alone.
func PromptIDs(tok *tokenizer.Tokenizer, prompt string) ([]int, error) {
	ids := tok.EncodeWithSpecial(prompt)
	if len(ids) == 0 {
		if tok.BOS() < 0 {
			return nil, errors.New("empty prompt and the tokenizer has no BOS token")
		}
		ids = []int{tok.BOS()}
	}
	return ids, nil
}
