package nn

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/wgsl"
)

// GradFunc receives a parameter's complete gradient (of dtype
// p.Tensor.GradDType(): f32, or f16 for the matrices of f16 models; same
// element count as the parameter, tag grad). The gradient buffer is released when
// it returns, so an optimizer must use it within the call (recording
// dispatches that read it is enough: see gpu.Buffer.Release). On a tape
// with RowGrads an embedding's gradient may come by rows instead, once, as
// the batch's rows (Param.GradRows, Param.GradLen), and with HeadBlocks
// an untied LM head's in blocks of rows, one call per block.
type GradFunc func(p *Param, grad *gpu.Buffer) error

// Tape records the backward of the ops run on it. A tape without grad runs
// the forward only (evaluation, generation, and the forward of a
// checkpointed block).
type Tape struct {
	D    *gpu.Device
	grad bool
	ops  []*op
	// uses counts, per parameter, the recorded uses whose backward has not
	// run yet; the gradient is complete when it drops to zero. Checkpointed
	// blocks share their parent's counter.
	uses      map[*Param]int
	countUses bool
	deferred  map[*Param][]deferredGrad
	callback  GradFunc // set while Backward runs; checkpointed blocks call it too
	// RowGrads lets an embedding looked up from a batch's Inputs deliver
	// its gradient by rows (Param.GradRows), for optimizers that apply a
	// gradient given that way (LOMO; AdaLomo, which reads the absent rows'
	// gradients as the zeros they are): the batch's rows only, a
	// (tokens x C) buffer instead of (vocab x C), where nothing else adds
	// to its gradient (a tied head does).
	RowGrads bool
	// HeadBlocks lets an untied LM head deliver its gradient in blocks of
	// vocabulary rows, one callback per block (GradRows.Block), each row in
	// one block, for optimizers that update each element from its own
	// gradient (LOMO): no (V x C) gradient then exists.
	HeadBlocks bool
	// KeepForward says that the tape will run BackwardKeep and then
	// Backward (an optimizer's norm pass and update on one forward): a
	// checkpointed model then records its last layer's output as
	// recomputed (CheckpointTail), so that the tape is Rerunnable at the
	// memory of a single backward.
	KeepForward bool
	// keepSaved (this tape) and keepDeferred (this tape and the recompute
	// tapes of its checkpoints) are set while BackwardKeep runs: what the
	// ops saved and the deferred gradients' inputs stay for the next
	// Backward.
	keepSaved, keepDeferred bool
}

type op struct {
	name     string
	backward func() error
	release  func()
	outputs  []*Tensor
	params   []*Param
	// rerun: backward only reads what the op saved (release frees it), so
	// it can run again (BackwardKeep). Ops that free or overwrite saved
	// tensors during backward to save memory are not.
	rerun bool
}

// deferredGrad adds a gradient contribution to p just before p's callback,
// for ops that recompute it instead of keeping it alive (the tied LM head).
type deferredGrad struct {
	add     func(dst *gpu.Buffer, accumulate bool) error
	release func()
}

// NewTape returns a tape; with grad false it records nothing.
func NewTape(d *gpu.Device, grad bool) *Tape {
	return &Tape{D: d, grad: grad, countUses: grad, uses: map[*Param]int{}, deferred: map[*Param][]deferredGrad{}}
}

// Grad reports whether the tape records backward.
func (t *Tape) Grad() bool { return t.grad }

// needs reports whether an op with these inputs must record a backward.
func (t *Tape) needs(xs ...*Tensor) bool {
	if !t.grad {
		return false
	}
	for _, x := range xs {
		if x != nil && x.needsGrad && !(x.param != nil && x.param.Frozen) {
			return true
		}
	}
	return false
}

// record appends an op. Its params are counted as used; release runs after
// its backward, or when the tape is released without one.
func (t *Tape) record(o *op) {
	ps := o.params[:0]
	for _, p := range o.params {
		if p.Frozen {
			continue
		}
		ps = append(ps, p)
		if t.countUses {
			t.uses[p]++
		}
	}
	o.params = ps
	t.ops = append(t.ops, o)
	for _, y := range o.outputs {
		y.needsGrad = true
	}
}

// countParams counts param uses on a tape that records no backward (the
// forward of a checkpointed block), so that the parent knows a gradient is
// still to come.
func (t *Tape) countParams(ps ...*Param) {
	if !t.countUses {
		return
	}
	for _, p := range ps {
		if !p.Frozen {
			t.uses[p]++
		}
	}
}

// Release frees what the recorded ops saved, without running backward.
func (t *Tape) Release() {
	for i := len(t.ops) - 1; i >= 0; i-- {
		if t.ops[i].release != nil {
			t.ops[i].release()
		}
		for _, y := range t.ops[i].outputs {
			y.dropGrad()
		}
	}
	t.ops = nil
	for _, ds := range t.deferred {
		for _, dg := range ds {
			dg.release()
		}
	}
	t.deferred = map[*Param][]deferredGrad{}
}

// gradOf returns x's gradient buffer to write into, allocating it if absent,
// and whether it already holds a partial sum to accumulate onto.
func (t *Tape) gradOf(x *Tensor) (*gpu.Buffer, bool, error) {
	if x.grad != nil {
		return x.grad, true, nil
	}
	tag := gpu.TagActivation
	if x.param != nil {
		tag = gpu.TagGrad
	}
	b, err := t.D.NewBuffer(tag, x.GradDType().Bytes(x.Len()))
	if err != nil {
		return nil, false, err
	}
	x.grad = b
	return b, false, nil
}

// addGrad writes a gradient contribution into x.grad with a kernel that can
// only overwrite: directly when x has no gradient yet, else through a
// temporary and an axpy.
func (t *Tape) addGrad(x *Tensor, write func(dst *gpu.Buffer) error) error {
	if x.grad == nil {
		dst, _, err := t.gradOf(x)
		if err != nil {
			return err
		}
		return write(dst)
	}
	tmp, err := t.D.NewBuffer(gpu.TagActivation, x.GradDType().Bytes(x.Len()))
	if err != nil {
		return err
	}
	defer tmp.Release() // recorded dispatches keep it valid
	if err := write(tmp); err != nil {
		return err
	}
	return wgsl.Axpy(t.D, x.grad, tmp, x.Len(), x.GradDType(), 1, 1)
}

// DeferGrad registers a contribution to p's gradient that is computed when
// p's last recorded use has run its backward, just before p's callback. p
// must have at least one recorded use.
func (t *Tape) DeferGrad(p *Param, add func(dst *gpu.Buffer, accumulate bool) error, release func()) {
	t.deferred[p] = append(t.deferred[p], deferredGrad{add, release})
}

// ErrNotLoss: Backward was called on a tensor that is not a loss.
var ErrNotLoss = errors.New("nn: backward from a tensor that is not a loss (use CrossEntropy)")

// Rerunnable reports whether BackwardKeep can run on the tape: every op
// recorded on it is a checkpoint, which only reads its saved input (the
// block's ops are recorded again in each recompute). A checkpointed
// model's tape is, with KeepForward, an untied head and its last layer on
// the head's device; a tape holding a layer's own ops is not (they free
// and overwrite activations during backward: Linear, SwiGLU), nor one
// whose last layer's output, the head's input, would be kept through the
// first backward (the peak would grow by it).
func (t *Tape) Rerunnable() bool {
	if !t.grad || len(t.ops) == 0 {
		return false
	}
	for _, o := range t.ops {
		if !o.rerun {
			return false
		}
	}
	return true
}

// BackwardKeep is Backward that leaves the tape as the forward left it,
// saved tensors included, so that Backward can run from the same loss
// again: the same gradients, without a second forward. LOMO's
// gradient-norm pass uses it (optim). The tape must be Rerunnable. On an
// error the tape is released.
func (t *Tape) BackwardKeep(loss *Tensor, fn GradFunc) error {
	if !t.Rerunnable() {
		t.Release()
		return fmt.Errorf("nn: backward twice on a tape whose ops free what they saved")
	}
	ops := slices.Clone(t.ops)
	uses := maps.Clone(t.uses)
	deferred := make(map[*Param][]deferredGrad, len(t.deferred))
	for p, d := range t.deferred {
		deferred[p] = slices.Clone(d)
	}
	t.keepSaved, t.keepDeferred = true, true
	err := t.backward(loss, fn)
	t.keepSaved, t.keepDeferred = false, false
	t.ops, t.uses, t.deferred = ops, uses, deferred
	if err != nil {
		t.Release()
	}
	return err
}

// Backward runs the recorded backward from loss, calling fn once per
// trainable parameter with its complete gradient, in reverse order of use.
// The tape is empty afterwards.
func (t *Tape) Backward(loss *Tensor, fn GradFunc) error {
	err := t.backward(loss, fn)
	if err != nil {
		t.Release()
	}
	return err
}

// backward is Backward without the release on an error.
func (t *Tape) backward(loss *Tensor, fn GradFunc) error {
	if !t.grad {
		return fmt.Errorf("nn: backward on a tape without grad")
	}
	if len(t.ops) == 0 || !loss.needsGrad || t.ops[len(t.ops)-1].outputs[0] != loss {
		return ErrNotLoss
	}
	t.callback = fn
	err := t.run(fn)
	t.callback = nil
	if err == nil && len(t.uses) > 0 {
		// A parameter was used but no gradient reached its last use: the
		// contract (one callback per trainable parameter) would silently
		// break, so say which.
		var names []string
		for p := range t.uses {
			names = append(names, p.Name)
		}
		sort.Strings(names)
		err = fmt.Errorf("nn: no gradient reached %s", strings.Join(names, ", "))
		t.uses = map[*Param]int{}
	}
	return err
}

// run executes the recorded ops' backward in reverse order.
func (t *Tape) run(fn GradFunc) error {
	for len(t.ops) > 0 {
		o := t.ops[len(t.ops)-1]
		t.ops = t.ops[:len(t.ops)-1]
		err := o.backward()
		if o.release != nil && !t.keepSaved {
			o.release()
		}
		// Every consumer of an output ran its backward before this op did,
		// so the outputs' gradients are spent: free them here.
		for _, y := range o.outputs {
			y.dropGrad()
		}
		if err != nil {
			return fmt.Errorf("nn: backward of %s: %w", o.name, err)
		}
		for _, p := range o.params {
			if err := t.used(p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// used marks one use of p as done; on the last one p's gradient is complete.
func (t *Tape) used(p *Param, fn GradFunc) error {
	t.uses[p]--
	if t.uses[p] > 0 {
		return nil
	}
	delete(t.uses, p)
	for _, dg := range t.deferred[p] {
		dst, acc, err := t.gradOf(p.Tensor)
		if err == nil {
			err = dg.add(dst, acc)
		}
		if !t.keepDeferred {
			dg.release()
		}
		if err != nil {
			return fmt.Errorf("nn: deferred gradient of %s: %w", p.Name, err)
		}
	}
	delete(t.deferred, p)
	if p.grad == nil {
		return fmt.Errorf("nn: parameter %s has no gradient after its last use", p.Name)
	}
	err := fn(p, p.grad)
	// The gradient is freed as soon as the callback has used it: under LOMO
	// at most about one parameter's gradient is alive at any time.
	p.grad.Release()
	p.grad = nil
	p.gradRows = nil
	if err != nil {
		return fmt.Errorf("nn: gradient callback for %s: %w", p.Name, err)
	}
	return nil
}

// Checkpoint runs block(x) without keeping its activations; backward
// recomputes the block from x (saved) and runs the block's own backward.
// The block must be a pure function of x and parameters. x may be nil for a
// block that computes its input itself (the embedding lookup of the first
// layer): then nothing at all is saved.
func (t *Tape) Checkpoint(name string, x *Tensor, block func(t *Tape, x *Tensor) (*Tensor, error)) (*Tensor, error) {
	// The forward records nothing but counts parameter uses for the parent.
	inner := &Tape{D: t.D, grad: false, countUses: t.grad && t.countUses, uses: t.uses, deferred: t.deferred, RowGrads: t.RowGrads, HeadBlocks: t.HeadBlocks}
	y, err := block(inner, x)
	if err != nil {
		return nil, err
	}
	if !t.grad {
		return y, nil
	}
	x.Retain() // nil-safe
	// Rerunnable: the recompute reads x and records the block's ops afresh.
	o := &op{name: "checkpoint " + name, outputs: []*Tensor{y}, release: x.Release, rerun: true}
	o.backward = func() error {
		// Recompute with grad, on a leaf that shares x's buffer, without
		// counting the parameter uses again (the forward counted them).
		sub := t.recomputeTape()
		var leaf *Tensor
		if x != nil {
			leaf = leafOf(x, x.needsGrad)
		}
		y2, err := block(sub, leaf)
		if err != nil {
			sub.Release()
			return err
		}
		if y.grad == nil {
			sub.Release()
			y2.Release()
			return nil
		}
		y2.grad, y.grad = y.grad, nil // hand the output gradient to the recomputed graph
		// Only y2's gradient is needed from here on: its values go now
		// unless an op of the block saved them for its backward.
		y2.Release()
		err = sub.run(sub.callback)
		if y2.grad != nil {
			// No recorded op produced y2 (nothing in the block needs a
			// gradient: frozen weights on an input without one), so no
			// op freed its gradient.
			y2.grad.Release()
			y2.grad = nil
		}
		if err != nil {
			sub.Release()
			return err
		}
		if leaf == nil {
			return nil
		}
		return t.passGrad(x, leaf)
	}
	t.ops = append(t.ops, o)
	y.needsGrad = true
	return y, nil
}

// recomputeTape is the tape a checkpoint's backward records its block's
// recompute on: with grad, sharing the parent's use counts, deferred
// gradients and callback, without counting the uses again (the forward
// counted them).
func (t *Tape) recomputeTape() *Tape {
	return &Tape{D: t.D, grad: true, countUses: false, uses: t.uses, deferred: t.deferred, callback: t.callback, RowGrads: t.RowGrads, HeadBlocks: t.HeadBlocks, keepDeferred: t.keepDeferred}
}

// leafOf is a recompute's input: x's buffer, borrowed.
func leafOf(x *Tensor, needsGrad bool) *Tensor {
	return &Tensor{Buf: x.Buf, Shape: x.Shape, DType: x.DType, refs: 1, needsGrad: needsGrad, borrowed: true}
}

// passGrad gives x the gradient its recompute's leaf received (moved if x
// has none, else added), and frees what is left of it.
func (t *Tape) passGrad(x, leaf *Tensor) error {
	defer leaf.dropGrad()
	if leaf.grad == nil || !x.needsGrad {
		return nil
	}
	if x.grad == nil {
		x.grad, leaf.grad = leaf.grad, nil
		return nil
	}
	return wgsl.Axpy(t.D, x.grad, leaf.grad, x.Len(), x.GradDType(), 1, 1)
}

// CheckpointTail is Checkpoint for the last block of a graph, whose output
// is the loss (its backward needs no incoming gradient), on an input y
// that is itself recomputed from x: the op saves x, not y, and its
// backward recomputes y = input(x), recording nothing, before recomputing
// the block. y is the output of the checkpoint of input on x, which
// receives y's gradient. For a tape run twice (BackwardKeep): y need not be
// kept from one backward to the next, only x, a checkpoint alive at the
// start of either anyway. The caller may release y once this returns.
func (t *Tape) CheckpointTail(name string, x, y *Tensor, input func(t *Tape, x *Tensor) (*Tensor, error), block func(t *Tape, y *Tensor) (*Tensor, error)) (*Tensor, error) {
	inner := &Tape{D: t.D, grad: false, countUses: t.grad && t.countUses, uses: t.uses, deferred: t.deferred, RowGrads: t.RowGrads, HeadBlocks: t.HeadBlocks}
	loss, err := block(inner, y)
	if err != nil {
		return nil, err
	}
	if !t.grad {
		return loss, nil
	}
	x.Retain()
	o := &op{name: "checkpoint " + name, outputs: []*Tensor{loss}, release: x.Release, rerun: true}
	o.backward = func() error {
		// y again, with no ops recorded and no uses counted: input's
		// parameters are counted by y's own checkpoint.
		yv, err := input(NewTape(t.D, false), x)
		if err != nil {
			return err
		}
		defer yv.Release()
		sub := t.recomputeTape()
		leaf := leafOf(yv, y.needsGrad)
		l2, err := block(sub, leaf)
		if err != nil {
			sub.Release()
			return err
		}
		// The block's loss op reads its losses in backward: l2 lives
		// until the block's backward has run.
		err = sub.run(sub.callback)
		l2.Release()
		if err != nil {
			sub.Release()
			return err
		}
		return t.passGrad(y, leaf)
	}
	t.ops = append(t.ops, o)
	loss.needsGrad = true
	return loss, nil
}
