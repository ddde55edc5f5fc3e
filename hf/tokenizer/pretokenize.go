package tokenizer

// Pre-tokenizers: splitting a segment into the words BPE runs on (Metaspace,
// ByteLevel, Split by regex or literal, GPT-2's pattern without a regex engine).

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

func parsePreTokenizer(raw json.RawMessage) ([]preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var c component
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
					for _, q := range applySplit(p, split(p), "Isolated", false) {
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
			split = func(s string) [][2]int { return literalMatches(s, lit) }
		case c.Pattern.Regex != nil:
			var err error
			if split, err = splitFunc(*c.Pattern.Regex); err != nil {
				return nil, err
			}
		default:
			return nil, errors.New("Split pattern is neither String nor Regex")
		}
		behavior, invert := c.Behavior, c.Invert
		if err := checkBehavior(behavior); err != nil {
			return nil, err
		}
		return []preTokenizer{func(pieces []string, _ bool) []string {
			var out []string
			for _, p := range pieces {
				out = append(out, applySplit(p, split(p), behavior, invert)...)
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
					out = append(out, applySplit(p, literalMatches(p, repl), "MergedWithNext", false)...)
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
				out = append(out, applySplit(p, spans, "Isolated", false)...)
			}
			return out
		}}, nil
	default:
		return nil, fmt.Errorf("unsupported pre-tokenizer type %q", c.Type)
	}
}

func checkBehavior(b string) error {
	switch b {
	case "Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous":
		return nil
	}
	return fmt.Errorf("unsupported Split behavior %q", b)
}

func literalMatches(s, lit string) [][2]int {
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

// applySplit cuts s at the given match spans (sorted, disjoint) and combines
// matches with their neighbours as the tokenizers library's
// SplitDelimiterBehavior does. Empty pieces are dropped.
func applySplit(s string, matches [][2]int, behavior string, invert bool) []string {
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
	wsClass     = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`
	wsLookahead = `\s+(?!\S)`
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
				b.WriteString(wsClass)
			case next == 's':
				b.WriteString("[" + wsClass + "]")
			case next == 'S' && !inClass:
				b.WriteString("[^" + wsClass + "]")
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
	if k := strings.Index(pat, wsLookahead); k >= 0 {
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
		b, a := pat[:k], pat[k+len(wsLookahead):]
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
