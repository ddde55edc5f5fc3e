package data

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func synHash(lines []string) string {
	h := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(h[:8])
}

// synWords splits a sentence into words, dropping the full stops.
func synWords(s string) []string { return strings.Fields(strings.ReplaceAll(s, ".", " ")) }

func TestSynthCorpusDeterministic(t *testing.T) {
	a, b := SynthCorpus(7, 500), SynthCorpus(7, 500)
	if !slices.Equal(a, b) {
		t.Fatal("SynthCorpus is not deterministic")
	}
	if !slices.Equal(SynthCorpus(7, 100), a[:100]) {
		t.Error("the first stories depend on n")
	}
	if slices.Equal(SynthCorpus(8, 500), a) {
		t.Error("seeds 7 and 8 give the same corpus")
	}
	// Pinned: a change here changes every demo run; update on purpose only.
	wantFirst := []string{
		"Zoe found a blue rope in the yard. It was heavy.",
		"The little blue owl slept in the park. The owl walked in the yard.",
		"Ella went to the river. She saw Sam there. She ate some bread.",
	}
	if got := SynthCorpus(1, 3); !slices.Equal(got, wantFirst) {
		t.Errorf("SynthCorpus(1, 3) =\n%q\nwant\n%q", got, wantFirst)
	}
	if got, want := synHash(SynthCorpus(1, 1000)), synPinnedCorpusHash; got != want {
		t.Errorf("SynthCorpus(1, 1000) hash = %s, want %s", got, want)
	}
	if len(SynthCorpus(1, 0)) != 0 || len(SynthCorpus(1, -3)) != 0 {
		t.Error("n <= 0 should give no stories")
	}
}

const (
	synPinnedCorpusHash = "c22a7eef4ddb16b2"
	synPinnedTaskHash   = "a7f48f917a6cbbb7"
)

func TestSynthCorpusContent(t *testing.T) {
	corpus := SynthCorpus(1, 2000)
	seen := map[string]bool{}
	for _, line := range corpus {
		if line == "" || strings.Contains(line, "\n") {
			t.Fatalf("bad story %q", line)
		}
		for _, bad := range []string{"?", "Answer", "Yes", "No", "Question", "Passage", ":"} {
			if strings.Contains(line, bad) {
				t.Fatalf("story %q contains %q", line, bad)
			}
		}
		if n := strings.Count(line, "."); n < 1 || n > 3 {
			t.Errorf("story %q has %d sentences", line, n)
		}
		for _, w := range synWords(line) {
			seen[w] = true
		}
	}
	for _, w := range append(slices.Clone(synAnimals), synObjects...) {
		if !seen[w] {
			t.Errorf("corpus never mentions %q", w)
		}
	}
	if len(seen) > 170 {
		t.Errorf("corpus has %d distinct words, want a small vocabulary", len(seen))
	}
	// Every word of the task passages is known from the corpus.
	for _, ex := range SynthTask(3, 1000) {
		for _, w := range synWords(ex.Passage) {
			if !seen[w] {
				t.Errorf("task word %q (in %q) is not in the corpus", w, ex.Passage)
			}
		}
	}
	// The class lists are disjoint and free of duplicates.
	all := append(slices.Clone(synAnimals), synObjects...)
	slices.Sort(all)
	if len(slices.Compact(all)) != len(synAnimals)+len(synObjects) {
		t.Error("animal and object lists overlap or repeat")
	}
}

func TestSynthTask(t *testing.T) {
	a, b := SynthTask(11, 400), SynthTask(11, 400)
	if !slices.Equal(a, b) {
		t.Fatal("SynthTask is not deterministic")
	}
	if got, want := synHash(synTaskLines(a)), synPinnedTaskHash; got != want {
		t.Errorf("SynthTask(11, 400) hash = %s, want %s", got, want)
	}
	isAnimal, isObject := map[string]bool{}, map[string]bool{}
	for _, w := range synAnimals {
		isAnimal[w] = true
	}
	for _, w := range synObjects {
		isObject[w] = true
	}
	trues, run, maxRun := 0, 0, 0
	for i, ex := range a {
		if ex.Idx != i {
			t.Errorf("example %d has Idx %d", i, ex.Idx)
		}
		if ex.Label {
			trues++
			run++
			maxRun = max(maxRun, run)
		} else {
			run = 0
		}
		words := synWords(ex.Passage)
		if len(words) > 11 {
			t.Errorf("passage %q has %d words", ex.Passage, len(words))
		}
		var things []string
		for _, w := range words {
			if isAnimal[w] || isObject[w] {
				things = append(things, w)
			}
		}
		if len(things) != 1 {
			t.Errorf("passage %q mentions %v, want exactly one thing", ex.Passage, things)
			continue
		}
		if ex.Label != isAnimal[things[0]] {
			t.Errorf("passage %q labelled %v", ex.Passage, ex.Label)
		}
		if !strings.Contains(ex.Question, "animal") || strings.Contains(ex.Question, things[0]) {
			t.Errorf("question %q", ex.Question)
		}
	}
	if trues != 200 {
		t.Errorf("%d of 400 labels true, want 200", trues)
	}
	if maxRun > 20 {
		t.Errorf("labels look unshuffled (a run of %d trues)", maxRun)
	}
	for _, n := range []int{0, 1, 2, 7} {
		ex := SynthTask(5, n)
		k := 0
		for _, e := range ex {
			if e.Label {
				k++
			}
		}
		if len(ex) != n || k != (n+1)/2 {
			t.Errorf("SynthTask(5, %d): %d examples, %d true", n, len(ex), k)
		}
	}
}

func synTaskLines(ex []SynthExample) []string {
	var b bytes.Buffer
	if err := WriteSynthTaskJSONL(&b, ex); err != nil {
		panic(err)
	}
	return strings.Split(b.String(), "\n")
}

func TestSynthTaskJSONL(t *testing.T) {
	ex := SynthTask(2, 50)
	var b bytes.Buffer
	if err := WriteSynthTaskJSONL(&b, ex); err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(b.String(), "\n", 2)[0]
	want := `{"question":"is the story about an animal","passage":"The small wolf walked in the garden.","label":true,"idx":0}`
	if first != want {
		t.Errorf("first line = %s\nwant          %s", first, want)
	}
	path := filepath.Join(t.TempDir(), "val.jsonl")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	task, err := LoadTask("boolq", path)
	if err != nil {
		t.Fatal(err)
	}
	if task.Kind != KindChoice || len(task.Examples) != len(ex) {
		t.Fatalf("task kind %q with %d examples", task.Kind, len(task.Examples))
	}
	for i, e := range task.Examples {
		if !strings.HasSuffix(e.Prompt, "\nAnswer: ") {
			t.Errorf("prompt %q does not end with the answer line", e.Prompt)
		}
		if !strings.Contains(e.Prompt, ex[i].Passage) || !strings.Contains(e.Prompt, "?\nAnswer: ") {
			t.Errorf("prompt %q", e.Prompt)
		}
		if !slices.Equal(e.Options, []string{"No", "Yes"}) {
			t.Errorf("options %q", e.Options)
		}
		wantLabel := 0
		if ex[i].Label {
			wantLabel = 1
		}
		if e.Label != wantLabel || e.Target != e.Options[wantLabel] {
			t.Errorf("example %d: label %d target %q, want %d", i, e.Label, e.Target, wantLabel)
		}
	}
	if task.Examples[0].Prompt != "Passage: The small wolf walked in the garden.\nQuestion: Is the story about an animal?\nAnswer: " {
		t.Errorf("prompt 0 = %q", task.Examples[0].Prompt)
	}
	// ParseTask on the same bytes agrees.
	t2, err := ParseTask("boolq", bytes.NewReader(b.Bytes()), "mem")
	if err != nil || len(t2.Examples) != len(ex) {
		t.Fatalf("ParseTask: %v", err)
	}
}
