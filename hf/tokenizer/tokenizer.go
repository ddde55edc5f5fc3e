package tokenizer

// A Hugging Face tokenizer.json reader for BPE models, covering the two
// flavours in common use:
//
//   - SentencePiece-style (Llama-2, TinyStories): a normalizer that prepends
//     "▁" and replaces spaces by "▁" (or a Metaspace pre-tokenizer), BPE with
//     byte_fallback, and a decoder that undoes both.
//   - Byte-level (GPT-2, Llama-3): a ByteLevel pre-tokenizer (optionally after
//     a regex Split) that maps bytes to printable runes before BPE, and a
//     ByteLevel decoder that maps them back.
//
// The pipeline follows the tokenizers library: split out added tokens, then
// per text segment normalize, pre-tokenize into words, and run BPE on each
// word with merges applied lowest rank first.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Tokenizer is a BPE tokenizer loaded from a Hugging Face tokenizer.json.
// It is safe for concurrent use.
type Tokenizer struct {
	vocab  map[string]int
	tokens []string // id -> token string ("" for holes)

	merges       map[uint64]bpeMerge // (left id, right id) -> rank and result
	unk          int                 // -1 if none
	byteFallback bool
	fuseUnk      bool
	ignoreMerges bool
	byteTokens   [256]int // id of "<0xNN>", -1 if absent

	normalizers []func(string) string
	pre         []preTokenizer
	decoders    []func([]string) []string

	added        []addedToken
	addedByFirst map[byte][]int // first byte of content -> indices in added, longest first
	skip         map[int]bool   // ids dropped by Decode

	bos, eos, pad  int
	addBOS, addEOS bool

	mu    sync.RWMutex
	cache map[string][]int
}

type bpeMerge struct {
	rank int32
	id   int32
}

type addedToken struct {
	id                               int
	content                          string
	special, lstrip, rstrip, oneWord bool
}

// preTokenizer splits the pieces of one text segment further; first reports
// whether the segment starts at the beginning of the input.
type preTokenizer func(pieces []string, first bool) []string

const (
	cacheMaxWord    = 128     // longest word (bytes) kept in the cache
	cacheMaxEntries = 1 << 16 // cache is emptied when it grows past this
)

// Load reads tokenizer.json from dir (or the file path itself); if
// tokenizer_config.json sits beside it, honour add_bos_token / add_eos_token
// and bos/eos token names.
func Load(path string) (*Tokenizer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	file := path
	if st.IsDir() {
		file = filepath.Join(path, "tokenizer.json")
	}
	tj, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var cj []byte
	cfg := filepath.Join(filepath.Dir(file), "tokenizer_config.json")
	if b, err := os.ReadFile(cfg); err == nil {
		cj = b
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := Parse(tj, cj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return t, nil
}

// ---------------------------------------------------------------------------
// JSON layout

type tokenizerFile struct {
	AddedTokens []struct {
		ID         *int   `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		Lstrip     bool   `json:"lstrip"`
		Rstrip     bool   `json:"rstrip"`
		Special    bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         *struct {
		Type                    string          `json:"type"`
		Vocab                   json.RawMessage `json:"vocab"`
		Merges                  json.RawMessage `json:"merges"`
		UnkToken                *string         `json:"unk_token"`
		ByteFallback            bool            `json:"byte_fallback"`
		FuseUnk                 bool            `json:"fuse_unk"`
		IgnoreMerges            bool            `json:"ignore_merges"`
		ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	} `json:"model"`
}

type tokenizerConfig struct {
	AddBOS   *bool           `json:"add_bos_token"`
	AddEOS   *bool           `json:"add_eos_token"`
	BOSToken json.RawMessage `json:"bos_token"`
	EOSToken json.RawMessage `json:"eos_token"`
	PadToken json.RawMessage `json:"pad_token"`
}

// component is the common shape of normalizers, pre-tokenizers, decoders and
// post-processors: a "type" tag plus type-specific fields.
type component struct {
	Type string `json:"type"`

	// Sequence
	Normalizers    []json.RawMessage `json:"normalizers"`
	PreTokenizers  []json.RawMessage `json:"pretokenizers"`
	Decoders       []json.RawMessage `json:"decoders"`
	Processors     []json.RawMessage `json:"processors"`
	Prepend        *string           `json:"prepend"`
	Pattern        *patternSpec      `json:"pattern"`
	Content        *string           `json:"content"`
	Start          int               `json:"start"`
	Stop           int               `json:"stop"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Replacement    *string           `json:"replacement"`
	PrependScheme  *string           `json:"prepend_scheme"`
	Split          *bool             `json:"split"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	IndividualDigs bool              `json:"individual_digits"`
	Left           *bool             `json:"left"`
	Right          *bool             `json:"right"`

	// TemplateProcessing
	Single        []map[string]struct{ ID string } `json:"single"`
	SpecialTokens map[string]struct{ IDs []int }   `json:"special_tokens"`
}

type patternSpec struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func isNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// Parse builds a Tokenizer from the bytes of tokenizer.json and,
// optionally, tokenizer_config.json (nil when absent).
func Parse(tokenizerJSON []byte, tokenizerConfigJSON []byte) (*Tokenizer, error) {
	var f tokenizerFile
	if err := json.Unmarshal(tokenizerJSON, &f); err != nil {
		return nil, fmt.Errorf("tokenizer.json: malformed JSON: %w", err)
	}
	if f.Model == nil {
		return nil, errors.New(`tokenizer.json: no "model" section`)
	}
	m := f.Model
	if m.Type == "" && len(m.Merges) > 0 {
		m.Type = "BPE" // the tokenizers library accepts an untagged BPE model
	}
	if m.Type != "BPE" {
		return nil, fmt.Errorf("tokenizer.json: unsupported model type %q (only BPE is supported)", m.Type)
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" {
		return nil, fmt.Errorf("tokenizer.json: BPE continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	}
	if m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return nil, fmt.Errorf("tokenizer.json: BPE end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	}

	t := &Tokenizer{
		unk: -1, bos: -1, eos: -1, pad: -1,
		byteFallback: m.ByteFallback,
		fuseUnk:      m.FuseUnk,
		ignoreMerges: m.IgnoreMerges,
		skip:         map[int]bool{},
		cache:        map[string][]int{},
	}

	if isNull(m.Vocab) {
		return nil, errors.New(`tokenizer.json: model has no "vocab"`)
	}
	if err := json.Unmarshal(m.Vocab, &t.vocab); err != nil {
		return nil, fmt.Errorf("tokenizer.json: model.vocab is not a map of token to id: %w", err)
	}
	maxID := -1
	for tok, id := range t.vocab {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer.json: vocab token %q has negative id %d", tok, id)
		}
		maxID = max(maxID, id)
	}
	for i, a := range f.AddedTokens {
		if a.ID == nil || *a.ID < 0 {
			return nil, fmt.Errorf("tokenizer.json: added_tokens[%d] (%q) has no valid id", i, a.Content)
		}
		maxID = max(maxID, *a.ID)
	}
	t.tokens = make([]string, maxID+1)
	for tok, id := range t.vocab {
		t.tokens[id] = tok
	}
	for _, a := range f.AddedTokens {
		id := *a.ID
		t.tokens[id] = a.Content
		if _, ok := t.vocab[a.Content]; !ok {
			t.vocab[a.Content] = id
		}
		if a.Content == "" {
			continue
		}
		t.added = append(t.added, addedToken{id: id, content: a.Content, special: a.Special,
			lstrip: a.Lstrip, rstrip: a.Rstrip, oneWord: a.SingleWord})
		if a.Special {
			t.skip[id] = true
		}
	}
	sort.SliceStable(t.added, func(i, j int) bool { return len(t.added[i].content) > len(t.added[j].content) })
	t.addedByFirst = map[byte][]int{}
	for i, a := range t.added {
		t.addedByFirst[a.content[0]] = append(t.addedByFirst[a.content[0]], i)
	}

	if m.UnkToken != nil && *m.UnkToken != "" {
		id, ok := t.vocab[*m.UnkToken]
		if !ok {
			return nil, fmt.Errorf("tokenizer.json: unk_token %q is not in the vocab", *m.UnkToken)
		}
		t.unk = id
	}
	for b := range 256 {
		t.byteTokens[b] = -1
		if id, ok := t.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			t.byteTokens[b] = id
		}
	}

	if err := t.parseMerges(m.Merges); err != nil {
		return nil, err
	}

	var err error
	if t.normalizers, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: normalizer: %w", err)
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: pre_tokenizer: %w", err)
	}
	if t.decoders, err = parseDecoder(f.Decoder); err != nil {
		return nil, fmt.Errorf("tokenizer.json: decoder: %w", err)
	}
	if err := t.setSpecial(f.PostProcessor, tokenizerConfigJSON); err != nil {
		return nil, err
	}
	return t, nil
}

// configName reads a token given either as a string or as {"content": ...}.
func configName(raw json.RawMessage) (string, bool) {
	if isNull(raw) {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, s != ""
	}
	var o struct{ Content string }
	if json.Unmarshal(raw, &o) == nil {
		return o.Content, o.Content != ""
	}
	return "", false
}

// setSpecial decides BOS/EOS/pad ids and whether EncodeWithSpecial adds
// them: tokenizer_config.json wins, then the post-processor template, then
// conventional names.
func (t *Tokenizer) setSpecial(post json.RawMessage, configJSON []byte) error {
	var prefix, suffix []int
	if err := templateSpecials(post, &prefix, &suffix); err != nil {
		return fmt.Errorf("tokenizer.json: post_processor: %w", err)
	}
	if len(prefix) > 0 {
		t.bos, t.addBOS = prefix[0], true
	}
	if len(suffix) > 0 {
		t.eos, t.addEOS = suffix[len(suffix)-1], true
	}
	lookup := func(raw json.RawMessage, what string) (int, error) {
		name, ok := configName(raw)
		if !ok {
			return -1, nil
		}
		id, ok := t.vocab[name]
		if !ok {
			return -1, fmt.Errorf("tokenizer_config.json: %s %q is not in the vocab", what, name)
		}
		return id, nil
	}
	if len(configJSON) > 0 {
		var c tokenizerConfig
		if err := json.Unmarshal(configJSON, &c); err != nil {
			return fmt.Errorf("tokenizer_config.json: malformed JSON: %w", err)
		}
		id, err := lookup(c.BOSToken, "bos_token")
		if err != nil {
			return err
		}
		if id >= 0 {
			t.bos = id
		}
		if id, err = lookup(c.EOSToken, "eos_token"); err != nil {
			return err
		}
		if id >= 0 {
			t.eos = id
		}
		if id, err = lookup(c.PadToken, "pad_token"); err != nil {
			return err
		}
		t.pad = id
		if c.AddBOS != nil {
			t.addBOS = *c.AddBOS
		}
		if c.AddEOS != nil {
			t.addEOS = *c.AddEOS
		}
	}
	guess := func(names ...string) int {
		for _, n := range names {
			if id, ok := t.vocab[n]; ok {
				return id
			}
		}
		return -1
	}
	if t.bos < 0 {
		t.bos = guess("<s>", "<|begin_of_text|>", "<|endoftext|>", "<bos>")
	}
	if t.eos < 0 {
		t.eos = guess("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>")
	}
	if t.bos < 0 {
		t.addBOS = false
	}
	if t.eos < 0 {
		t.addEOS = false
	}
	for _, id := range []int{t.bos, t.eos, t.pad} {
		if id >= 0 {
			t.skip[id] = true
		}
	}
	return nil
}

// templateSpecials collects the special tokens a TemplateProcessing puts
// before and after the single sequence $A.
func templateSpecials(raw json.RawMessage, prefix, suffix *[]int) error {
	if isNull(raw) {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for _, p := range c.Processors {
			if err := templateSpecials(p, prefix, suffix); err != nil {
				return err
			}
		}
	case "TemplateProcessing":
		seen := false
		for _, piece := range c.Single {
			if _, ok := piece["Sequence"]; ok {
				seen = true
				continue
			}
			st, ok := piece["SpecialToken"]
			if !ok {
				continue
			}
			ids := c.SpecialTokens[st.ID].IDs
			if seen {
				*suffix = append(*suffix, ids...)
			} else {
				*prefix = append(*prefix, ids...)
			}
		}
	}
	// Other processors (ByteLevel, ...) add no tokens for a single sequence.
	return nil
}

// ---------------------------------------------------------------------------
// Normalizers

// Encode tokenizes text without adding special tokens. Added tokens (such as
// "<s>" or "<|endoftext|>") written in the text are matched as whole tokens;
// the text between them is normalized and pre-tokenized segment by segment.
func (t *Tokenizer) Encode(text string) []int {
	var ids []int
	last := 0
	emit := func(end int) {
		if end > last {
			ids = t.encodeSegment(ids, text[last:end], last == 0)
		}
	}
	for i := 0; i < len(text); {
		a, start, end := t.matchAdded(text, i, last)
		if a == nil {
			i++
			continue
		}
		emit(start)
		ids = append(ids, a.id)
		last, i = end, end
	}
	emit(len(text))
	return ids
}

// EncodeWithSpecial is Encode plus the BOS (and EOS) tokens the tokenizer
// adds by configuration: Llama-2 prepends BOS, GPT-2 adds nothing.
func (t *Tokenizer) EncodeWithSpecial(text string) []int {
	ids := t.Encode(text)
	if t.addBOS && t.bos >= 0 {
		ids = append([]int{t.bos}, ids...)
	}
	if t.addEOS && t.eos >= 0 {
		ids = append(ids, t.eos)
	}
	return ids
}

// matchAdded looks for an added token starting at byte i of text. It returns
// the token and the span it consumes (widened by lstrip/rstrip, never before
// floor), or nil.
func (t *Tokenizer) matchAdded(text string, i, floor int) (*addedToken, int, int) {
	for _, k := range t.addedByFirst[text[i]] {
		a := &t.added[k]
		if !strings.HasPrefix(text[i:], a.content) {
			continue
		}
		start, end := i, i+len(a.content)
		if a.oneWord {
			if r, _ := utf8.DecodeLastRuneInString(text[:start]); start > 0 && wordRune(r) {
				continue
			}
			if r, _ := utf8.DecodeRuneInString(text[end:]); end < len(text) && wordRune(r) {
				continue
			}
		}
		if a.lstrip {
			for start > floor {
				r, n := utf8.DecodeLastRuneInString(text[floor:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= n
			}
		}
		if a.rstrip {
			end = len(text) - len(strings.TrimLeftFunc(text[end:], unicode.IsSpace))
		}
		return a, start, end
	}
	return nil, 0, 0
}

func wordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

func ints(s []int32) []int {
	out := make([]int, len(s))
	for i, v := range s {
		out[i] = int(v)
	}
	return out
}

// ---------------------------------------------------------------------------
// Decoding and accessors

// Decode turns ids back into text, skipping special tokens (BOS, EOS, pad
// and the other added tokens marked special) and ids out of range. Byte
// tokens are reassembled into their bytes; a sequence cut inside a UTF-8
// character yields those raw bytes.
func (t *Tokenizer) Decode(ids []int) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.tokens) || t.skip[id] {
			continue
		}
		toks = append(toks, t.tokens[id])
	}
	for _, d := range t.decoders {
		toks = d(toks)
	}
	return strings.Join(toks, "")
}

// BOS returns the beginning-of-sequence id, or -1 if none.
func (t *Tokenizer) BOS() int { return t.bos }

// EOS returns the end-of-sequence id, or -1 if none.
func (t *Tokenizer) EOS() int { return t.eos }

// VocabSize returns the number of ids (one more than the largest id of the
// vocab and the added tokens).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// TokenString returns the vocabulary string of id as stored in
// tokenizer.json (e.g. "▁Hello", "Ġworld", "<0x0A>"), or "" if out of range.
func (t *Tokenizer) TokenString(id int) string {
	if id < 0 || id >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}
