package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/internal/shared"
)

// sgCountLines counts the non-blank lines of a file, and decodes each for
// the callback (so tests can count nested items independently).
func sgCountLines(t *testing.T, path string, each func(map[string]any)) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	n := 0
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		n++
		if each != nil {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			each(m)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSuperGLUEVal(t *testing.T) {
	cases := []struct {
		name, file string
		options    []string // nil: per-example (COPA, ReCoRD)
		counts     []int    // examples per label index
		chance     float64
	}{
		{"boolq", "BoolQ/val.jsonl", []string{"No", "Yes"}, []int{1237, 2033}, 0.5},
		{"cb", "CB/val.jsonl", []string{"Yes", "No", "Maybe"}, []int{23, 28, 5}, 1.0 / 3},
		{"copa", "COPA/val.jsonl", nil, []int{55, 45}, 0.5},
		{"multirc", "MultiRC/val.jsonl", []string{"No", "Yes"}, []int{2773, 2075}, 0.5},
		{"rte", "RTE/val.jsonl", []string{"Yes", "No"}, []int{146, 131}, 0.5},
		{"wic", "WiC/val.jsonl", []string{"No", "Yes"}, []int{319, 319}, 0.5},
		{"wsc", "WSC/val.jsonl", []string{"No", "Yes"}, []int{66, 38}, 0.5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := shared.Path(t, "superglue/"+c.file)
			want := 0
			lines := sgCountLines(t, path, func(m map[string]any) {
				if c.name != "multirc" {
					return
				}
				for _, q := range m["passage"].(map[string]any)["questions"].([]any) {
					want += len(q.(map[string]any)["answers"].([]any))
				}
			})
			if c.name != "multirc" {
				want = lines
			}
			task, err := LoadTask(c.name, path)
			if err != nil {
				t.Fatal(err)
			}
			if task.Name != c.name || task.Kind != KindChoice {
				t.Errorf("name %q kind %q", task.Name, task.Kind)
			}
			if len(task.Examples) != want {
				t.Fatalf("%d examples, want %d", len(task.Examples), want)
			}
			counts := make([]int, len(c.counts))
			ids := map[string]bool{}
			for i, ex := range task.Examples {
				if !strings.HasSuffix(ex.Prompt, "\nAnswer: ") {
					t.Fatalf("example %d: prompt does not end with \\nAnswer: : %q", i, ex.Prompt)
				}
				if c.options != nil && strings.Join(ex.Options, "|") != strings.Join(c.options, "|") {
					t.Fatalf("example %d: options %q", i, ex.Options)
				}
				if len(ex.Options) != len(c.counts) {
					t.Fatalf("example %d: %d options", i, len(ex.Options))
				}
				if ex.Label < 0 || ex.Label >= len(ex.Options) || ex.Target != ex.Options[ex.Label] {
					t.Fatalf("example %d: label %d target %q options %q", i, ex.Label, ex.Target, ex.Options)
				}
				if ex.ID == "" || ids[ex.ID] {
					t.Fatalf("example %d: id %q empty or repeated", i, ex.ID)
				}
				ids[ex.ID] = true
				counts[ex.Label]++
			}
			for i := range counts {
				if counts[i] != c.counts[i] {
					t.Errorf("label counts %v, want %v", counts, c.counts)
					break
				}
			}
			if ch := task.Chance(); math.Abs(ch-c.chance) > 1e-12 {
				t.Errorf("Chance %v, want %v", ch, c.chance)
			}
		})
	}
}

// TestSuperGLUEPrompts pins the first validation example of each task.
func TestSuperGLUEPrompts(t *testing.T) {
	load := func(name, file string) *Task {
		t.Helper()
		task, err := LoadTask(name, shared.Path(t, "superglue/"+file))
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	copa := load("copa", "COPA/val.jsonl").Examples[0]
	if copa.Prompt != "Premise: The man turned on the faucet.\nQuestion: What was the effect?\nAnswer: " ||
		copa.Label != 1 || copa.Target != "Water flowed from the spout." || copa.ID != "0" {
		t.Errorf("COPA: %+v", copa)
	}
	cb := load("cb", "CB/val.jsonl").Examples[0]
	if !strings.HasPrefix(cb.Prompt, "Premise: Valence the void-brain") ||
		!strings.Contains(cb.Prompt, "\nHypothesis: Valence was helping\n") || cb.Target != "No" {
		t.Errorf("CB: %+v", cb)
	}
	wsc := load("wsc", "WSC/val.jsonl").Examples[0]
	if !strings.Contains(wsc.Prompt, `the pronoun "him" refer to "anyone"?`) || wsc.Target != "No" {
		t.Errorf("WSC: %+v", wsc)
	}
	wic := load("wic", "WiC/val.jsonl").Examples[0]
	if !strings.HasPrefix(wic.Prompt, "Sentence 1: An emerging professional class.\nSentence 2: Apologizing") ||
		!strings.Contains(wic.Prompt, `the word "class"`) || wic.Target != "No" {
		t.Errorf("WiC: %+v", wic)
	}
	boolq := load("boolq", "BoolQ/val.jsonl").Examples[0]
	if !strings.Contains(boolq.Prompt, "\nQuestion: Does ethanol take more energy make that produces?\nAnswer: ") {
		t.Errorf("BoolQ: %q", boolq.Prompt)
	}
	mrc := load("multirc", "MultiRC/val.jsonl").Examples
	if !strings.Contains(mrc[0].Prompt, "\nQuestion: Would the mass of a baseball affect how much force you have to use to pick it up?\nCandidate answer: No\n") ||
		mrc[0].Target != "No" || mrc[1].Target != "Yes" || mrc[0].ID != "0-0-0" || mrc[4].ID != "0-1-4" {
		t.Errorf("MultiRC: %+v %+v", mrc[0], mrc[4])
	}
}

func TestSuperGLUEReCoRD(t *testing.T) {
	path := shared.Path(t, "superglue/ReCoRD/train.jsonl")
	want := 0
	sgCountLines(t, path, func(m map[string]any) { want += len(m["qas"].([]any)) })
	task, err := LoadTask("ReCoRD", path)
	if err != nil {
		t.Fatal(err)
	}
	if task.Name != "record" || task.Kind != KindGenerate || len(task.Examples) != want {
		t.Fatalf("name %q kind %q, %d examples, want %d", task.Name, task.Kind, len(task.Examples), want)
	}
	for i, ex := range task.Examples {
		if !strings.HasSuffix(ex.Prompt, "\nAnswer: ") || strings.Contains(ex.Prompt, "@highlight") ||
			!strings.Contains(ex.Prompt, "@placeholder") {
			t.Fatalf("example %d: prompt %q", i, ex.Prompt)
		}
		if len(ex.Answers) == 0 || ex.Target != ex.Answers[0] {
			t.Fatalf("example %d: answers %q target %q", i, ex.Answers, ex.Target)
		}
		// Every answer of this file is one of the passage's entities.
		if ex.Label < 0 || ExactMatch(ex.Options[ex.Label], ex.Answers) != 1 {
			t.Fatalf("example %d: label %d options %q answers %q", i, ex.Label, ex.Options, ex.Answers)
		}
		seen := map[string]bool{}
		for _, o := range ex.Options {
			if seen[o] {
				t.Fatalf("example %d: option %q twice", i, o)
			}
			seen[o] = true
		}
	}
	ex := task.Examples[0]
	if ex.ID != "4756" || ex.Answers[0] != "Olimpija Ljubljana" || len(ex.Answers) != 1 ||
		!strings.Contains(ex.Prompt, "horror miss\n- Chelsea come from behind") {
		t.Errorf("first: id %q answers %q prompt %q", ex.ID, ex.Answers, ex.Prompt)
	}
	if task.Chance() != 0 {
		t.Errorf("Chance of a generation task %v", task.Chance())
	}
}

func TestSuperGLUEUnlabelledAndAltLabels(t *testing.T) {
	in := `{"premise":"p","hypothesis":"h","idx":7}
{"premise":"p","hypothesis":"h","label":1,"idx":8}
{"premise":"p","hypothesis":"h","label":"NEUTRAL","idx":9}
`
	task, err := ParseTask("CB", strings.NewReader(in), "cb.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	got := []int{task.Examples[0].Label, task.Examples[1].Label, task.Examples[2].Label}
	if got[0] != -1 || got[1] != 1 || got[2] != 2 || task.Examples[0].Target != "" || task.Examples[2].Target != "Maybe" {
		t.Errorf("labels %v, examples %+v", got, task.Examples)
	}
	// A ReCoRD entity span with multi-byte characters before it.
	rec := `{"passage":{"text":"Café Zoë met Anna.\n@highlight\nAnna left","entities":[{"start":5,"end":7},{"start":13,"end":16}]},"qas":[{"query":"@placeholder left","answers":[{"start":13,"end":16,"text":"Anna"}],"idx":3}]}`
	task, err = ParseTask("record", strings.NewReader(rec), "r.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	ex := task.Examples[0]
	if strings.Join(ex.Options, "|") != "Zoë|Anna" || ex.Label != 1 || ex.Target != "Anna" ||
		!strings.Contains(ex.Prompt, "Anna.\n- Anna left") {
		t.Errorf("%+v", ex)
	}
}

func TestSGQuestion(t *testing.T) {
	for in, want := range map[string]string{
		"is it true":   "Is it true?",
		" ébène noire": "Ébène noire?",
		"Why?":         "Why?",
		"":             "",
	} {
		if got := sgQuestion(in); got != want {
			t.Errorf("sgQuestion(%q) = %q, want %q", in, got, want)
		}
	}
}
