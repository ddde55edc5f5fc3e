package tokenizer_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/hf/tokenizer"
)

// FuzzTokenizerRoundTrip: the byte-level tokenizer trained by TrainBPE
// encodes any string without panicking and decodes it back exactly (unless
// the text spells a special token).
func FuzzTokenizerRoundTrip(f *testing.F) {
	tj, tcj, err := tokenizer.TrainBPE(data.SynthCorpus(1, 200), 60)
	if err != nil {
		f.Fatal(err)
	}
	tok, err := tokenizer.Parse(tj, tcj)
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
