package data

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/internal/shared"
)

func TestSplit(t *testing.T) {
	task, err := LoadTask("boolq", shared.Path(t, "superglue/BoolQ/val.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	n := len(task.Examples)
	ids := func(tk *Task) []string {
		var s []string
		for _, ex := range tk.Examples {
			s = append(s, ex.ID)
		}
		return s
	}
	tr1, ev1 := task.Split(1000, 0)
	tr2, ev2 := task.Split(1000, 0)
	tr3, _ := task.Split(1000, 1)
	if len(tr1.Examples) != 1000 || len(ev1.Examples) != n-1000 {
		t.Fatalf("sizes %d, %d of %d", len(tr1.Examples), len(ev1.Examples), n)
	}
	if tr1.Name != "boolq" || ev1.Kind != KindChoice {
		t.Errorf("split lost name/kind: %q %q", tr1.Name, ev1.Kind)
	}
	if strings.Join(ids(tr1), ",") != strings.Join(ids(tr2), ",") || strings.Join(ids(ev1), ",") != strings.Join(ids(ev2), ",") {
		t.Error("same seed, different split")
	}
	if strings.Join(ids(tr1), ",") == strings.Join(ids(tr3), ",") {
		t.Error("seeds 0 and 1 give the same split")
	}
	// Disjoint and covering.
	seen := map[string]int{}
	for _, id := range append(ids(tr1), ids(ev1)...) {
		seen[id]++
	}
	if len(seen) != n {
		t.Errorf("%d distinct ids over both halves, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("id %s in %d halves", id, c)
		}
	}
	// Shuffled, not a prefix.
	if strings.Join(ids(tr1)[:10], ",") == strings.Join(ids(task)[:10], ",") {
		t.Error("split is not shuffled")
	}
	// The receiver is untouched.
	if task.Examples[0].ID != "0" || len(task.Examples) != n {
		t.Error("Split changed the task")
	}
	// Clamping.
	if a, b := task.Split(n+5, 3); len(a.Examples) != n || len(b.Examples) != 0 {
		t.Error("n > len not clamped")
	}
	if a, b := task.Split(-1, 3); len(a.Examples) != 0 || len(b.Examples) != n {
		t.Error("n < 0 not clamped")
	}
}

func TestChanceMixed(t *testing.T) {
	task := &Task{Kind: KindChoice, Examples: []Example{
		{Options: []string{"a", "b"}}, {Options: []string{"a", "b", "c", "d"}},
	}}
	if c := task.Chance(); c != 0.375 {
		t.Errorf("Chance %v", c)
	}
	if c := (&Task{Kind: KindChoice}).Chance(); c != 0 {
		t.Errorf("empty Chance %v", c)
	}
}

func TestGenericFormats(t *testing.T) {
	in := "\ufeff{\"prompt\":\"Q: 2+2?\\nA: \",\"completion\":\"4\",\"id\":\"x1\"}\n\n" +
		"{\"prompt\":\"Say hi\",\"completion\":\"hi\",\"extra\":1}\r\n"
	task, err := ParseTask("jsonl", strings.NewReader(in), "inst.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if task.Kind != KindGenerate || len(task.Examples) != 2 {
		t.Fatalf("%+v", task)
	}
	e0, e1 := task.Examples[0], task.Examples[1]
	if e0.Prompt != "Q: 2+2?\nA: " || e0.Target != "4" || e0.ID != "x1" || e0.Label != -1 || e0.Options != nil ||
		len(e0.Answers) != 1 || e0.Answers[0] != "4" {
		t.Errorf("%+v", e0)
	}
	if e1.ID != "3" || e1.Target != "hi" { // id defaults to the line number
		t.Errorf("%+v", e1)
	}

	in = `{"prompt":"Pick","options":["x","y","z"],"label":2,"id":5}
{"prompt":"Pick","options":["x","y"]}
`
	task, err = ParseTask("choice", strings.NewReader(in), "mc.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if task.Kind != KindChoice || task.Examples[0].Target != "z" || task.Examples[0].ID != "5" ||
		task.Examples[1].Label != -1 || task.Examples[1].Target != "" {
		t.Errorf("%+v", task.Examples)
	}
	if c := task.Chance(); math.Abs(c-(1.0/3+0.5)/2) > 1e-15 {
		t.Errorf("Chance %v", c)
	}

	if _, err := ParseTask("squad", strings.NewReader(in), "x"); err == nil || !strings.Contains(err.Error(), "unknown task") {
		t.Errorf("unknown task: %v", err)
	}
	if _, err := LoadTask("boolq", filepath.Join(t.TempDir(), "nope.jsonl")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	good := map[string]string{
		"boolq":   `{"question":"q","passage":"p","label":true,"idx":0}`,
		"cb":      `{"premise":"p","hypothesis":"h","label":"neutral","idx":0}`,
		"rte":     `{"premise":"p","hypothesis":"h","label":"entailment","idx":0}`,
		"copa":    `{"premise":"p","choice1":"a","choice2":"b","question":"cause","label":0,"idx":0}`,
		"wic":     `{"word":"w","sentence1":"a","sentence2":"b","label":false,"idx":0}`,
		"wsc":     `{"text":"t","target":{"span1_text":"a","span2_text":"b"},"label":true,"idx":0}`,
		"multirc": `{"idx":0,"passage":{"text":"t","questions":[{"question":"q","idx":0,"answers":[{"text":"a","idx":0,"label":1}]}]}}`,
		"record":  `{"idx":0,"passage":{"text":"Ann met Bob","entities":[{"start":0,"end":2}]},"qas":[{"query":"@placeholder met Bob","idx":0,"answers":[{"text":"Ann"}]}]}`,
		"jsonl":   `{"prompt":"p","completion":"c"}`,
		"choice":  `{"prompt":"p","options":["a","b"],"label":0}`,
	}
	for name, line := range good {
		if _, err := ParseTask(name, strings.NewReader(line+"\n"), "ok.jsonl"); err != nil {
			t.Errorf("%s good line: %v", name, err)
		}
	}
	cases := []struct {
		name, bad, want string
	}{
		{"boolq", `{"question":"q","passage":"p","label":true`, "bad JSON"},
		{"boolq", `not json`, "bad JSON"},
		{"boolq", `{"question":"q","label":true}`, `missing field "passage"`},
		{"boolq", `{"question":"q","passage":"p","label":"maybe"}`, "out of range"},
		{"boolq", `{"question":"q","passage":3,"label":true}`, "bad JSON"},
		{"cb", `{"premise":"p","hypothesis":"h","label":"yes"}`, "out of range"},
		{"cb", `{"premise":"p","hypothesis":"h","label":3}`, "out of range"},
		{"cb", `{"premise":"p","label":"neutral"}`, `missing field "hypothesis"`},
		{"rte", `{"premise":"p","hypothesis":"h","label":true}`, "label true"},
		{"copa", `{"premise":"p","choice1":"a","choice2":"b","question":"cause","label":2}`, "out of range"},
		{"copa", `{"premise":"p","choice1":"a","question":"cause","label":0}`, `missing field "choice2"`},
		{"copa", `{"premise":"p","choice1":"a","choice2":"b","question":"why","label":0}`, "cause or effect"},
		{"wic", `{"sentence1":"a","sentence2":"b","label":false}`, `missing field "word"`},
		{"wsc", `{"text":"t","label":true}`, `missing field "target"`},
		{"wsc", `{"text":"t","target":{"span1_text":"a"},"label":true}`, `missing field "target.span2_text"`},
		{"multirc", `{"passage":{"text":"t","questions":[{"question":"q","answers":[{"text":"a","label":2}]}]}}`, "answers[0]: label 2 out of range"},
		{"multirc", `{"passage":{"text":"t"}}`, `missing field "passage.questions"`},
		{"record", `{"passage":{"text":"Ann","entities":[{"start":0,"end":9}]},"qas":[]}`, "outside the passage"},
		{"record", `{"passage":{"text":"Ann","entities":[]}}`, `missing field "qas"`},
		{"jsonl", `{"prompt":"p"}`, `missing field "completion"`},
		{"jsonl", `{"completion":"c"}`, `missing field "prompt"`},
		{"choice", `{"prompt":"p","options":["a","b"],"label":2}`, "out of range"},
		{"choice", `{"prompt":"p","options":["a","b"],"label":-1}`, "out of range"},
		{"choice", `{"prompt":"p","options":["a"],"label":0}`, "at least 2"},
		{"choice", `{"prompt":"p","label":0}`, `missing field "options"`},
	}
	for _, c := range cases {
		// The bad line is line 3, after a good line and a blank one.
		in := good[c.name] + "\n\n" + c.bad + "\n" + good[c.name] + "\n"
		task, err := ParseTask(c.name, strings.NewReader(in), "dir/f.jsonl")
		if err == nil {
			t.Errorf("%s %s: no error", c.name, c.bad)
			continue
		}
		if task != nil {
			t.Errorf("%s: partial task returned with the error", c.name)
		}
		var de *DatasetError
		if !errors.As(err, &de) || de.Line != 3 || de.File != "dir/f.jsonl" {
			t.Errorf("%s %s: error %v is not a DatasetError at line 3", c.name, c.bad, err)
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "dir/f.jsonl:3: ") || !strings.Contains(msg, c.want) {
			t.Errorf("%s %s: error %q, want %q", c.name, c.bad, msg, c.want)
		}
	}

	// Empty files, through LoadTask so the path is in the message.
	for _, content := range []string{"", "\n\n  \n"} {
		path := filepath.Join(t.TempDir(), "empty.jsonl")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		task, err := LoadTask("rte", path)
		var de *DatasetError
		if task != nil || !errors.As(err, &de) || de.File != path || !strings.Contains(err.Error(), "no examples") {
			t.Errorf("empty file %q: %v", content, err)
		}
		if want := strings.Count(content, "\n") + 1; de != nil && de.Line != want {
			t.Errorf("empty file %q: line %d, want %d", content, de.Line, want)
		}
	}
}

// TestLabelled: examples without a label (SuperGLUE test files) are left
// out and counted; multiple choice needs a label, generation a target or
// answers.
func TestLabelled(t *testing.T) {
	copa := `{"premise": "A.", "choice1": "B.", "choice2": "C.", "question": "effect", "label": 1, "idx": 0}
{"premise": "D.", "choice1": "E.", "choice2": "F.", "question": "cause", "idx": 1}
{"premise": "G.", "choice1": "H.", "choice2": "I.", "question": "cause", "label": null, "idx": 2}
`
	task, err := ParseTask("copa", strings.NewReader(copa), "copa.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	lab, n := task.Labelled()
	if n != 2 || len(lab.Examples) != 1 || lab.Examples[0].ID != "0" || lab.Name != "copa" || lab.Kind != KindChoice || len(task.Examples) != 3 {
		t.Errorf("copa: %d labelled (%+v), %d left out; want example 0 alone, 2 left out, the task unchanged", len(lab.Examples), lab.Examples, n)
	}
	gen, err := ParseTask("jsonl", strings.NewReader(`{"prompt": "a", "completion": "b"}`+"\n"), "gen.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if lab, n := gen.Labelled(); n != 0 || len(lab.Examples) != 1 {
		t.Errorf("instruction data: %d labelled, %d left out; want 1, 0", len(lab.Examples), n)
	}
	unl, err := ParseTask("copa", strings.NewReader(copa[strings.IndexByte(copa, '\n')+1:]), "test.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if lab, n := unl.Labelled(); n != 2 || len(lab.Examples) != 0 {
		t.Errorf("unlabelled copa: %d labelled, %d left out; want 0, 2", len(lab.Examples), n)
	}
}
