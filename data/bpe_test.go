package data

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/hf/tokenizer"
)

// bptPinnedHash pins the bytes of tokenizer.TrainBPE(SynthCorpus(1, 2000), 250).
const bptPinnedHash = "ff4fed77d1eb1a68"

func bptTrain(t *testing.T, corpus []string, merges int) (*tokenizer.Tokenizer, []byte, []byte) {
	t.Helper()
	tj, cj, err := tokenizer.TrainBPE(corpus, merges)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tokenizer.Parse(tj, cj)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return tk, tj, cj
}

func TestTrainBPESynthetic(t *testing.T) {
	corpus := SynthCorpus(1, 2000)
	tk, tj, cj := bptTrain(t, corpus, 250)

	if got := tk.VocabSize(); got != 3+256+250 {
		t.Errorf("VocabSize = %d, want %d", got, 3+256+250)
	}
	if tk.BOS() != 1 || tk.EOS() != 2 {
		t.Errorf("BOS, EOS = %d, %d, want 1, 2", tk.BOS(), tk.EOS())
	}
	if tk.TokenString(0) != "<unk>" || tk.TokenString(1) != "<s>" || tk.TokenString(2) != "</s>" {
		t.Errorf("specials = %q %q %q", tk.TokenString(0), tk.TokenString(1), tk.TokenString(2))
	}
	story := "Mia saw a red fox in the park. The fox ran to the hill."
	ids := tk.Encode(story)
	withBOS := tk.EncodeWithSpecial(story)
	if !slices.Equal(withBOS, append([]int{1}, ids...)) {
		t.Errorf("EncodeWithSpecial = %v, want BOS then %v", withBOS, ids)
	}
	if got := tk.Decode(withBOS); got != story {
		t.Errorf("Decode = %q", got)
	}
	for _, w := range []string{" the", " park", " saw", "Mia", " Mia", "The", " was", " cat", " cup"} {
		if got := tk.Encode(w); len(got) != 1 {
			t.Errorf("%q -> %d tokens %v", w, len(got), got)
		}
	}

	// Held-out stories (another seed): common words are single tokens.
	words, toks := 0, 0
	for _, s := range SynthCorpus(99, 200) {
		words += len(strings.Fields(s))
		toks += len(tk.Encode(s))
		if got := tk.Decode(tk.Encode(s)); got != s {
			t.Fatalf("round trip %q -> %q", s, got)
		}
	}
	if r := float64(toks) / float64(words); r >= 1.5 {
		t.Errorf("%.3f tokens per word, want < 1.5", r)
	} else {
		t.Logf("held-out synthetic stories: %.3f tokens per word (full stops count as tokens), vocab %d", r, tk.VocabSize())
	}

	// With 381 merges (vocabulary 640) every word of the corpus is one token,
	// every animal and object word included.
	tkAll, _, _ := bptTrain(t, corpus, 381)
	if tkAll.VocabSize() != 640 {
		t.Errorf("381 merges: VocabSize = %d, want 640", tkAll.VocabSize())
	}
	for _, w := range append(slices.Clone(synAnimals), synObjects...) {
		if got := tkAll.Encode(" " + w); len(got) != 1 {
			t.Errorf("381 merges: %q -> %d tokens", " "+w, len(got))
		}
	}

	// Deterministic output bytes, and the task's prompts encode losslessly.
	tj2, cj2, err := tokenizer.TrainBPE(SynthCorpus(1, 2000), 250)
	if err != nil || !bytes.Equal(tj, tj2) || !bytes.Equal(cj, cj2) {
		t.Fatal("TrainBPE output differs between runs")
	}
	if got := synHash([]string{string(tj), string(cj)}); got != bptPinnedHash {
		t.Errorf("TrainBPE(SynthCorpus(1, 2000), 250) hash = %s, want %s", got, bptPinnedHash)
	}
	var b bytes.Buffer
	if err := WriteSynthTaskJSONL(&b, SynthTask(4, 20)); err != nil {
		t.Fatal(err)
	}
	task, err := ParseTask("boolq", &b, "mem")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range task.Examples {
		for _, s := range []string{e.Prompt, e.Prompt + e.Target} {
			if got := tk.Decode(tk.Encode(s)); got != s {
				t.Errorf("round trip %q -> %q", s, got)
			}
		}
	}

	// tokenizer.Load finds the pair of files written side by side.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cj, 0o644); err != nil {
		t.Fatal(err)
	}
	lt, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lt.EncodeWithSpecial(story), withBOS) {
		t.Error("tokenizer.Load gives a different encoding")
	}
	// Without tokenizer_config.json the post-processor still adds BOS.
	tk2, err := tokenizer.Parse(tj, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tk2.EncodeWithSpecial(story), withBOS) || tk2.EOS() != 2 {
		t.Error("without tokenizer_config.json: BOS/EOS differ")
	}
}
