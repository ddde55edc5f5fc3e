package tokenizer

// Decoders: turning token strings back into text (byte fallback, ByteLevel,
// Metaspace, Replace, Strip, Fuse).

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

func parseDecoder(raw json.RawMessage) ([]func([]string) []string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var c component
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
		f, err := replacer(c)
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
