package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lomo-dev/lomo/internal/shared"
)

type vectorCases struct {
	AddSpecial bool `json:"add_special_tokens"`
	Cases      []struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	} `json:"cases"`
}

func readTokVectors(t *testing.T, path string) vectorCases {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v vectorCases
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(v.Cases) == 0 {
		t.Fatalf("%s: no cases", path)
	}
	return v
}

// Loading the big tokenizers once keeps the file fast.
var (
	cacheMu          sync.Mutex
	loadedTokenizers = map[string]*Tokenizer{}
)

func loadTok(t *testing.T, rel string) (*Tokenizer, string) {
	t.Helper()
	dir := shared.Path(t, rel)
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if tk, ok := loadedTokenizers[dir]; ok {
		return tk, dir
	}
	tk, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	loadedTokenizers[dir] = tk
	return tk, dir
}

func checkVectors(t *testing.T, tk *Tokenizer, v vectorCases, encode func(string) []int) {
	t.Helper()
	fails := 0
	for i, c := range v.Cases {
		got := encode(c.Text)
		want := c.IDs
		if want == nil {
			want = []int{}
		}
		if got == nil {
			got = []int{}
		}
		if !slices.Equal(got, want) {
			fails++
			if fails == 1 {
				t.Errorf("case %d: text %q\nwant %v\ngot  %v", i, c.Text, want, got)
			}
		}
	}
	if fails > 0 {
		t.Errorf("%d of %d vectors differ (first shown above)", fails, len(v.Cases))
	}
}

func checkRoundTrip(t *testing.T, tk *Tokenizer, v vectorCases) {
	t.Helper()
	for i, c := range v.Cases {
		if got := tk.Decode(tk.Encode(c.Text)); got != c.Text {
			t.Errorf("case %d: Decode(Encode(%q)) = %q", i, c.Text, got)
			return
		}
		if got := tk.Decode(c.IDs); got != c.Text {
			t.Errorf("case %d: Decode(%v) = %q, want %q", i, c.IDs, got, c.Text)
			return
		}
	}
}

func TestTokenizerLlama2(t *testing.T) {
	tk, dir := loadTok(t, "tokenizers/llama2")
	if tk.VocabSize() != 32000 {
		t.Errorf("VocabSize = %d, want 32000", tk.VocabSize())
	}
	if tk.BOS() != 1 || tk.EOS() != 2 {
		t.Errorf("BOS, EOS = %d, %d, want 1, 2", tk.BOS(), tk.EOS())
	}
	if s := tk.TokenString(15043); s != "▁Hello" {
		t.Errorf("TokenString(15043) = %q", s)
	}
	if s := tk.TokenString(13); s != "<0x0A>" {
		t.Errorf("TokenString(13) = %q", s)
	}
	if s := tk.TokenString(-1) + tk.TokenString(32000); s != "" {
		t.Errorf("TokenString out of range = %q", s)
	}

	v := readTokVectors(t, filepath.Join(dir, "test_vectors_llamacpp.json"))
	if v.AddSpecial {
		t.Fatal("llama.cpp vectors should be without BOS")
	}
	if len(v.Cases) != 46 {
		t.Errorf("%d vectors, want 46", len(v.Cases))
	}
	t.Run("vectors", func(t *testing.T) { checkVectors(t, tk, v, tk.Encode) })
	t.Run("roundtrip", func(t *testing.T) { checkRoundTrip(t, tk, v) })

	vb := readTokVectors(t, filepath.Join(dir, "test_vectors_llama2c.json"))
	if !vb.AddSpecial || len(vb.Cases) != 5 {
		t.Errorf("llama2.c vectors: add_special_tokens %v, %d cases, want true, 5", vb.AddSpecial, len(vb.Cases))
	}
	t.Run("with BOS", func(t *testing.T) { checkVectors(t, tk, vb, tk.EncodeWithSpecial) })
	t.Run("decode skips BOS", func(t *testing.T) {
		for _, c := range vb.Cases {
			if got := tk.Decode(c.IDs); got != c.Text {
				t.Errorf("Decode(%v) = %q, want %q", c.IDs, got, c.Text)
			}
		}
	})
	t.Run("special tokens in text", func(t *testing.T) {
		got := tk.Encode("<s>Hello</s>")
		want := []int{1, 15043, 2}
		if !slices.Equal(got, want) {
			t.Errorf("Encode(<s>Hello</s>) = %v, want %v", got, want)
		}
		if s := tk.Decode(got); s != "Hello" {
			t.Errorf("Decode = %q, want Hello", s)
		}
	})
	t.Run("partial utf8", func(t *testing.T) {
		ids := tk.Encode("🦙")
		var b strings.Builder
		for _, id := range ids {
			b.WriteString(tk.Decode([]int{id}))
		}
		if got := strings.TrimPrefix(b.String(), " "); got != "🦙" {
			t.Errorf("piecewise decode of %v = %q", ids, got)
		}
	})
}

func TestTokenizerGPT2(t *testing.T) {
	tk, dir := loadTok(t, "tokenizers/gpt2")
	if tk.VocabSize() != 50257 {
		t.Errorf("VocabSize = %d, want 50257", tk.VocabSize())
	}
	if tk.BOS() != 50256 || tk.EOS() != 50256 {
		t.Errorf("BOS, EOS = %d, %d, want 50256, 50256", tk.BOS(), tk.EOS())
	}
	if s := tk.TokenString(18435); s != "ĠHello" {
		t.Errorf("TokenString(18435) = %q", s)
	}
	v := readTokVectors(t, filepath.Join(dir, "test_vectors_llamacpp.json"))
	if len(v.Cases) != 46 {
		t.Errorf("%d vectors, want 46", len(v.Cases))
	}
	t.Run("vectors", func(t *testing.T) { checkVectors(t, tk, v, tk.Encode) })
	t.Run("no BOS added", func(t *testing.T) { checkVectors(t, tk, v, tk.EncodeWithSpecial) })
	t.Run("roundtrip", func(t *testing.T) { checkRoundTrip(t, tk, v) })
	t.Run("special tokens in text", func(t *testing.T) {
		// <|endoftext|> is single_word, lstrip and rstrip in this file.
		got := tk.Encode("Hello world <|endoftext|> Hello")
		want := []int{15496, 995, 50256, 15496}
		if !slices.Equal(got, want) {
			t.Errorf("Encode = %v, want %v", got, want)
		}
		if s := tk.Decode(got); s != "Hello worldHello" {
			t.Errorf("Decode = %q", s)
		}
	})
	t.Run("generic regex split agrees", func(t *testing.T) {
		generic, err := compileSplitRegex(GPT2SplitPattern)
		if err != nil {
			t.Fatal(err)
		}
		texts := []string{"a  b\t\n  c", "  ", " x ", "\u3000\u00a0y z", "it's 'S 'll", ""}
		for _, c := range v.Cases {
			texts = append(texts, c.Text)
		}
		for _, s := range texts {
			if g, h := generic(s), splitGPT2(s); !slices.Equal(g, h) {
				t.Fatalf("split of %q: generic %v, hand %v", s, g, h)
			}
		}
	})
}

func TestTokenizerStories260K(t *testing.T) {
	tk, dir := loadTok(t, "models/stories260K")
	if tk.VocabSize() != 512 {
		t.Errorf("VocabSize = %d, want 512", tk.VocabSize())
	}
	b, err := os.ReadFile(filepath.Join(dir, "reference_outputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Text     string `json:"text"`
		InputIDs []int  `json:"input_ids"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if got := tk.EncodeWithSpecial(ref.Text); !slices.Equal(got, ref.InputIDs) {
		t.Errorf("EncodeWithSpecial(%q)\nwant %v\ngot  %v", ref.Text, ref.InputIDs, got)
	}
	if got := tk.Decode(ref.InputIDs); got != ref.Text {
		t.Errorf("Decode = %q, want %q", got, ref.Text)
	}
	// Byte fallback for characters outside the 512-token vocab.
	for _, s := range []string{"Zoë ate 🍰!", "\ttab\nnew"} {
		ids := tk.Encode(s)
		if got := tk.Decode(ids); got != s {
			t.Errorf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
	}
}

// tinyByteLevel builds a small tokenizer.json in the GPT-2 byte-level style.
func tinyByteLevel(merges string, pre string) []byte {
	vocab := map[string]int{}
	for b := range 256 {
		vocab[string(byteToRune[b])] = len(vocab)
	}
	for _, m := range []string{"Ġt", "he", "Ġthe", "Ġa", "ab"} {
		vocab[m] = len(vocab)
	}
	vb, _ := json.Marshal(vocab)
	return []byte(`{"added_tokens":[{"id":261,"content":"<|eot|>","special":true}],
	"pre_tokenizer":` + pre + `,
	"decoder":{"type":"ByteLevel"},
	"model":{"type":"BPE","vocab":` + string(vb) + `,"merges":` + merges + `}}`)
}

func TestTokenizerSynthetic(t *testing.T) {
	pre := `{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}`
	for _, merges := range []string{`["Ġ t","h e","Ġt he","Ġ a","a b"]`, `[["Ġ","t"],["h","e"],["Ġt","he"],["Ġ","a"],["a","b"]]`} {
		tk, err := Parse(tinyByteLevel(merges, pre), nil)
		if err != nil {
			t.Fatal(err)
		}
		ids := tk.Encode("ab the<|eot|> ab")
		// " ab": "Ġa" has rank 3 and "a b" rank 4, so " ab" -> "Ġa" "b".
		want := []int{260, 258, 261, 259, tk.vocab["b"]}
		if !slices.Equal(ids, want) {
			t.Errorf("merges %s: Encode = %v, want %v", merges, ids, want)
		}
		if s := tk.Decode(ids); s != "ab the ab" {
			t.Errorf("Decode = %q", s)
		}
		if tk.BOS() != -1 || tk.EOS() != -1 {
			t.Errorf("BOS, EOS = %d, %d, want -1, -1", tk.BOS(), tk.EOS())
		}
		if got := tk.EncodeWithSpecial("ab"); !slices.Equal(got, []int{260}) {
			t.Errorf("EncodeWithSpecial = %v", got)
		}
	}

	// A Llama-3 style Split + ByteLevel(use_regex=false) goes through the
	// generic regex path.
	llama3 := `{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]}`
	tk, err := Parse(tinyByteLevel(`[]`, llama3), nil)
	if err != nil {
		t.Fatal(err)
	}
	split, err := splitFunc(`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`)
	if err != nil {
		t.Fatal(err)
	}
	s := "I'M 12345 ok!!\n\n  x"
	var pieces []string
	for _, sp := range split(s) {
		pieces = append(pieces, s[sp[0]:sp[1]])
	}
	wantPieces := []string{"I", "'M", " ", "123", "45", " ok", "!!\n\n", " ", " x"}
	if !slices.Equal(pieces, wantPieces) {
		t.Errorf("llama-3 split = %q, want %q", pieces, wantPieces)
	}
	if got := tk.Decode(tk.Encode(s)); got != s {
		t.Errorf("llama-3 style round trip = %q", got)
	}
}

func TestTokenizerErrors(t *testing.T) {
	okVocab := `{"a":0,"b":1,"ab":2}`
	cases := []struct {
		name, json, want string
	}{
		{"truncated", `{"model": {"type": "BPE", "vocab": {`, "malformed JSON"},
		{"no model", `{"added_tokens": []}`, `no "model"`},
		{"unigram", `{"model": {"type": "Unigram", "vocab": []}}`, `unsupported model type "Unigram"`},
		{"wordpiece", `{"model": {"type": "WordPiece", "vocab": {}}}`, `unsupported model type "WordPiece"`},
		{"no vocab", `{"model": {"type": "BPE", "merges": []}}`, `no "vocab"`},
		{"bad vocab", `{"model": {"type": "BPE", "vocab": [1,2], "merges": []}}`, "model.vocab"},
		{"bad merge", `{"model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": ["a b c"]}}`, `merges[0]`},
		{"merge not in vocab", `{"model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": ["a c"]}}`, `"c" is not in the vocab`},
		{"merges type", `{"model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": 3}}`, "model.merges"},
		{"normalizer", `{"normalizer": {"type": "NFKC"}, "model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": []}}`, "NFKC"},
		{"pre_tokenizer", `{"pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": []}}`, "BertPreTokenizer"},
		{"decoder", `{"decoder": {"type": "WordPiece"}, "model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": []}}`, `decoder type "WordPiece"`},
		{"lookahead", `{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a(?=b)"}, "behavior": "Isolated"}, "model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": []}}`, "lookaround"},
		{"unk", `{"model": {"type": "BPE", "unk_token": "<unk>", "vocab": ` + okVocab + `, "merges": []}}`, `unk_token "<unk>"`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.json), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	good := `{"model": {"type": "BPE", "vocab": ` + okVocab + `, "merges": ["a b"]}}`
	if _, err := Parse([]byte(good), []byte(`{"bos_token": `)); err == nil || !strings.Contains(err.Error(), "tokenizer_config.json") {
		t.Errorf("bad config: err = %v", err)
	}
	if _, err := Parse([]byte(good), []byte(`{"bos_token": "<s>"}`)); err == nil || !strings.Contains(err.Error(), `bos_token "<s>"`) {
		t.Errorf("config bos not in vocab: err = %v", err)
	}
	tk, err := Parse([]byte(good), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.Encode("abab"); !slices.Equal(got, []int{2, 2}) {
		t.Errorf("Encode(abab) = %v", got)
	}

	dir := t.TempDir()
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "tokenizer.json") {
		t.Errorf("missing file: err = %v", err)
	}
	p := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(p, []byte(`{"model": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("malformed file: err = %v", err)
	}
}

func TestTokenizerConcurrent(t *testing.T) {
	tk, dir := loadTok(t, "tokenizers/gpt2")
	v := readTokVectors(t, filepath.Join(dir, "test_vectors_llamacpp.json"))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for _, c := range v.Cases {
				if got := tk.Encode(c.Text); !slices.Equal(got, c.IDs) && len(c.IDs) > 0 {
					t.Errorf("concurrent Encode(%q) differs", c.Text)
					return
				}
			}
		})
	}
	wg.Wait()
}

// A Metaspace pre-tokenizer and decoder (the newer export of Llama-style
// tokenizers) must tokenize like the Prepend+Replace normalizer.
func TestTokenizerMetaspace(t *testing.T) {
	dir := shared.Path(t, "models/stories260K")
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Not text that starts with a space: there the tokenizers library's
	// Metaspace adds no "▁" (the text already starts with one) while the
	// Prepend normalizer does.
	texts := []string{"Once upon a time, there was a little girl named Lily.", "two  spaces ", "Zoë\tsaid hi", "x<s>y"}
	for _, split := range []bool{false, true} {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		m["normalizer"] = nil
		m["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": split}
		m["decoder"] = map[string]any{"type": "Sequence", "decoders": []any{
			map[string]any{"type": "ByteFallback"},
			map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": split},
		}}
		b, _ := json.Marshal(m)
		tk, err := Parse(b, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range texts {
			want, got := ref.Encode(s), tk.Encode(s)
			if s == "x<s>y" {
				// "first": no "▁" before the segment after a special token.
				want = append(ref.Encode("x"), 1, ref.vocab["y"])
				if ref.vocab["y"] == 0 {
					t.Fatal("no y in vocab")
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("split=%v: Encode(%q) = %v, want %v", split, s, got, want)
			}
			if s != "x<s>y" {
				if d := tk.Decode(got); d != s {
					t.Errorf("split=%v: Decode = %q, want %q", split, d, s)
				}
			}
		}
	}
}
