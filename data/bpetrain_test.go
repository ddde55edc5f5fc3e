package data

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// bptPinnedHash pins the bytes of TrainBPE(SynthCorpus(1, 2000), 250).
const bptPinnedHash = "ff4fed77d1eb1a68"

func bptTrain(t *testing.T, corpus []string, merges int) (*Tokenizer, []byte, []byte) {
	t.Helper()
	tj, cj, err := TrainBPE(corpus, merges)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := ParseTokenizer(tj, cj)
	if err != nil {
		t.Fatalf("ParseTokenizer: %v", err)
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
	tj2, cj2, err := TrainBPE(SynthCorpus(1, 2000), 250)
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

	// LoadTokenizer finds the pair of files written side by side.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), cj, 0o644); err != nil {
		t.Fatal(err)
	}
	lt, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lt.EncodeWithSpecial(story), withBOS) {
		t.Error("LoadTokenizer gives a different encoding")
	}
	// Without tokenizer_config.json the post-processor still adds BOS.
	tk2, err := ParseTokenizer(tj, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tk2.EncodeWithSpecial(story), withBOS) || tk2.EOS() != 2 {
		t.Error("without tokenizer_config.json: BOS/EOS differ")
	}
}

func TestTrainBPEJSONShape(t *testing.T) {
	tj, cj, err := TrainBPE([]string{"low lower lowest", "new newer newest <s>"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		Model struct {
			Type   string         `json:"type"`
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(tj, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.AddedTokens) != 3 || f.AddedTokens[1].Content != "<s>" || f.AddedTokens[1].ID != 1 || !f.AddedTokens[1].Special {
		t.Errorf("added_tokens = %+v", f.AddedTokens)
	}
	if f.Model.Type != "BPE" || len(f.Model.Merges) != 10 || len(f.Model.Vocab) != 269 {
		t.Errorf("model: type %q, %d merges, %d vocab", f.Model.Type, len(f.Model.Merges), len(f.Model.Vocab))
	}
	// The first merges: the most frequent pair ("w e", 4 times), then "l o"
	// and "n e" (3 each, "l" < "n"), then the pairs seen twice in byte
	// order ("lo we" < "ne we" < "s t" < "Ġ lowe" < "Ġ newe", as "Ġ" is
	// 0xC4 0xA0 in UTF-8).
	if want := []string{"w e", "l o", "n e", "lo we", "ne we", "s t", "Ġ lowe", "Ġ newe"}; !slices.Equal(f.Model.Merges[:8], want) {
		t.Errorf("first merges %q, want %q", f.Model.Merges[:8], want)
	}
	var c map[string]any
	if err := json.Unmarshal(cj, &c); err != nil || c["add_bos_token"] != true || c["bos_token"] != "<s>" || c["eos_token"] != "</s>" {
		t.Errorf("tokenizer_config.json = %s (%v)", cj, err)
	}

	// Asking for more merges than the corpus has pairs stops early.
	tj, _, err = TrainBPE([]string{"ab ab"}, 50)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := ParseTokenizer(tj, nil)
	if err != nil {
		t.Fatal(err)
	}
	// "ab" and "Ġab" take 2 merges ("a b", "Ġ ab"), then no pair is left.
	if tk.VocabSize() != 259+2 {
		t.Errorf("VocabSize = %d, want 261", tk.VocabSize())
	}
	if got := tk.Encode("ab ab"); len(got) != 2 {
		t.Errorf("Encode(ab ab) = %v", got)
	}
	if _, _, err := TrainBPE(nil, -1); err == nil {
		t.Error("negative merges accepted")
	}
	// An empty corpus gives a bytes-only tokenizer.
	tj, _, err = TrainBPE(nil, 5)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err := ParseTokenizer(tj, nil); err != nil || tk.VocabSize() != 259 {
		t.Errorf("empty corpus: %v", err)
	}
}

// Byte-level BPE is lossless: any string without the special tokens' text
// round-trips, including invalid UTF-8, control characters and odd spacing.
func TestTrainBPERoundTrip(t *testing.T) {
	tk, _, _ := bptTrain(t, SynthCorpus(1, 500), 120)
	alphabet := []string{"a", "e", "fox", " ", "  ", "\n", "\t", "\r\n", ".", "'s", "'", "é", "日本", "🦊", "\x00", "\xff", "\xc3", "1", "42", "<", ">", "/", "s", "Mia", " the"}
	r := rand.New(rand.NewPCG(1, 2))
	cases := []string{"", " ", "  leading and trailing  ", "a\n\nb", "\xe6\x97", "ÿ\u0100Ġ"}
	for range 500 {
		var b strings.Builder
		for range r.IntN(20) {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		cases = append(cases, b.String())
	}
	for _, s := range cases {
		if strings.Contains(s, "<s>") || strings.Contains(s, "</s>") || strings.Contains(s, "<unk>") {
			continue
		}
		ids := tk.Encode(s)
		if got := tk.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
		for _, id := range ids {
			if id < 3 || id >= tk.VocabSize() {
				t.Fatalf("%q: id %d out of the trained range", s, id)
			}
		}
	}
	// The special tokens' text is matched as one token and skipped by Decode.
	if got := tk.Encode("<s>"); !slices.Equal(got, []int{1}) {
		t.Errorf("Encode(<s>) = %v", got)
	}
}
