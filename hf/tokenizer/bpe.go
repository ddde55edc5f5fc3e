package tokenizer

// BPE: the merge table and the encoding of one pre-tokenized word.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

func (t *Tokenizer) parseMerges(raw json.RawMessage) error {
	t.merges = map[uint64]bpeMerge{}
	if isNull(raw) {
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
	cacheable := len(w) <= cacheMaxWord
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
		if len(t.cache) >= cacheMaxEntries {
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
		return ints(syms)
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
