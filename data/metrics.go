package data

// Evaluation metrics: accuracy for multiple choice, SQuAD-style exact
// match and token F1 for generation (ReCoRD's official metrics).

import (
	"fmt"
	"math"
	"strings"
	"unicode"
)

// Accuracy is the fraction of positions where pred equals gold (0 for no
// items). The slices must have the same length.
func Accuracy(pred, gold []int) float64 {
	if len(pred) != len(gold) {
		panic(fmt.Sprintf("data.Accuracy: %d predictions for %d labels", len(pred), len(gold)))
	}
	if len(gold) == 0 {
		return 0
	}
	n := 0
	for i := range gold {
		if pred[i] == gold[i] {
			n++
		}
	}
	return float64(n) / float64(len(gold))
}

// NormalizeAnswer is SQuAD's answer normalization: lower case, ASCII
// punctuation removed, the articles a/an/the removed, whitespace collapsed.
func NormalizeAnswer(s string) string {
	s = strings.ToLower(s)
	s = strings.Map(func(r rune) rune {
		if r < 128 && unicode.IsPunct(r) || r < 128 && unicode.IsSymbol(r) {
			return -1
		}
		return r
	}, s)
	words := strings.Fields(s)
	out := words[:0]
	for _, w := range words {
		if w != "a" && w != "an" && w != "the" {
			out = append(out, w)
		}
	}
	return strings.Join(out, " ")
}

// ExactMatch is 1 when the normalized prediction equals a normalized
// answer, else 0 (0 when there are no answers).
func ExactMatch(pred string, answers []string) float64 {
	p := NormalizeAnswer(pred)
	for _, a := range answers {
		if NormalizeAnswer(a) == p {
			return 1
		}
	}
	return 0
}

// F1 is the best token-overlap F1 between the normalized prediction and
// any answer (0 when there are no answers). Two empty normalized strings
// score 1, one empty against a non-empty one 0.
func F1(pred string, answers []string) float64 {
	p := strings.Fields(NormalizeAnswer(pred))
	best := 0.0
	for _, a := range answers {
		best = max(best, metF1(p, strings.Fields(NormalizeAnswer(a))))
	}
	return best
}

func metF1(p, g []string) float64 {
	if len(p) == 0 || len(g) == 0 {
		if len(p) == len(g) {
			return 1
		}
		return 0
	}
	count := map[string]int{}
	for _, w := range g {
		count[w]++
	}
	same := 0
	for _, w := range p {
		if count[w] > 0 {
			count[w]--
			same++
		}
	}
	if same == 0 {
		return 0
	}
	prec := float64(same) / float64(len(p))
	rec := float64(same) / float64(len(g))
	return 2 * prec * rec / (prec + rec)
}

// PickOption returns the option with the lowest NLL: the sum over its
// target tokens, or with mean the sum divided by ntok[i]. Ties go to the
// first; NaN and options without tokens (under mean) never win unless all
// are such, and -1 is returned for no options.
func PickOption(nll []float64, ntok []int, mean bool) int {
	best, bestV := -1, math.Inf(1)
	for i, v := range nll {
		if mean {
			if i >= len(ntok) || ntok[i] <= 0 {
				continue
			}
			v /= float64(ntok[i])
		}
		if math.IsNaN(v) {
			continue
		}
		if best < 0 || v < bestV {
			best, bestV = i, v
		}
	}
	if best < 0 && len(nll) > 0 {
		return 0
	}
	return best
}
