package tokenizer_test

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/hf/tokenizer"
)

func train(t *testing.T, corpus []string, merges int) (*tokenizer.Tokenizer, []byte, []byte) {
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

func TestTrainBPEJSONShape(t *testing.T) {
	tj, cj, err := tokenizer.TrainBPE([]string{"low lower lowest", "new newer newest <s>"}, 10)
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
	tj, _, err = tokenizer.TrainBPE([]string{"ab ab"}, 50)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := tokenizer.Parse(tj, nil)
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
	if _, _, err := tokenizer.TrainBPE(nil, -1); err == nil {
		t.Error("negative merges accepted")
	}
	// An empty corpus gives a bytes-only tokenizer.
	tj, _, err = tokenizer.TrainBPE(nil, 5)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err := tokenizer.Parse(tj, nil); err != nil || tk.VocabSize() != 259 {
		t.Errorf("empty corpus: %v", err)
	}
}

// Byte-level BPE is lossless: any string without the special tokens' text
// round-trips, including invalid UTF-8, control characters and odd spacing.
func TestTrainBPERoundTrip(t *testing.T) {
	tk, _, _ := train(t, data.SynthCorpus(1, 500), 120)
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
