package tokenizer

// A byte-level BPE trainer (GPT-2 style) that writes a Hugging Face
// tokenizer.json and tokenizer_config.json for Parse (and the
// tokenizers library) to load.
//
// Layout of the vocabulary:
//
//	0        <unk>  (special; byte-level text never needs it)
//	1        <s>    BOS, prepended by EncodeWithSpecial
//	2        </s>   EOS, not added
//	3..258   the 256 bytes, as GPT-2's bytes_to_unicode runes, in byte order
//	259..    the merges' results, in the order learned
//
// so the ids of <unk>, <s> and </s> are the Llama defaults (0, 1, 2) and the
// vocabulary size is 259 + the number of merges learned (fewer merges than
// asked only when the corpus runs out of pairs; one less for any merge whose
// result is already a token, which BPE rarely produces). On SynthCorpus,
// 253 merges give a vocabulary of 512.
//
// Training pre-tokenizes each corpus line exactly as the ByteLevel
// pre-tokenizer the file names does (the GPT-2 split, no prefix space, bytes
// to runes), counts the distinct words, and then repeatedly merges the most
// frequent adjacent pair of symbols, counted over the words weighted by
// their frequency. Ties are broken by the lexicographic (byte) order of the
// pair: the smaller left symbol, then the smaller right one. Nothing depends
// on map iteration order, so the output bytes are a function of the corpus
// and the merge count.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// The special tokens of a trained tokenizer, with their ids.
const (
	BPEUnkToken = "<unk>"
	BPEBOSToken = "<s>"
	BPEEOSToken = "</s>"
)

// specialTokens lists the special tokens in id order.
var specialTokens = []string{BPEUnkToken, BPEBOSToken, BPEEOSToken}

// TrainBPE learns up to merges byte-level BPE merges from corpus (each
// string is pre-tokenized on its own) and returns a Hugging Face
// tokenizer.json and tokenizer_config.json: <unk>=0, <s>=1 (BOS, added by
// the post-processor and add_bos_token), </s>=2 (EOS), then the 256 byte
// tokens and the merges (see the layout above). The pre-tokenizer and
// decoder are ByteLevel without prefix space, so decoding is lossless.
// Training stops early, with fewer merges, when no adjacent pair is left.
func TrainBPE(corpus []string, merges int) (tokenizerJSON, tokenizerConfigJSON []byte, err error) {
	if merges < 0 {
		return nil, nil, fmt.Errorf("TrainBPE: negative merge count %d", merges)
	}

	// Vocabulary: specials, then the 256 byte runes.
	var toks []string
	ids := map[string]int32{}
	add := func(s string) int32 {
		if id, ok := ids[s]; ok {
			return id
		}
		id := int32(len(toks))
		toks = append(toks, s)
		ids[s] = id
		return id
	}
	for _, s := range specialTokens {
		add(s)
	}
	for b := range 256 {
		add(string(byteToRune[b]))
	}

	// Distinct pre-tokenized words and their counts, in sorted order.
	counts := map[string]int{}
	for _, line := range corpus {
		for _, sp := range splitGPT2(line) {
			counts[byteLevelEncode(line[sp[0]:sp[1]])]++
		}
	}
	keys := make([]string, 0, len(counts))
	for w := range counts {
		keys = append(keys, w)
	}
	sort.Strings(keys)
	words := make([]wordCount, 0, len(keys))
	for _, w := range keys {
		syms := make([]int32, 0, len(w))
		for _, r := range w {
			syms = append(syms, ids[string(r)])
		}
		if len(syms) > 1 {
			words = append(words, wordCount{syms: syms, n: counts[w]})
		}
	}

	var learned [][2]int32
	for len(learned) < merges {
		best, ok := bestPair(words, toks)
		if !ok {
			break
		}
		id := add(toks[best[0]] + toks[best[1]])
		learned = append(learned, best)
		for i := range words {
			words[i].syms = applyMerge(words[i].syms, best, id)
		}
	}

	tj, err := encodeTokenizerJSON(toks, learned)
	if err != nil {
		return nil, nil, err
	}
	cfg := []byte(`{
  "add_bos_token": true,
  "add_eos_token": false,
  "bos_token": "<s>",
  "eos_token": "</s>",
  "unk_token": "<unk>",
  "pad_token": null,
  "clean_up_tokenization_spaces": false,
  "model_max_length": 1000000000000000019884624838656,
  "tokenizer_class": "PreTrainedTokenizerFast"
}
`)
	return tj, cfg, nil
}

// wordCount is a distinct pre-tokenized word as its current symbols, with its
// count in the corpus.
type wordCount struct {
	syms []int32
	n    int
}

// bestPair returns the most frequent adjacent pair, ties broken by the
// byte order of (left, right) token strings; false when no pair is left.
func bestPair(words []wordCount, toks []string) ([2]int32, bool) {
	counts := map[[2]int32]int{}
	for _, w := range words {
		for i := 0; i+1 < len(w.syms); i++ {
			counts[[2]int32{w.syms[i], w.syms[i+1]}] += w.n
		}
	}
	var best [2]int32
	bestN := 0
	for p, n := range counts {
		if n > bestN || n == bestN && pairLess(toks, p, best) {
			best, bestN = p, n
		}
	}
	return best, bestN > 0
}

func pairLess(toks []string, a, b [2]int32) bool {
	if la, lb := toks[a[0]], toks[b[0]]; la != lb {
		return la < lb
	}
	return toks[a[1]] < toks[b[1]]
}

// applyMerge replaces the non-overlapping occurrences of pair, left to right,
// by id (in place).
func applyMerge(syms []int32, pair [2]int32, id int32) []int32 {
	out := syms[:0]
	for i := 0; i < len(syms); i++ {
		if i+1 < len(syms) && syms[i] == pair[0] && syms[i+1] == pair[1] {
			out = append(out, id)
			i++
			continue
		}
		out = append(out, syms[i])
	}
	return out
}

// quote is a JSON string without HTML escaping ("<s>" stays readable).
func quote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil { // cannot fail for a string
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// encodeTokenizerJSON writes tokenizer.json with the vocab in id order and the
// merges as "left right" strings (byte-level tokens hold no spaces).
func encodeTokenizerJSON(toks []string, merges [][2]int32) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [")
	for i, s := range specialTokens {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n    {\"id\": %d, \"content\": %s, \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": false, \"special\": true}", i, quote(s))
	}
	b.WriteString("\n  ],\n  \"normalizer\": null,\n")
	b.WriteString(`  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},` + "\n")
	bos := quote(BPEBOSToken)
	fmt.Fprintf(&b, `  "post_processor": {"type": "TemplateProcessing", `+
		`"single": [{"SpecialToken": {"id": %[1]s, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}], `+
		`"pair": [{"SpecialToken": {"id": %[1]s, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": %[1]s, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}], `+
		`"special_tokens": {%[1]s: {"id": %[1]s, "ids": [%[2]d], "tokens": [%[1]s]}}},`+"\n", bos, 1)
	b.WriteString(`  "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},` + "\n")
	b.WriteString(`  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,` + "\n")
	b.WriteString("    \"vocab\": {")
	for id, s := range toks {
		if id > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n      %s: %d", quote(s), id)
	}
	b.WriteString("\n    },\n    \"merges\": [")
	for i, m := range merges {
		if i > 0 {
			b.WriteByte(',')
		}
		l, r := toks[m[0]], toks[m[1]]
		if strings.Contains(l, " ") || strings.Contains(r, " ") {
			return nil, errors.New("TrainBPE: a merged token contains a space")
		}
		fmt.Fprintf(&b, "\n      %s", quote(l+" "+r))
	}
	b.WriteString("\n    ]\n  }\n}\n")
	if !json.Valid(b.Bytes()) {
		return nil, errors.New("TrainBPE: produced invalid JSON")
	}
	return b.Bytes(), nil
}
