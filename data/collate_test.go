package data

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/hf/tokenizer"
	"github.com/lomo-dev/lomo/internal/shared"
)

// colFake encodes each rune as its code point; BOS 1, EOS 2 unless set to
// -1.
type colFake struct{ bos, eos int }

func (f colFake) Encode(s string) []int {
	var ids []int
	for _, r := range s {
		ids = append(ids, int(r))
	}
	return ids
}
func (f colFake) BOS() int { return f.bos }
func (f colFake) EOS() int { return f.eos }

const ig = IgnoreIndex

func colCheck(t *testing.T, what string, s Sequence, ids, labels []int) {
	t.Helper()
	if !slices.Equal(s.IDs, ids) || !slices.Equal(s.Labels, labels) {
		t.Errorf("%s:\n ids    %v\n labels %v\nwant\n ids    %v\n labels %v", what, s.IDs, s.Labels, ids, labels)
	}
}

func TestEncodeExampleFake(t *testing.T) {
	enc := colFake{1, 2}
	a, b, c, d := int('a'), int('b'), int('c'), int('d')
	colCheck(t, "masked", EncodeExample(enc, "ab", "cd", 0, false),
		[]int{1, a, b, c, d, 2}, []int{ig, ig, c, d, 2, ig})
	colCheck(t, "train on inputs", EncodeExample(enc, "ab", "cd", 0, true),
		[]int{1, a, b, c, d, 2}, []int{a, b, c, d, 2, ig})
	colCheck(t, "fits exactly", EncodeExample(enc, "ab", "cd", 6, false),
		[]int{1, a, b, c, d, 2}, []int{ig, ig, c, d, 2, ig})
	// Truncation drops prompt tokens from the left, after BOS.
	colCheck(t, "maxLen 5", EncodeExample(enc, "ab", "cd", 5, false),
		[]int{1, b, c, d, 2}, []int{ig, c, d, 2, ig})
	colCheck(t, "maxLen 4", EncodeExample(enc, "ab", "cd", 4, false),
		[]int{1, c, d, 2}, []int{c, d, 2, ig})
	colCheck(t, "maxLen 5 train on inputs", EncodeExample(enc, "ab", "cd", 5, true),
		[]int{1, b, c, d, 2}, []int{b, c, d, 2, ig})
	// Then the target is cut at its end.
	colCheck(t, "maxLen 3", EncodeExample(enc, "ab", "cd", 3, false),
		[]int{1, c, d}, []int{c, d, ig})
	colCheck(t, "maxLen 1", EncodeExample(enc, "ab", "cd", 1, false),
		[]int{1}, []int{ig})
	// Empty target: only EOS is trained on.
	colCheck(t, "empty target", EncodeExample(enc, "ab", "", 0, false),
		[]int{1, a, b, 2}, []int{ig, ig, 2, ig})
	// No BOS / EOS.
	colCheck(t, "no specials", EncodeExample(colFake{-1, -1}, "ab", "cd", 0, false),
		[]int{a, b, c, d}, []int{ig, c, d, ig})
	colCheck(t, "no specials, inputs", EncodeExample(colFake{-1, -1}, "ab", "cd", 3, true),
		[]int{b, c, d}, []int{c, d, ig})
}

func TestCollateFake(t *testing.T) {
	enc := colFake{1, 2}
	s1 := EncodeExample(enc, "abc", "d", 0, false) // 6 tokens
	s2 := EncodeExample(enc, "a", "b", 0, false)   // 4 tokens
	s3 := EncodeExample(enc, "", "", 0, false)     // 2 tokens
	b := Collate([]Sequence{s1, s2, s3}, 0)
	if b.B != 3 || b.T != 6 || !slices.Equal(b.Start, []int{0, 2, 4}) {
		t.Fatalf("B %d T %d Start %v", b.B, b.T, b.Start)
	}
	a, bb, c, d := int('a'), int('b'), int('c'), int('d')
	wantIDs := []int{
		1, a, bb, c, d, 2,
		0, 0, 1, a, bb, 2,
		0, 0, 0, 0, 1, 2,
	}
	wantLabels := []int{
		ig, ig, ig, d, 2, ig,
		ig, ig, ig, bb, 2, ig,
		ig, ig, ig, ig, 2, ig,
	}
	if !slices.Equal(b.IDs, wantIDs) || !slices.Equal(b.Labels, wantLabels) {
		t.Errorf("ids %v\nlabels %v", b.IDs, b.Labels)
	}
	if e := Collate(nil, 0); e.B != 0 || e.T != 0 || len(e.IDs) != 0 {
		t.Errorf("empty batch %+v", e)
	}
}

func TestChoiceSequencesFake(t *testing.T) {
	enc := colFake{1, 2}
	ex := Example{Prompt: "pq", Options: []string{"x", "yz"}, Label: 1}
	seqs, ntok := ChoiceSequences(enc, ex, 0)
	p, q, x, y, z := int('p'), int('q'), int('x'), int('y'), int('z')
	if !slices.Equal(ntok, []int{1, 2}) || len(seqs) != 2 {
		t.Fatalf("ntok %v", ntok)
	}
	colCheck(t, "option 0", seqs[0], []int{1, p, q, x}, []int{ig, ig, x, ig})
	colCheck(t, "option 1", seqs[1], []int{1, p, q, y, z}, []int{ig, ig, y, z, ig})
	seqs, ntok = ChoiceSequences(enc, ex, 3)
	colCheck(t, "option 1 truncated", seqs[1], []int{1, y, z}, []int{y, z, ig})
	colCheck(t, "option 0 truncated", seqs[0], []int{1, q, x}, []int{ig, x, ig})
	if !slices.Equal(ntok, []int{1, 2}) {
		t.Errorf("truncated ntok %v", ntok)
	}
}

func TestTrainBatchesFake(t *testing.T) {
	enc := colFake{1, 2}
	task := &Task{Name: "jsonl", Kind: KindGenerate}
	for i := range 7 {
		task.Examples = append(task.Examples, Example{Prompt: fmt.Sprintf("P%d:", i), Target: string(rune('A' + i)), Label: -1})
	}
	task.Examples = append(task.Examples, Example{Prompt: "no target", Label: -1})
	rows := func(bs []Batch) []string {
		var out []string
		for _, b := range bs {
			for r := range b.B {
				var sb strings.Builder
				for _, id := range b.IDs[r*b.T+b.Start[r] : (r+1)*b.T] {
					if id > 2 {
						sb.WriteRune(rune(id))
					}
				}
				out = append(out, sb.String())
			}
		}
		return out
	}
	b1 := TrainBatches(enc, task, 3, 0, false, 42, 0, 0)
	if len(b1) != 3 || b1[0].B != 3 || b1[1].B != 3 || b1[2].B != 1 {
		t.Fatalf("%d batches", len(b1))
	}
	r1 := rows(b1)
	if r2 := rows(TrainBatches(enc, task, 3, 0, false, 42, 0, 0)); !slices.Equal(r1, r2) {
		t.Errorf("not deterministic: %v vs %v", r1, r2)
	}
	if r3 := rows(TrainBatches(enc, task, 3, 0, false, 42, 1, 0)); slices.Equal(r1, r3) {
		t.Errorf("epochs 0 and 1 in the same order %v", r1)
	}
	got := slices.Clone(r1)
	slices.Sort(got)
	want := []string{"P0:A", "P1:B", "P2:C", "P3:D", "P4:E", "P5:F", "P6:G"}
	if !slices.Equal(got, want) {
		t.Errorf("rows %v, want each of %v once", got, want)
	}
}

func TestCollateStories(t *testing.T) {
	tk, err := tokenizer.Load(shared.Path(t, "models/stories260K/tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if tk.BOS() < 0 || tk.EOS() < 0 {
		t.Fatalf("BOS %d EOS %d", tk.BOS(), tk.EOS())
	}
	prompt := "Passage: Lily had a red ball.\nQuestion: Did Lily have a ball?\nAnswer: "
	p, yes := tk.Encode(prompt), tk.Encode("Yes")
	s := EncodeExample(tk, prompt, "Yes", 0, false)
	wantIDs := slices.Concat([]int{tk.BOS()}, p, yes, []int{tk.EOS()})
	if !slices.Equal(s.IDs, wantIDs) {
		t.Fatalf("ids %v, want %v", s.IDs, wantIDs)
	}
	var targets []int
	for i, l := range s.Labels {
		if l != IgnoreIndex {
			if l != s.IDs[i+1] || i+1 <= len(p) {
				t.Fatalf("label %d at %d: next id %d, prompt ends at %d", l, i, s.IDs[i+1], len(p))
			}
			targets = append(targets, l)
		}
	}
	if !slices.Equal(targets, append(slices.Clone(yes), tk.EOS())) {
		t.Errorf("targets %v", targets)
	}
	if got := strings.TrimSpace(tk.Decode(targets)); got != "Yes" {
		t.Errorf("decoded target %q", got)
	}
	if dec := tk.Decode(s.IDs); !strings.Contains(dec, "Did Lily have a ball?\nAnswer:") {
		t.Errorf("decoded sequence %q", dec)
	}

	// Truncation keeps BOS and the answer.
	tr := EncodeExample(tk, prompt, "Yes", 8, false)
	if len(tr.IDs) != 8 || tr.IDs[0] != tk.BOS() || !slices.Equal(tr.IDs[8-len(yes)-1:], append(slices.Clone(yes), tk.EOS())) ||
		!slices.Equal(tr.IDs[1:8-len(yes)-1], p[len(p)-(8-len(yes)-2):]) {
		t.Errorf("truncated ids %v (prompt %v, yes %v)", tr.IDs, p, yes)
	}

	// Options on a real task, batched.
	task, err := LoadTask("cb", shared.Path(t, "superglue/CB/val.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	ex := task.Examples[0]
	seqs, ntok := ChoiceSequences(tk, ex, 0)
	for i, o := range ex.Options {
		ot := tk.Encode(o)
		if ntok[i] != len(ot) || !slices.Equal(seqs[i].IDs[len(seqs[i].IDs)-len(ot):], ot) ||
			seqs[i].IDs[len(seqs[i].IDs)-1] == tk.EOS() {
			t.Errorf("option %q: ntok %d, ids %v", o, ntok[i], seqs[i].IDs)
		}
		n := 0
		for _, l := range seqs[i].Labels {
			if l != IgnoreIndex {
				n++
			}
		}
		if n != ntok[i] {
			t.Errorf("option %q: %d labels, ntok %d", o, n, ntok[i])
		}
	}
	b := Collate(seqs, tk.EOS())
	for r := range b.B {
		for i := range b.Start[r] {
			if b.IDs[r*b.T+i] != tk.EOS() || b.Labels[r*b.T+i] != IgnoreIndex {
				t.Fatalf("row %d pad %d: id %d label %d", r, i, b.IDs[r*b.T+i], b.Labels[r*b.T+i])
			}
		}
		if b.IDs[r*b.T+b.Start[r]] != tk.BOS() || b.T-b.Start[r] != len(seqs[r].IDs) {
			t.Errorf("row %d: start %d", r, b.Start[r])
		}
	}

	const maxLen = 48
	for _, bt := range TrainBatches(tk, task, 16, maxLen, false, 0, 0, tk.EOS()) {
		if bt.T > maxLen || len(bt.IDs) != bt.B*bt.T || len(bt.Labels) != bt.B*bt.T {
			t.Fatalf("batch B %d T %d", bt.B, bt.T)
		}
		for r := range bt.B {
			n := 0
			for _, l := range bt.Labels[r*bt.T : (r+1)*bt.T] {
				if l != IgnoreIndex {
					n++
				}
			}
			// Every CB answer is one word: its tokens and EOS are trained on.
			if n < 2 || bt.IDs[r*bt.T+bt.Start[r]] != tk.BOS() || bt.IDs[(r+1)*bt.T-1] != tk.EOS() {
				t.Fatalf("row %d: %d targets, ids %v", r, n, bt.IDs[r*bt.T:(r+1)*bt.T])
			}
		}
	}
}
