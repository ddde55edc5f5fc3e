package nn

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/wgsl"
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

// DefaultSampleOptions are `lomo generate`'s defaults (the browser's
// lomo.generate has the same): 64 new tokens, greedy (temperature 0), top-k
// 50 once sampling, no top-p and no repetition penalty, seed 42, no EOS.
func DefaultSampleOptions() SampleOptions {
	return SampleOptions{MaxNewTokens: 64, TopK: 50, TopP: 1, RepetitionPenalty: 1, Seed: 42, EOS: -1}
}

// Generate continues prompt (token ids, BOS included if wanted) and returns
// the new ids; onToken, if set, sees each id as it is chosen. The prompt
// runs once and fills a KV cache; each new token then runs alone against it,
// and only its logits are read back.
func (m *Llama) Generate(prompt []int, opt SampleOptions, onToken func(id int) error) ([]int, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("nn: generate from an empty prompt (give at least BOS)")
	}
	capacity := len(prompt) + opt.MaxNewTokens
	if mp := m.Cfg.MaxPositionEmbeddings; mp > 0 && capacity > mp {
		capacity = max(mp, len(prompt))
	}
	c, err := m.newKVCache(capacity)
	if err != nil {
		return nil, err
	}
	defer c.release()
	r := rand.New(rand.NewPCG(opt.Seed, 0x5eed))
	seq := append([]int(nil), prompt...)
	next := prompt
	var out []int
	v := m.Cfg.VocabSize
	for len(out) < opt.MaxNewTokens && c.n+len(next) <= c.capacity {
		logits, err := m.decode(c, next)
		if err != nil {
			return out, err
		}
		id := Sample(logits[:v], seq, opt, r)
		out = append(out, id)
		seq = append(seq, id)
		next = []int{id}
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

// kvCache holds, per layer, the keys and values (1, capacity, KV, D) of the
// tokens of one sequence seen so far, in the model's activation dtype.
type kvCache struct {
	k, v        []*gpu.Buffer
	capacity, n int
}

func (m *Llama) newKVCache(capacity int) (*kvCache, error) {
	c := &kvCache{capacity: capacity}
	bytes := m.ActivationDType().Bytes(capacity * m.Cfg.NumKVHeads * m.Cfg.HeadDim)
	for li := range m.Layers {
		d := m.devs[m.stage[li]] // the layer's device
		k, err := d.NewBuffer(gpu.TagActivation, bytes)
		if err != nil {
			c.release()
			return nil, err
		}
		c.k = append(c.k, k)
		v, err := d.NewBuffer(gpu.TagActivation, bytes)
		if err != nil {
			c.release()
			return nil, err
		}
		c.v = append(c.v, v)
	}
	return c, nil
}

func (c *kvCache) release() {
	for _, b := range append(c.k, c.v...) {
		b.Release()
	}
	c.k, c.v = nil, nil
}

// decode runs ids at positions c.n.. through the model, appends their keys
// and values to the cache, and returns the last one's logits.
func (m *Llama) decode(c *kvCache, ids []int) ([]float32, error) {
	n := len(ids)
	in, err := m.NewInputs(1, n, ids, nil, []int{0})
	if err != nil {
		return nil, err
	}
	defer in.Release()
	pos := make([]int, n)
	for i := range pos {
		pos[i] = c.n + i
	}
	for _, d := range m.devs {
		if err := d.Write(in.at(d).Pos, 0, u32Bytes(pos)); err != nil {
			return nil, err
		}
	}
	cfg := m.Cfg
	hd, kvRow := cfg.HeadDim, cfg.NumKVHeads*cfg.HeadDim
	scale := float32(1 / math.Sqrt(float64(hd)))
	elem := m.ActivationDType().Bytes(2) / 2 // bytes per element
	t := NewTape(m.d, false)
	x, err := t.Embedding(m.Embed, in.IDs, n) // (n,C)
	if err != nil {
		return nil, err
	}
	for li, l := range m.Layers {
		if x, err = m.toStage(t, x, m.devs[m.stage[li]]); err != nil {
			return nil, err
		}
		in, d := in.at(t.D), t.D
		y, err := m.blockWith(t, l, x, in, func(t *Tape, q, k, v *Tensor) (*Tensor, error) {
			// k, v (n,KV*D) -> cache rows c.n..c.n+n-1
			off, size := elem*int64(c.n*kvRow), elem*int64(n*kvRow)
			if err := d.Copy(k.Buf, 0, c.k[li], off, size); err != nil {
				return nil, err
			}
			if err := d.Copy(v.Buf, 0, c.v[li], off, size); err != nil {
				return nil, err
			}
			o, err := t.activation(q.DType, n, cfg.NumHeads*hd)
			if err != nil {
				return nil, err
			}
			lse, err := d.NewBuffer(gpu.TagScratch, 4*int64(cfg.NumHeads*n))
			if err != nil {
				o.Release()
				return nil, err
			}
			defer lse.Release()
			// q (n,H*D) at positions c.n.. against the cache -> o (n,H*D)
			err = wgsl.AttentionDecode(d, o.Buf, lse, q.Buf, c.k[li], c.v[li], in.Start, q.DType, 1, n, c.capacity, c.n, cfg.NumHeads, cfg.NumKVHeads, hd, scale)
			if err != nil {
				o.Release()
				return nil, err
			}
			return o, nil
		})
		x.Release()
		if err != nil {
			return nil, err
		}
		x = y
	}
	defer x.Release()
	// Only the last row goes through the final norm and the head.
	last, err := t.activation(x.DType, 1, cfg.HiddenSize)
	if err != nil {
		return nil, err
	}
	defer last.Release()
	row := elem * int64(cfg.HiddenSize)
	if err := t.D.Copy(x.Buf, int64(n-1)*row, last.Buf, 0, row); err != nil {
		return nil, err
	}
	h, err := t.RMSNorm(last, m.Norm, float32(cfg.RMSNormEps))
	if err == nil {
		h, err = m.toStage(t, h, m.headDevice())
	}
	if err != nil {
		return nil, err
	}
	defer h.Release()
	logits, err := t.LinearF32(h, m.Head) // (1,V)
	if err != nil {
		return nil, err
	}
	defer logits.Release()
	c.n += n
	return ReadF32(t.D, logits)
}

// u32Bytes encodes ints as little-endian 32-bit words (labels' -100 as
// its two's complement, read as i32 by the kernels).
func u32Bytes(xs []int) []byte {
	out := make([]byte, 4*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint32(out[4*i:], uint32(int32(x)))
	}
	return out
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
