package data

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseTask: any bytes, under any task name, give a task or an error,
// never a panic; a task that parses has prompts, and options with a label
// in range for multiple choice.
func FuzzParseTask(f *testing.F) {
	f.Add("boolq", []byte(`{"question":"is it","passage":"A cat.","label":true,"idx":0}`))
	f.Add("copa", []byte(`{"premise":"p","choice1":"a","choice2":"b","question":"cause","label":1}`))
	f.Add("multirc", []byte(`{"idx":0,"passage":{"text":"t","questions":[{"question":"q","answers":[{"text":"a","label":1}]}]}}`))
	f.Add("record", []byte(`{"passage":{"text":"Ann met Bob.","entities":[{"start":0,"end":2}]},"qas":[{"query":"@placeholder met Bob","answers":[{"text":"Ann"}]}]}`))
	f.Add("choice", []byte(`{"prompt":"p","options":["a","b"],"label":1}`))
	f.Add("jsonl", []byte(`{"prompt":"p","completion":"c"}`+"\n\n"))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		task, err := ParseTask(name, bytes.NewReader(b), "fuzz.jsonl")
		if err != nil {
			return
		}
		for _, ex := range task.Examples {
			if task.Kind == KindChoice && (ex.Label >= len(ex.Options) || ex.Label < -1) {
				t.Fatalf("label %d of %d options", ex.Label, len(ex.Options))
			}
		}
	})
}

// FuzzTokenizerRoundTrip: the byte-level tokenizer trained by TrainBPE
// encodes any string without panicking and decodes it back exactly (unless
// the text spells a special token).
func FuzzTokenizerRoundTrip(f *testing.F) {
	tj, tcj, err := TrainBPE(SynthCorpus(1, 200), 60)
	if err != nil {
		f.Fatal(err)
	}
	tok, err := ParseTokenizer(tj, tcj)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"", "Mia saw a red fox.", "  spaces\tand\nlines ", "émoji 🦊 ünïcode", "\xff\xfe bad utf8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("id %d outside the vocabulary %d", id, tok.VocabSize())
			}
		}
		if strings.Contains(s, "<s>") || strings.Contains(s, "</s>") || strings.Contains(s, "<unk>") {
			return
		}
		if got := tok.Decode(ids); got != s && utf8.ValidString(s) {
			t.Fatalf("round trip of %q gave %q", s, got)
		}
	})
}
