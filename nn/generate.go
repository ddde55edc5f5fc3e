package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// SampleOptions control generation (REFERENCE §5 generation keys).
type SampleOptions struct {
	MaxNewTokens      int
	Temperature       float64 // 0: greedy
	TopK              int     // 0: off
	TopP              float64 // 1 or 0: off
	RepetitionPenalty float64 // 1 or 0: off (HF: divide positive logits of seen tokens, multiply negative ones)
	Seed              uint64
	EOS               int // stop after this id; -1: never
}

// Generate continues prompt (token ids, BOS included if wanted) and returns
// the new ids; onToken, if set, sees each id as it is chosen. Each step runs
// the whole sequence (no KV cache yet) and reads back only the last row's
// logits.
func (m *Llama) Generate(prompt []int, opt SampleOptions, onToken func(id int) error) ([]int, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("nn: generate from an empty prompt (give at least BOS)")
	}
	r := rand.New(rand.NewPCG(opt.Seed, 0x5eed))
	seq := append([]int(nil), prompt...)
	var out []int
	v := m.Cfg.VocabSize
	for len(out) < opt.MaxNewTokens {
		if m.Cfg.MaxPositionEmbeddings > 0 && len(seq) >= m.Cfg.MaxPositionEmbeddings {
			break
		}
		logits, err := m.lastLogits(seq)
		if err != nil {
			return out, err
		}
		id := Sample(logits[:v], seq, opt, r)
		out = append(out, id)
		seq = append(seq, id)
		if onToken != nil {
			if err := onToken(id); err != nil {
				return out, err
			}
		}
		if id == opt.EOS {
			break
		}
	}
	return out, nil
}

// lastLogits runs the model on one sequence and returns the logits of its
// last position.
func (m *Llama) lastLogits(seq []int) ([]float32, error) {
	in, err := m.NewInputs(1, len(seq), seq, nil, []int{0})
	if err != nil {
		return nil, err
	}
	defer in.Release()
	t := NewTape(m.d, false)
	logits, err := m.Logits(t, in)
	if err != nil {
		return nil, err
	}
	defer logits.Release()
	v := m.Cfg.VocabSize
	raw, err := m.d.Read(logits.Buf, int64(4*(len(seq)-1)*v), int64(4*v))
	if err != nil {
		return nil, err
	}
	return DecodeF32(raw, v, logits.DType), nil
}

// Sample picks the next id from logits with the options' processing, in
// Hugging Face's order: repetition penalty, temperature, top-k, top-p.
func Sample(logits []float32, seen []int, opt SampleOptions, r *rand.Rand) int {
	l := make([]float64, len(logits))
	for i, x := range logits {
		l[i] = float64(x)
	}
	if p := opt.RepetitionPenalty; p > 0 && p != 1 {
		done := map[int]bool{}
		for _, id := range seen {
			if id < 0 || id >= len(l) || done[id] {
				continue
			}
			done[id] = true
			if l[id] > 0 {
				l[id] /= p
			} else {
				l[id] *= p
			}
		}
	}
	if opt.Temperature <= 0 {
		best := 0
		for i := range l {
			if l[i] > l[best] {
				best = i
			}
		}
		return best
	}
	idx := make([]int, len(l))
	for i := range idx {
		idx[i] = i
		l[i] /= opt.Temperature
	}
	sort.SliceStable(idx, func(a, b int) bool { return l[idx[a]] > l[idx[b]] })
	if opt.TopK > 0 && opt.TopK < len(idx) {
		idx = idx[:opt.TopK]
	}
	maxL := l[idx[0]]
	probs := make([]float64, len(idx))
	sum := 0.0
	for i, id := range idx {
		probs[i] = math.Exp(l[id] - maxL)
		sum += probs[i]
	}
	for i := range probs {
		probs[i] /= sum
	}
	if opt.TopP > 0 && opt.TopP < 1 {
		// Keep the smallest prefix whose mass reaches top_p (at least one).
		cum := 0.0
		for i, p := range probs {
			cum += p
			if cum >= opt.TopP {
				idx, probs = idx[:i+1], probs[:i+1]
				break
			}
		}
		s := 0.0
		for _, p := range probs {
			s += p
		}
		for i := range probs {
			probs[i] /= s
		}
	}
	u := r.Float64()
	for i, p := range probs {
		u -= p
		if u < 0 {
			return idx[i]
		}
	}
	return idx[len(idx)-1]
}
