package tokenizer

// Normalizers: the text rewrites applied to each segment before
// pre-tokenization.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

func parseNormalizer(raw json.RawMessage) ([]func(string) string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var c component
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
		f, err := replacer(c)
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

func replacer(c component) (func(string) string, error) {
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
