package data

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
	"regexp"
	"sort"
	"strconv"
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
	tokCacheMaxWord    = 128     // longest word (bytes) kept in the cache
	tokCacheMaxEntries = 1 << 16 // cache is emptied when it grows past this
)

// LoadTokenizer reads tokenizer.json from dir (or the file path itself); if
// tokenizer_config.json sits beside it, honour add_bos_token / add_eos_token
// and bos/eos token names.
func LoadTokenizer(path string) (*Tokenizer, error) {
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
	t, err := ParseTokenizer(tj, cj)
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

// tokComponent is the common shape of normalizers, pre-tokenizers, decoders and
// post-processors: a "type" tag plus type-specific fields.
type tokComponent struct {
	Type string `json:"type"`

	// Sequence
	Normalizers    []json.RawMessage `json:"normalizers"`
	PreTokenizers  []json.RawMessage `json:"pretokenizers"`
	Decoders       []json.RawMessage `json:"decoders"`
	Processors     []json.RawMessage `json:"processors"`
	Prepend        *string           `json:"prepend"`
	Pattern        *tokPattern       `json:"pattern"`
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

type tokPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func tokIsNull(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null"
}

// ParseTokenizer builds a Tokenizer from the bytes of tokenizer.json and,
// optionally, tokenizer_config.json (nil when absent).
func ParseTokenizer(tokenizerJSON []byte, tokenizerConfigJSON []byte) (*Tokenizer, error) {
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

	if tokIsNull(m.Vocab) {
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

func (t *Tokenizer) parseMerges(raw json.RawMessage) error {
	t.merges = map[uint64]bpeMerge{}
	if tokIsNull(raw) {
		return nil
	}
	var pairs [][2]string
	var asStrings []string
	if err := json.Unmarshal(raw, &asStrings); err == nil {
		pairs = make([][2]string, len(asStrings))
		for i, s := range asStrings {
			p, ok := t.splitMerge(s)
			if !ok {
				return fmt.Errorf("tokenizer.json: merges[%d] = %q is not two vocab tokens separated by one space", i, s)
			}
			pairs[i] = p
		}
	} else {
		var asPairs [][]string
		if err := json.Unmarshal(raw, &asPairs); err != nil {
			return errors.New(`tokenizer.json: model.merges is neither a list of "a b" strings nor a list of ["a","b"] pairs`)
		}
		pairs = make([][2]string, len(asPairs))
		for i, p := range asPairs {
			if len(p) != 2 {
				return fmt.Errorf("tokenizer.json: merges[%d] has %d elements, want 2", i, len(p))
			}
			pairs[i] = [2]string{p[0], p[1]}
		}
	}
	for rank, p := range pairs {
		a, ok := t.vocab[p[0]]
		if !ok {
			return fmt.Errorf("tokenizer.json: merges[%d] (%q %q): %q is not in the vocab", rank, p[0], p[1], p[0])
		}
		b, ok := t.vocab[p[1]]
		if !ok {
			return fmt.Errorf("tokenizer.json: merges[%d] (%q %q): %q is not in the vocab", rank, p[0], p[1], p[1])
		}
		c, ok := t.vocab[p[0]+p[1]]
		if !ok {
			return fmt.Errorf("tokenizer.json: merges[%d] (%q %q): result %q is not in the vocab", rank, p[0], p[1], p[0]+p[1])
		}
		key := pairKey(a, b)
		if _, dup := t.merges[key]; !dup { // the first (lowest) rank wins
			t.merges[key] = bpeMerge{rank: int32(rank), id: int32(c)}
		}
	}
	return nil
}

// splitMerge splits an "a b" merge. Some vocabs hold tokens that contain
// spaces (Llama-2's has " " and "  "), so when the string has more than one
// space, the split chosen is the first whose two halves and their
// concatenation are all in the vocab.
func (t *Tokenizer) splitMerge(s string) ([2]string, bool) {
	if a, b, ok := strings.Cut(s, " "); ok && !strings.Contains(b, " ") {
		return [2]string{a, b}, a != "" && b != ""
	}
	for i := 1; i < len(s)-1; i++ {
		if s[i] != ' ' {
			continue
		}
		a, b := s[:i], s[i+1:]
		_, okA := t.vocab[a]
		_, okB := t.vocab[b]
		_, okAB := t.vocab[a+b]
		if okA && okB && okAB {
			return [2]string{a, b}, true
		}
	}
	return [2]string{}, false
}

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// tokConfigName reads a token given either as a string or as {"content": ...}.
func tokConfigName(raw json.RawMessage) (string, bool) {
	if tokIsNull(raw) {
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
		name, ok := tokConfigName(raw)
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
	if tokIsNull(raw) {
		return nil
	}
	var c tokComponent
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

func parseNormalizer(raw json.RawMessage) ([]func(string) string, error) {
	if tokIsNull(raw) {
		return nil, nil
	}
	var c tokComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var out []func(string) string
		for _, n := range c.Normalizers {
			fs, err := parseNormalizer(n)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
		return out, nil
	case "Prepend":
		if c.Prepend == nil {
			return nil, errors.New(`Prepend without "prepend"`)
		}
		p := *c.Prepend
		return []func(string) string{func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		}}, nil
	case "Replace":
		f, err := tokReplacer(c)
		if err != nil {
			return nil, err
		}
		return []func(string) string{f}, nil
	case "Lowercase":
		return []func(string) string{strings.ToLower}, nil
	case "Strip":
		left, right := c.Left == nil || *c.Left, c.Right == nil || *c.Right
		return []func(string) string{func(s string) string {
			if left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}}, nil
	case "NFC", "NFKC", "NFD", "NFKD":
		return nil, fmt.Errorf("unicode normalizer %s is not supported", c.Type)
	default:
		return nil, fmt.Errorf("unsupported normalizer type %q", c.Type)
	}
}

func tokReplacer(c tokComponent) (func(string) string, error) {
	if c.Pattern == nil || c.Content == nil {
		return nil, errors.New(`Replace needs "pattern" and "content"`)
	}
	with := *c.Content
	switch {
	case c.Pattern.String != nil:
		from := *c.Pattern.String
		return func(s string) string { return strings.ReplaceAll(s, from, with) }, nil
	case c.Pattern.Regex != nil:
		re, err := compileRegex(*c.Pattern.Regex)
		if err != nil {
			return nil, err
		}
		return func(s string) string { return re.ReplaceAllLiteralString(s, with) }, nil
	}
	return nil, errors.New("Replace pattern is neither String nor Regex")
}

// ---------------------------------------------------------------------------
// Pre-tokenizers

func parsePreTokenizer(raw json.RawMessage) ([]preTokenizer, error) {
	if tokIsNull(raw) {
		return nil, nil
	}
	var c tokComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var out []preTokenizer
		for _, p := range c.PreTokenizers {
			ps, err := parsePreTokenizer(p)
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		}
		return out, nil
	case "ByteLevel":
		prefix := c.AddPrefixSpace != nil && *c.AddPrefixSpace
		useRegex := c.UseRegex == nil || *c.UseRegex
		split, _ := splitFunc(GPT2SplitPattern)
		return []preTokenizer{func(pieces []string, _ bool) []string {
			var out []string
			for _, p := range pieces {
				if prefix && !strings.HasPrefix(p, " ") {
					p = " " + p
				}
				if useRegex {
					for _, q := range tokApplySplit(p, split(p), "Isolated", false) {
						out = append(out, byteLevelEncode(q))
					}
				} else {
					out = append(out, byteLevelEncode(p))
				}
			}
			return out
		}}, nil
	case "Split":
		if c.Pattern == nil {
			return nil, errors.New(`Split without "pattern"`)
		}
		var split SplitFunc
		switch {
		case c.Pattern.String != nil:
			lit := *c.Pattern.String
			split = func(s string) [][2]int { return tokLiteralMatches(s, lit) }
		case c.Pattern.Regex != nil:
			var err error
			if split, err = splitFunc(*c.Pattern.Regex); err != nil {
				return nil, err
			}
		default:
			return nil, errors.New("Split pattern is neither String nor Regex")
		}
		behavior, invert := c.Behavior, c.Invert
		if err := tokCheckBehavior(behavior); err != nil {
			return nil, err
		}
		return []preTokenizer{func(pieces []string, _ bool) []string {
			var out []string
			for _, p := range pieces {
				out = append(out, tokApplySplit(p, split(p), behavior, invert)...)
			}
			return out
		}}, nil
	case "Metaspace":
		repl := "▁"
		if c.Replacement != nil && *c.Replacement != "" {
			repl = *c.Replacement
		}
		scheme := "always"
		if c.PrependScheme != nil {
			scheme = *c.PrependScheme
		} else if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
			scheme = "never"
		}
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return nil, fmt.Errorf("Metaspace prepend_scheme %q is not supported", scheme)
		}
		doSplit := c.Split == nil || *c.Split
		return []preTokenizer{func(pieces []string, first bool) []string {
			var out []string
			for _, p := range pieces {
				p = strings.ReplaceAll(p, " ", repl)
				if p != "" && !strings.HasPrefix(p, repl) && (scheme == "always" || scheme == "first" && first) {
					p = repl + p
				}
				if doSplit {
					out = append(out, tokApplySplit(p, tokLiteralMatches(p, repl), "MergedWithNext", false)...)
				} else {
					out = append(out, p)
				}
			}
			return out
		}}, nil
	case "Digits":
		individual := c.IndividualDigs
		return []preTokenizer{func(pieces []string, _ bool) []string {
			var out []string
			for _, p := range pieces {
				var spans [][2]int
				for i, r := range p {
					if !unicode.IsDigit(r) {
						continue
					}
					e := i + utf8.RuneLen(r)
					if !individual && len(spans) > 0 && spans[len(spans)-1][1] == i {
						spans[len(spans)-1][1] = e
					} else {
						spans = append(spans, [2]int{i, e})
					}
				}
				out = append(out, tokApplySplit(p, spans, "Isolated", false)...)
			}
			return out
		}}, nil
	default:
		return nil, fmt.Errorf("unsupported pre-tokenizer type %q", c.Type)
	}
}

func tokCheckBehavior(b string) error {
	switch b {
	case "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous":
		return nil
	}
	return fmt.Errorf("unsupported Split behavior %q", b)
}

func tokLiteralMatches(s, lit string) [][2]int {
	if lit == "" {
		return nil
	}
	var out [][2]int
	for off := 0; ; {
		i := strings.Index(s[off:], lit)
		if i < 0 {
			return out
		}
		out = append(out, [2]int{off + i, off + i + len(lit)})
		off += i + len(lit)
	}
}

// tokApplySplit cuts s at the given match spans (sorted, disjoint) and combines
// matches with their neighbours as the tokenizers library's
// SplitDelimiterBehavior does. Empty pieces are dropped.
func tokApplySplit(s string, matches [][2]int, behavior string, invert bool) []string {
	type span struct {
		a, b  int
		match bool
	}
	var spans []span
	prev := 0
	for _, m := range matches {
		if m[0] > prev {
			spans = append(spans, span{prev, m[0], false})
		}
		if m[1] > m[0] {
			spans = append(spans, span{m[0], m[1], true})
		}
		prev = m[1]
	}
	if prev < len(s) {
		spans = append(spans, span{prev, len(s), false})
	}
	if invert {
		for i := range spans {
			spans[i].match = !spans[i].match
		}
	}
	var out []span
	switch behavior {
	case "Isolated":
		out = spans
	case "Removed":
		for _, sp := range spans {
			if !sp.match {
				out = append(out, sp)
			}
		}
	case "MergedWithPrevious":
		prevMatch := false
		for _, sp := range spans {
			if sp.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].b = sp.b
			} else {
				out = append(out, sp)
			}
			prevMatch = sp.match
		}
	case "MergedWithNext":
		nextMatch := false
		for i := len(spans) - 1; i >= 0; i-- {
			sp := spans[i]
			if sp.match && !nextMatch && len(out) > 0 {
				out[len(out)-1].a = sp.a
			} else {
				out = append(out, sp)
			}
			nextMatch = sp.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case "Contiguous":
		for _, sp := range spans {
			if sp.match && len(out) > 0 && out[len(out)-1].match {
				out[len(out)-1].b = sp.b
			} else {
				out = append(out, sp)
			}
		}
	}
	res := make([]string, 0, len(out))
	for _, sp := range out {
		res = append(res, s[sp.a:sp.b])
	}
	return res
}

// ---------------------------------------------------------------------------
// Split patterns

// SplitFunc returns the byte spans of the successive matches of a split
// pattern in s (sorted, disjoint, non-empty).
type SplitFunc func(s string) [][2]int

// GPT2SplitPattern is the pre-tokenization regex of GPT-2 (and of the
// ByteLevel pre-tokenizer with use_regex).
const GPT2SplitPattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var (
	splitMu       sync.RWMutex
	splitPatterns = map[string]SplitFunc{GPT2SplitPattern: splitGPT2}
)

// RegisterSplitPattern installs a hand-written implementation of a Split
// pre-tokenizer regex, used instead of the generic translation to Go's
// regexp whenever a tokenizer.json names exactly this pattern.
func RegisterSplitPattern(pattern string, f SplitFunc) {
	splitMu.Lock()
	defer splitMu.Unlock()
	splitPatterns[pattern] = f
}

func splitFunc(pat string) (SplitFunc, error) {
	splitMu.RLock()
	f, ok := splitPatterns[pat]
	splitMu.RUnlock()
	if ok {
		return f, nil
	}
	return compileSplitRegex(pat)
}

// splitGPT2 implements GPT2SplitPattern by hand (Go's regexp has no
// lookahead). \s is Unicode White_Space, as in the original.
func splitGPT2(s string) [][2]int {
	var out [][2]int
	for i := 0; i < len(s); {
		n := gpt2Match(s, i)
		out = append(out, [2]int{i, i + n})
		i += n
	}
	return out
}

type gpt2RuneClass int

const (
	gpt2Space gpt2RuneClass = iota
	gpt2Letter
	gpt2Number
	gpt2Other
)

func gpt2Class(r rune) gpt2RuneClass {
	switch {
	case unicode.IsSpace(r):
		return gpt2Space
	case unicode.IsLetter(r):
		return gpt2Letter
	case unicode.IsNumber(r):
		return gpt2Number
	}
	return gpt2Other
}

// gpt2Run returns the end of the run of runes of class c starting at i.
func gpt2Run(s string, i int, c gpt2RuneClass) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if gpt2Class(r) != c {
			break
		}
		i += n
	}
	return i
}

// gpt2Match returns the length of the GPT-2 regex match at s[i:] (always > 0).
func gpt2Match(s string, i int) int {
	rest := s[i:]
	if rest[0] == '\'' && len(rest) >= 2 {
		switch rest[1] {
		case 's', 't', 'm', 'd':
			return 2
		}
		if len(rest) >= 3 {
			switch rest[1:3] {
			case "re", "ve", "ll":
				return 3
			}
		}
	}
	r, n := utf8.DecodeRuneInString(rest)
	c := gpt2Class(r)
	if r == ' ' && len(rest) > 1 {
		r2, _ := utf8.DecodeRuneInString(rest[1:])
		if c2 := gpt2Class(r2); c2 != gpt2Space {
			return gpt2Run(s, i+1, c2) - i
		}
	}
	if c != gpt2Space {
		return gpt2Run(s, i, c) - i
	}
	// \s+(?!\S)|\s+
	end := gpt2Run(s, i, gpt2Space)
	if end == len(s) {
		return end - i
	}
	_, last := utf8.DecodeLastRuneInString(s[i:end])
	if end-last > i {
		return end - last - i
	}
	return n
}

const (
	tokWSClass     = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`
	tokWSLookahead = `\s+(?!\S)`
)

// compileRegex translates an Oniguruma-style pattern without lookaround to
// Go: \s becomes Unicode White_Space as in Oniguruma.
func compileRegex(pat string) (*regexp.Regexp, error) {
	for _, la := range []string{"(?=", "(?!", "(?<=", "(?<!"} {
		if strings.Contains(pat, la) {
			return nil, fmt.Errorf("regex %q: lookaround is not supported (register a hand-written SplitFunc with RegisterSplitPattern)", pat)
		}
	}
	var b strings.Builder
	inClass := false
	for i := 0; i < len(pat); i++ {
		ch := pat[i]
		switch {
		case ch == '\\' && i+1 < len(pat):
			i++
			switch next := pat[i]; {
			case next == 's' && inClass:
				b.WriteString(tokWSClass)
			case next == 's':
				b.WriteString("[" + tokWSClass + "]")
			case next == 'S' && !inClass:
				b.WriteString("[^" + tokWSClass + "]")
			case next == 'S':
				return nil, fmt.Errorf("regex %q: \\S inside a character class is not supported", pat)
			default:
				b.WriteByte('\\')
				b.WriteByte(next)
			}
		case ch == '[' && !inClass:
			inClass = true
			b.WriteByte(ch)
		case ch == ']' && inClass:
			inClass = false
			b.WriteByte(ch)
		default:
			b.WriteByte(ch)
		}
	}
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pat, err)
	}
	return re, nil
}

// compileSplitRegex builds a SplitFunc from a regex with Go's regexp. The
// one lookahead found in GPT-style patterns, a top-level alternative
// `\s+(?!\S)`, is handled by hand at its place in the alternation.
func compileSplitRegex(pat string) (SplitFunc, error) {
	before, after, hasWS := pat, "", false
	if k := strings.Index(pat, tokWSLookahead); k >= 0 {
		depth := 0
		for j := 0; j < k; j++ {
			switch pat[j] {
			case '\\':
				j++
			case '(':
				depth++
			case ')':
				depth--
			}
		}
		b, a := pat[:k], pat[k+len(tokWSLookahead):]
		if depth == 0 && (b == "" || strings.HasSuffix(b, "|")) && (a == "" || strings.HasPrefix(a, "|")) {
			before, after, hasWS = strings.TrimSuffix(b, "|"), strings.TrimPrefix(a, "|"), true
		}
	}
	anchored := func(p string) (*regexp.Regexp, error) {
		if p == "" {
			return nil, nil
		}
		return compileRegex(`^(?:` + p + `)`)
	}
	reBefore, err := anchored(before)
	if err != nil {
		return nil, err
	}
	reAfter, err := anchored(after)
	if err != nil {
		return nil, err
	}
	matchAt := func(re *regexp.Regexp, s string, i int) int {
		if re == nil {
			return 0
		}
		if loc := re.FindStringIndex(s[i:]); loc != nil {
			return loc[1]
		}
		return 0
	}
	return func(s string) [][2]int {
		var out [][2]int
		for i := 0; i < len(s); {
			n := matchAt(reBefore, s, i)
			if n == 0 && hasWS {
				if r, _ := utf8.DecodeRuneInString(s[i:]); unicode.IsSpace(r) {
					end := gpt2Run(s, i, gpt2Space)
					_, last := utf8.DecodeLastRuneInString(s[i:end])
					if end == len(s) {
						n = end - i
					} else if end-last > i {
						n = end - last - i
					}
				}
			}
			if n == 0 {
				n = matchAt(reAfter, s, i)
			}
			if n == 0 { // no match here: the regex search moves on
				_, w := utf8.DecodeRuneInString(s[i:])
				i += w
				continue
			}
			out = append(out, [2]int{i, i + n})
			i += n
		}
		return out
	}, nil
}

// ---------------------------------------------------------------------------
// Byte-level mapping (GPT-2's bytes_to_unicode)

var byteToRune, runeToByte = func() ([256]rune, map[rune]byte) {
	var b2r [256]rune
	r2b := make(map[rune]byte, 256)
	n := 0
	for b := range 256 {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()

func byteLevelEncode(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// Decoders

func parseDecoder(raw json.RawMessage) ([]func([]string) []string, error) {
	if tokIsNull(raw) {
		return nil, nil
	}
	var c tokComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	one := func(f func([]string) []string) ([]func([]string) []string, error) {
		return []func([]string) []string{f}, nil
	}
	switch c.Type {
	case "Sequence":
		var out []func([]string) []string
		for _, d := range c.Decoders {
			ds, err := parseDecoder(d)
			if err != nil {
				return nil, err
			}
			out = append(out, ds...)
		}
		return out, nil
	case "Replace":
		f, err := tokReplacer(c)
		if err != nil {
			return nil, err
		}
		return one(func(toks []string) []string {
			for i := range toks {
				toks[i] = f(toks[i])
			}
			return toks
		})
	case "ByteFallback":
		return one(decodeByteFallback)
	case "Fuse":
		return one(func(toks []string) []string { return []string{strings.Join(toks, "")} })
	case "Strip":
		content := " "
		if c.Content != nil {
			content = *c.Content
		}
		start, stop := c.Start, c.Stop
		return one(func(toks []string) []string {
			for i, s := range toks {
				for k := 0; k < start && content != "" && strings.HasPrefix(s, content); k++ {
					s = s[len(content):]
				}
				for k := 0; k < stop && content != "" && strings.HasSuffix(s, content); k++ {
					s = s[:len(s)-len(content)]
				}
				toks[i] = s
			}
			return toks
		})
	case "ByteLevel":
		return one(decodeByteLevel)
	case "Metaspace":
		repl := "▁"
		if c.Replacement != nil && *c.Replacement != "" {
			repl = *c.Replacement
		}
		strip := true
		if c.PrependScheme != nil {
			strip = *c.PrependScheme != "never"
		} else if c.AddPrefixSpace != nil {
			strip = *c.AddPrefixSpace
		}
		return one(func(toks []string) []string {
			for i, s := range toks {
				s = strings.ReplaceAll(s, repl, " ")
				if i == 0 && strip {
					s = strings.TrimPrefix(s, " ")
				}
				toks[i] = s
			}
			return toks
		})
	default:
		return nil, fmt.Errorf("unsupported decoder type %q", c.Type)
	}
}

// parseByteToken reads "<0xNN>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || !strings.HasPrefix(s, "<0x") || s[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(s[3:5], 16, 8)
	return byte(v), err == nil
}

// decodeByteFallback turns runs of "<0xNN>" tokens into their bytes. Bytes
// are kept as they are, so decoding a sequence piecewise and concatenating
// gives the same string (an incomplete UTF-8 sequence stays raw bytes
// rather than becoming U+FFFD).
func decodeByteFallback(toks []string) []string {
	out := toks[:0:0]
	var buf []byte
	for _, s := range toks {
		if b, ok := parseByteToken(s); ok {
			buf = append(buf, b)
			continue
		}
		if len(buf) > 0 {
			out = append(out, string(buf))
			buf = buf[:0]
		}
		out = append(out, s)
	}
	if len(buf) > 0 {
		out = append(out, string(buf))
	}
	return out
}

func decodeByteLevel(toks []string) []string {
	var b []byte
	for _, s := range toks {
		start := len(b)
		ok := true
		for _, r := range s {
			c, found := runeToByte[r]
			if !found {
				ok = false
				break
			}
			b = append(b, c)
		}
		if !ok { // not a byte-level token: keep it verbatim
			b = append(b[:start], s...)
		}
	}
	return []string{string(b)}
}

// ---------------------------------------------------------------------------
// Encoding

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
			if r, _ := utf8.DecodeLastRuneInString(text[:start]); start > 0 && tokWordRune(r) {
				continue
			}
			if r, _ := utf8.DecodeRuneInString(text[end:]); end < len(text) && tokWordRune(r) {
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

func tokWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

func (t *Tokenizer) encodeSegment(ids []int, s string, first bool) []int {
	for _, n := range t.normalizers {
		s = n(s)
	}
	if s == "" {
		return ids
	}
	pieces := []string{s}
	for _, p := range t.pre {
		pieces = p(pieces, first)
	}
	for _, w := range pieces {
		ids = t.encodeWord(ids, w)
	}
	return ids
}

// encodeWord appends the BPE tokens of one pre-tokenized word.
func (t *Tokenizer) encodeWord(ids []int, w string) []int {
	if w == "" {
		return ids
	}
	if t.ignoreMerges {
		if id, ok := t.vocab[w]; ok {
			return append(ids, id)
		}
	}
	cacheable := len(w) <= tokCacheMaxWord
	if cacheable {
		t.mu.RLock()
		c, ok := t.cache[w]
		t.mu.RUnlock()
		if ok {
			return append(ids, c...)
		}
	}
	res := t.bpe(w)
	if cacheable {
		t.mu.Lock()
		if len(t.cache) >= tokCacheMaxEntries {
			clear(t.cache)
		}
		t.cache[w] = res
		t.mu.Unlock()
	}
	return append(ids, res...)
}

type mergeCand struct {
	rank int32
	pos  int32 // index of the left symbol
	l, r int32 // ids of the pair when it was queued
}

func (a mergeCand) less(b mergeCand) bool {
	return a.rank < b.rank || a.rank == b.rank && a.pos < b.pos
}

// bpe splits w into its initial symbols (characters, with byte fallback or
// unk for characters outside the vocab) and applies merges lowest rank
// first, leftmost first among equal ranks, using a heap over a linked list.
func (t *Tokenizer) bpe(w string) []int {
	syms := make([]int32, 0, len(w))
	var buf [4]byte
	for _, r := range w {
		if id, ok := t.vocab[string(r)]; ok {
			syms = append(syms, int32(id))
			continue
		}
		n := utf8.EncodeRune(buf[:], r)
		if t.byteFallback {
			all := true
			for _, b := range buf[:n] {
				all = all && t.byteTokens[b] >= 0
			}
			if all {
				for _, b := range buf[:n] {
					syms = append(syms, int32(t.byteTokens[b]))
				}
				continue
			}
		}
		if t.unk < 0 {
			continue // no way to represent it; the tokenizers library errors here
		}
		if t.fuseUnk && len(syms) > 0 && syms[len(syms)-1] == int32(t.unk) {
			continue
		}
		syms = append(syms, int32(t.unk))
	}
	if len(syms) < 2 || len(t.merges) == 0 {
		return tokInts(syms)
	}

	n := len(syms)
	next := make([]int32, n)
	prev := make([]int32, n)
	for i := range n {
		next[i], prev[i] = int32(i+1), int32(i-1)
	}
	next[n-1] = -1
	var heap []mergeCand
	push := func(c mergeCand) {
		heap = append(heap, c)
		for j := len(heap) - 1; j > 0; {
			p := (j - 1) / 2
			if !heap[j].less(heap[p]) {
				break
			}
			heap[j], heap[p] = heap[p], heap[j]
			j = p
		}
	}
	pop := func() mergeCand {
		top := heap[0]
		last := len(heap) - 1
		heap[0] = heap[last]
		heap = heap[:last]
		for j := 0; ; {
			l, r, m := 2*j+1, 2*j+2, j
			if l < last && heap[l].less(heap[m]) {
				m = l
			}
			if r < last && heap[r].less(heap[m]) {
				m = r
			}
			if m == j {
				break
			}
			heap[j], heap[m] = heap[m], heap[j]
			j = m
		}
		return top
	}
	consider := func(i int32) {
		j := next[i]
		if i < 0 || j < 0 {
			return
		}
		if m, ok := t.merges[pairKey(int(syms[i]), int(syms[j]))]; ok {
			push(mergeCand{rank: m.rank, pos: i, l: syms[i], r: syms[j]})
		}
	}
	for i := range n - 1 {
		consider(int32(i))
	}
	for len(heap) > 0 {
		c := pop()
		i := c.pos
		j := next[i]
		if syms[i] != c.l || j < 0 || syms[j] != c.r {
			continue // stale: one side was merged since
		}
		syms[i] = t.merges[pairKey(int(c.l), int(c.r))].id
		syms[j] = -1
		next[i] = next[j]
		if next[j] >= 0 {
			prev[next[j]] = i
		}
		if prev[i] >= 0 {
			consider(prev[i])
		}
		consider(i)
	}
	out := make([]int, 0, n)
	for i := int32(0); i >= 0; i = next[i] {
		out = append(out, int(syms[i]))
	}
	return out
}

func tokInts(s []int32) []int {
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
