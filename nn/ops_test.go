package nn

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/lomo-dev/lomo/gpu"
)

// TestMLPBackwardMemory: the backward of a SwiGLU MLP, down(silu(gate(x)) *
// up(x)), holds at most three N x F activations at a time (gate, up, and
// either their product or its gradient): the down projection's input goes
// before its input gradient is allocated, and the gate's and up's gradients
// are written over their values. Written naively the backward holds five
// (gate, up, the product's gradient, and new gradients of gate and up). F
// is large against everything else, so the other buffers cannot hide it.
func TestMLPBackwardMemory(t *testing.T) {
	const n, c, f, v = 4, 4, 256, 5
	r := rand.New(rand.NewPCG(1, 2))
	param := func(name string, rows, cols int) *Param {
		p, err := NewParam(dev, name, gpu.F32, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Release)
		w := make([]float32, rows*cols)
		for i := range w {
			w[i] = float32(r.NormFloat64()) * 0.3
		}
		if err := dev.Write(p.Buf, 0, EncodeF32(w, gpu.F32)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gate, up, down, head := param("gate", f, c), param("up", f, c), param("down", c, f), param("head", v, c)
	xv := make([]float32, n*c)
	for i := range xv {
		xv[i] = float32(r.NormFloat64())
	}
	x, err := FromF32(dev, gpu.TagActivation, gpu.F32, xv, n, c)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Release()
	labels, _ := dev.NewBuffer(gpu.TagScratch, 4*n)
	defer labels.Release()
	dev.Write(labels, 0, u32Bytes([]int{1, 2, 3, 4}))

	tape := NewTape(dev, true)
	var keep []*Tensor
	step := func(y *Tensor, err error) *Tensor {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, y)
		return y
	}
	g := step(tape.Linear(x, gate))
	u := step(tape.Linear(x, up))
	sw := step(tape.SwiGLU(g, u))
	dn := step(tape.Linear(sw, down))
	logits := step(tape.Linear(dn, head))
	loss, err := tape.CrossEntropy(logits, labels, LossOptions{GradScale: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer loss.Release()
	for _, k := range keep {
		k.Release()
	}
	if err := dev.Sync(); err != nil {
		t.Fatal(err)
	}
	nf := gpu.F32.Bytes(n * f)
	live := dev.Stats().Tag(gpu.TagActivation).Live
	if live < 3*nf {
		t.Fatalf("%d activation bytes live after the forward, less than gate, up and their product (%d)", live, 3*nf)
	}
	dev.ResetPeak()
	var got []string
	if err := tape.Backward(loss, func(p *Param, _ *gpu.Buffer) error { got = append(got, p.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Errorf("callbacks for %v, want 4 weights", got)
	}
	if peak := dev.Stats().Tag(gpu.TagActivation).Peak; peak >= 4*nf {
		t.Errorf("the backward's activation peak is %d bytes: %.2f N x F buffers, want fewer than 4", peak, float64(peak)/float64(nf))
	}
}

// TestSparseEmbeddingGradient: on a tape with RowGrads, an untied
// embedding's gradient comes as the batch's distinct rows (ascending),
// bit-identical to those rows of the dense gradient, whose other rows are
// zero; its buffer holds (tokens x C) f32 instead of (vocab x C). With
// HeadBlocks too, an untied head's gradient comes in blocks of vocabulary
// rows, in order, one block alive at a time, together bit-identical to the
// dense gradient; without, it comes whole (AdaLomo's case). A
// tied embedding (the head adds to its gradient) stays dense. Every other
// parameter's gradient is the dense tape's, bit for bit.
func TestSparseEmbeddingGradient(t *testing.T) {
	defer func(b int) { HeadGradBlockBytes = b }(HeadGradBlockBytes)
	HeadGradBlockBytes = 3 * 4 * toyConfig(false).HiddenSize // blocks of 3 rows, the last shorter
	for _, tc := range []struct{ tied, ckpt, blocks bool }{
		{false, false, true}, {false, true, true}, {true, false, true}, {true, true, true}, {false, true, false},
	} {
		tied, ckpt, blocks := tc.tied, tc.ckpt, tc.blocks
		m := newToy(t, tied)
		m.Checkpointing = ckpt
		in := toyBatch(t, m)
		dense := backward(t, m, in)
		got := map[string][]float32{}
		var rows *GradRows
		var gradBytes int64
		tape := NewTape(dev, true)
		tape.RowGrads, tape.HeadBlocks = true, blocks
		loss, err := m.Loss(tape, in, LossOptions{GradScale: 1 / float32(in.Count)})
		if err != nil {
			t.Fatal(err)
		}
		headBlocks := 0
		err = tape.Backward(loss, func(p *Param, g *gpu.Buffer) error {
			v, err := ReadBufferF32(dev, g, p.GradLen(), p.GradDType())
			if err != nil {
				return err
			}
			if p == m.Head && !tied && !blocks && p.GradRows() != nil {
				return fmt.Errorf("the head's gradient came by rows without HeadBlocks")
			}
			if p == m.Embed {
				if gr := p.GradRows(); gr != nil {
					if gr.Block {
						return fmt.Errorf("the embedding's rows came as a block")
					}
					r := *gr
					rows = &r
				}
				gradBytes = g.Size()
			}
			if p == m.Head && !tied && blocks {
				// Blocks of vocabulary rows, in order, whole rows each.
				gr := p.GradRows()
				if gr == nil || !gr.Block {
					return fmt.Errorf("the untied head's gradient is not in blocks: %+v", gr)
				}
				raw, err := dev.Read(gr.Rows, int64(4*gr.Off), int64(4*gr.N))
				if err != nil {
					return err
				}
				for i := 0; i < gr.N; i++ {
					if id := int(binary.LittleEndian.Uint32(raw[4*i:])); id != len(got[p.Name])/p.Cols() {
						return fmt.Errorf("head block row %d is vocabulary row %d, want %d", i, id, len(got[p.Name])/p.Cols())
					}
					got[p.Name] = append(got[p.Name], v[i*p.Cols():(i+1)*p.Cols()]...)
				}
				headBlocks++
				if live := dev.Stats().Tag(gpu.TagGrad).Live; live > g.Size() {
					return fmt.Errorf("%d grad bytes live at a head block of %d", live, g.Size())
				}
				return nil
			}
			got[p.Name] = v
			return nil
		})
		loss.Release()
		if err != nil {
			t.Fatal(err)
		}
		if want := (m.Cfg.VocabSize + 2) / 3; !tied && blocks && headBlocks != want {
			t.Errorf("the head's gradient came in %d blocks, want %d", headBlocks, want)
		}
		name := m.Embed.Name
		if tied {
			if rows != nil {
				t.Errorf("tied, checkpointing=%v: the embedding got a row-sparse gradient, onto which the head's would not fit", ckpt)
			}
		} else {
			if rows == nil {
				t.Fatalf("untied, checkpointing=%v: the embedding's gradient is dense", ckpt)
			}
			raw, err := dev.Read(rows.Rows, int64(4*rows.Off), int64(4*rows.N))
			if err != nil {
				t.Fatal(err)
			}
			c := m.Cfg.HiddenSize
			seen := map[int]bool{}
			prev := -1
			for r := 0; r < rows.N; r++ {
				id := int(binary.LittleEndian.Uint32(raw[4*r:]))
				if id <= prev {
					t.Fatalf("rows not ascending: %d after %d", id, prev)
				}
				prev = id
				seen[id] = true
				for j := 0; j < c; j++ {
					if a, b := got[name][r*c+j], dense.grads[name][id*c+j]; math.Float32bits(a) != math.Float32bits(b) {
						t.Fatalf("checkpointing=%v: row %d col %d: sparse %v, dense %v", ckpt, id, j, a, b)
					}
				}
			}
			for id := 0; id < m.Cfg.VocabSize; id++ {
				for j := 0; !seen[id] && j < c; j++ {
					if dense.grads[name][id*c+j] != 0 {
						t.Fatalf("row %d is not in the batch and has a dense gradient", id)
					}
				}
			}
			if want := 4 * int64(in.B*in.T*c); gradBytes != want {
				t.Errorf("row-sparse gradient buffer of %d bytes, want %d (tokens x C f32)", gradBytes, want)
			}
			delete(got, name)
		}
		for n, v := range got {
			if n == name && tied {
				continue
			}
			for i := range v {
				if math.Float32bits(v[i]) != math.Float32bits(dense.grads[n][i]) {
					t.Fatalf("%s[%d]: %v with RowGrads, %v without", n, i, v[i], dense.grads[n][i])
				}
			}
		}
	}
}

// TestSwiGLULinearAdd: the down projection with SwiGLU's product computed
// inside its matmuls (Tape.SwiGLULinearAdd) gives the loss and every
// weight's gradient of SwiGLU and then LinearAdd bit for bit, in f32, f16
// and bf16, with g's and u's gradients written over them and, where
// something else holds g, in buffers of their own; and its backward's
// activation peak is at least one N x F buffer (the product or its
// gradient) below theirs.
func TestSwiGLULinearAdd(t *testing.T) {
	const n, c, f, v = 6, 4, 256, 5
	for _, dt := range []gpu.DType{gpu.F32, gpu.F16, gpu.BF16} {
		if dt == gpu.F16 && !dev.Caps.F16 {
			t.Logf("adapter %q has no shader-f16: f16 case skipped (activations stay f32 there)", dev.Info.Name)
			continue
		}
		type result struct {
			loss  []float32
			grads map[string][]float32
			peak  int64
		}
		run := func(fused, hold bool) result {
			t.Helper()
			r := rand.New(rand.NewPCG(7, 8))
			param := func(name string, rows, cols int) *Param {
				p, err := NewParam(dev, name, dt, rows, cols)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(p.Release)
				w := make([]float32, rows*cols)
				for i := range w {
					w[i] = float32(r.NormFloat64()) * 0.3
				}
				if err := dev.Write(p.Buf, 0, EncodeF32(w, dt)); err != nil {
					t.Fatal(err)
				}
				return p
			}
			gate, up, down, head := param("gate", f, c), param("up", f, c), param("down", c, f), param("head", v, c)
			xv := make([]float32, n*c)
			for i := range xv {
				xv[i] = float32(r.NormFloat64())
			}
			x, err := FromF32(dev, gpu.TagActivation, dt, xv, n, c)
			if err != nil {
				t.Fatal(err)
			}
			defer x.Release()
			labels, _ := dev.NewBuffer(gpu.TagScratch, 4*n)
			defer labels.Release()
			dev.Write(labels, 0, u32Bytes([]int{1, 2, 3, 4, 0, 2}))

			tape := NewTape(dev, true)
			var keep []*Tensor
			step := func(y *Tensor, err error) *Tensor {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				keep = append(keep, y)
				return y
			}
			// The residual is the MLP's input, as in a LLaMA block.
			g := step(tape.Linear(x, gate))
			u := step(tape.Linear(x, up))
			var y *Tensor
			if fused {
				y = step(tape.SwiGLULinearAdd(x, g, u, down))
			} else {
				sw := step(tape.SwiGLU(g, u))
				y = step(tape.LinearAdd(x, sw, down))
			}
			logits := step(tape.LinearF32(y, head))
			loss, err := tape.CrossEntropy(logits, labels, LossOptions{GradScale: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer loss.Release()
			for _, k := range keep {
				if !(hold && k == g) {
					k.Release()
				}
			}
			if hold {
				defer g.Release() // g held past the backward: not written over
			}
			var res result
			if res.loss, err = ReadBufferF32(dev, loss.Buf, n, gpu.F32); err != nil {
				t.Fatal(err)
			}
			dev.ResetPeak()
			res.grads = map[string][]float32{}
			if err := tape.Backward(loss, func(p *Param, gb *gpu.Buffer) error {
				g, err := ReadBufferF32(dev, gb, p.Len(), p.GradDType())
				res.grads[p.Name] = g
				return err
			}); err != nil {
				t.Fatal(err)
			}
			res.peak = dev.Stats().Tag(gpu.TagActivation).Peak
			return res
		}
		sep := run(false, false)
		for _, hold := range []bool{false, true} {
			got := run(true, hold)
			what := fmt.Sprintf("%v, g held elsewhere %v", dt, hold)
			sameF32Bits(t, what+": loss", got.loss, sep.loss)
			for _, name := range []string{"gate", "up", "down", "head"} {
				if sep.grads[name] == nil || got.grads[name] == nil {
					t.Fatalf("%s: no gradient of %s", what, name)
				}
				sameF32Bits(t, what+": gradient of "+name, got.grads[name], sep.grads[name])
			}
			if nf := dt.Bytes(n * f); !hold && sep.peak-got.peak < nf {
				t.Errorf("%s: backward's activation peak %d bytes fused, %d separate: want at least one N x F (%d) less", what, got.peak, sep.peak, nf)
			}
		}
	}
}

// sameF32Bits fails unless got and want are the same floats, bit for bit.
func sameF32Bits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d is %v, want %v (bits %08x, %08x)", what, i, got[i], want[i], math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
}

// TestHeadVocabBlocks: with more rows than one chunk of the LM head's
// logits, an untied head's gradient still comes in blocks of vocabulary
// rows on a tape with HeadBlocks (Tape.headVocabBlocks: each block over the
// chunks of rows, from the forward's log-sum-exps): in order, one block
// alive at a time, together bit-identical to the dense gradient, with the
// same loss; the head's input gradient is then summed over the blocks (in
// f32 for 16-bit activations), so the other weights' gradients match the
// dense tape's to rounding, in f32, bf16 and f16.
func TestHeadVocabBlocks(t *testing.T) {
	defer func(b, c int) { HeadGradBlockBytes, headChunkBytes = b, c }(HeadGradBlockBytes, headChunkBytes)
	cfg := toyConfig(false)
	headChunkBytes = 5 * 4 * cfg.VocabSize // chunks of 5 of the batch's 24 rows
	for _, dt := range []gpu.DType{gpu.F32, gpu.BF16, gpu.F16} {
		if dt == gpu.F16 && !dev.Caps.F16 {
			t.Logf("adapter %q has no shader-f16: f16 case skipped (activations stay f32 there)", dev.Info.Name)
			continue
		}
		HeadGradBlockBytes = 3 * int(dt.Bytes(cfg.HiddenSize)) // blocks of 3 rows, the last shorter
		if dt == gpu.F32 {
			HeadGradBlockBytes = 3 * 4 * cfg.HiddenSize
		}
		for _, ckpt := range []bool{false, true} {
			m, err := NewLlama(dev, toyConfig(false), dt)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Release)
			if err := m.InitRandom(11, 0.3); err != nil {
				t.Fatal(err)
			}
			m.Checkpointing = ckpt
			// 24 rows: more than one chunk, and than C, below which all
			// rows' logits would take one chunk (the head's row blocks).
			in := toyBatchOf(t, m, 3, 8)
			dense := backward(t, m, in)
			denseLoss := lossValue(t, m, in)

			got := map[string][]float32{}
			tape := NewTape(dev, true)
			tape.RowGrads, tape.HeadBlocks = true, true
			loss, err := m.Loss(tape, in, LossOptions{GradScale: 1 / float32(in.Count)})
			if err != nil {
				t.Fatal(err)
			}
			headBlocks := 0
			err = tape.Backward(loss, func(p *Param, g *gpu.Buffer) error {
				v, err := ReadBufferF32(dev, g, p.GradLen(), p.GradDType())
				if err != nil {
					return err
				}
				if p != m.Head {
					if p.GradRows() == nil {
						got[p.Name] = v
					}
					return nil
				}
				gr := p.GradRows()
				if gr == nil || !gr.Block {
					return fmt.Errorf("the head's gradient is not in blocks: %+v", gr)
				}
				if gr.Off*p.Cols() != len(got[p.Name]) {
					return fmt.Errorf("head block from row %d, want %d", gr.Off, len(got[p.Name])/p.Cols())
				}
				got[p.Name] = append(got[p.Name], v...)
				headBlocks++
				if live := dev.Stats().Tag(gpu.TagGrad).Live; live > g.Size() {
					return fmt.Errorf("%d grad bytes live at a head block of %d", live, g.Size())
				}
				return nil
			})
			loss.Release()
			if err != nil {
				t.Fatal(err)
			}
			what := fmt.Sprintf("%v, checkpointing %v", dt, ckpt)
			if want := (cfg.VocabSize + 2) / 3; headBlocks != want {
				t.Errorf("%s: the head's gradient came in %d blocks, want %d", what, headBlocks, want)
			}
			if l := lossValue(t, m, in); math.Float64bits(l) != math.Float64bits(denseLoss) {
				t.Errorf("%s: loss %v after, %v before (the callbacks change nothing)", what, l, denseLoss)
			}
			sameF32Bits(t, what+": the head's gradient", got[m.Head.Name], dense.grads[m.Head.Name])
			// Rounding: f32 sums in another order; a 16-bit input gradient
			// of the head may round to its neighbour.
			tl := 1e-5
			if dt != gpu.F32 {
				tl = 1e-2
			}
			for name, g := range got {
				if name == m.Head.Name {
					continue
				}
				if e := relL2(g, dense.grads[name]); e > tl {
					t.Errorf("%s: %s's gradient is %.2g off the dense tape's (relative L2), want at most %g", what, name, e, tl)
				}
			}
		}
	}
}

// toyBatchOf is toyBatch with b rows of tt tokens, row i left-padded by i.
func toyBatchOf(t *testing.T, m *Llama, b, tt int) *Inputs {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	ids, labels, start := make([]int, b*tt), make([]int, b*tt), make([]int, b)
	for row := 0; row < b; row++ {
		start[row] = row
		for j := 0; j < tt; j++ {
			i := row*tt + j
			ids[i], labels[i] = 3+r.IntN(m.Cfg.VocabSize-3), IgnoreIndex
			if j < start[row] {
				ids[i] = 0 // padding
			}
		}
		for j := start[row]; j+1 < tt; j++ {
			labels[row*tt+j] = ids[row*tt+j+1]
		}
	}
	in, err := m.NewInputs(b, tt, ids, labels, start)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Release)
	return in
}

// relL2 is |got - want| / |want| (L2 norms).
func relL2(got, want []float32) float64 {
	var d, w float64
	for i := range want {
		x := float64(got[i]) - float64(want[i])
		d += x * x
		w += float64(want[i]) * float64(want[i])
	}
	if len(got) != len(want) {
		return math.Inf(1)
	}
	return math.Sqrt(d / w)
}
