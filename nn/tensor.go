package nn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/internal/half"
)

// ErrShape is wrapped by every shape mismatch.
var ErrShape = errors.New("nn: shape mismatch")

// Tensor is a dense row-major array on the device. Parameters are f32 or
// f16; activations follow the model (ActivationDType). A Tensor is reference counted: ops that save it for
// backward retain it, and its buffer returns to the device when the last
// holder releases it.
type Tensor struct {
	Buf   *gpu.Buffer
	Shape []int
	DType gpu.DType

	refs      int
	grad      *gpu.Buffer // gradient (GradDType), same element count, while backward runs
	needsGrad bool
	param     *Param
	borrowed  bool // Buf belongs to another tensor (a checkpoint's leaf)
}

// dropGrad frees the gradient.
func (t *Tensor) dropGrad() {
	if t.grad != nil {
		t.grad.Release()
	}
	t.grad = nil
}

// GradDType is the dtype of the tensor's gradient: an activation's is its
// own dtype; a parameter's is f32 unless its model set it to f16
// (NewLlama: the matrices of f16 models on adapters with shader-f16, as
// the reference keeps fp16 gradients). Arithmetic is f32 either way.
func (t *Tensor) GradDType() gpu.DType {
	if t.param != nil {
		return t.param.gradDType
	}
	return t.DType
}

// Len is the number of elements.
func (t *Tensor) Len() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Retain adds a holder.
func (t *Tensor) Retain() *Tensor {
	if t != nil {
		t.refs++
	}
	return t
}

// Release drops a holder; the last one frees the buffer.
func (t *Tensor) Release() {
	if t == nil || t.refs <= 0 {
		return
	}
	t.refs--
	if t.refs == 0 {
		// The gradient is not freed here: the op that produced t still
		// needs it in backward; Tape.run frees it after that op.
		t.Buf.Release()
	}
}

// ownedOnlyBy reports whether x's values are held by one holder only (the
// op asking) and x has no gradient yet, so that the holder may write x's
// gradient over its values (becomeGrad).
func ownedOnlyBy(x *Tensor) bool {
	return x.refs == 1 && x.grad == nil && x.param == nil && !x.borrowed
}

// becomeGrad hands x's buffer, which now holds x's gradient, to x.grad: x
// has no values any more and its holder's Release is a no-op.
func (t *Tensor) becomeGrad() {
	t.grad, t.Buf = t.Buf, nil
	t.refs = 0
}

func shapeString(s []int) string { return fmt.Sprint(s) }

// NewTensor allocates an uninitialised tensor with one holder.
func NewTensor(d *gpu.Device, tag gpu.Tag, dt gpu.DType, shape ...int) (*Tensor, error) {
	t := &Tensor{Shape: append([]int(nil), shape...), DType: dt, refs: 1}
	b, err := d.NewBuffer(tag, dt.Bytes(t.Len()))
	if err != nil {
		return nil, err
	}
	t.Buf = b
	return t, nil
}

// FromF32 uploads v as a tensor of dtype dt (f16 and bf16 round to nearest
// even).
func FromF32(d *gpu.Device, tag gpu.Tag, dt gpu.DType, v []float32, shape ...int) (*Tensor, error) {
	t, err := NewTensor(d, tag, dt, shape...)
	if err != nil {
		return nil, err
	}
	if len(v) != t.Len() {
		t.Release()
		return nil, fmt.Errorf("%w: %d values for shape %v", ErrShape, len(v), shape)
	}
	if err := d.Write(t.Buf, 0, EncodeF32(v, dt)); err != nil {
		t.Release()
		return nil, err
	}
	return t, nil
}

// EncodeF32 packs v in dtype dt, little-endian.
func EncodeF32(v []float32, dt gpu.DType) []byte {
	b := make([]byte, dt.Bytes(len(v)))
	encodeF32(b, v, dt)
	return b
}

// encodeF32 is EncodeF32 into b, which holds at least len(v) values of dt.
func encodeF32(b []byte, v []float32, dt gpu.DType) {
	for i, x := range v {
		switch dt {
		case gpu.F16:
			binary.LittleEndian.PutUint16(b[2*i:], half.F32ToF16(x))
		case gpu.BF16:
			binary.LittleEndian.PutUint16(b[2*i:], half.F32ToBF16(x))
		default:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
	}
}

// DecodeF32 unpacks n values of dtype dt.
func DecodeF32(b []byte, n int, dt gpu.DType) []float32 {
	v := make([]float32, n)
	for i := range v {
		switch dt {
		case gpu.F16:
			v[i] = half.F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		case gpu.BF16:
			v[i] = half.BF16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		default:
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return v
}

// ReadF32 reads a tensor back as float32 (after all recorded work).
func ReadF32(d *gpu.Device, t *Tensor) ([]float32, error) {
	return ReadBufferF32(d, t.Buf, t.Len(), t.DType)
}

// ReadBufferF32 reads n elements of dtype dt from b.
func ReadBufferF32(d *gpu.Device, b *gpu.Buffer, n int, dt gpu.DType) ([]float32, error) {
	raw, err := d.Read(b, 0, dt.Bytes(n))
	if err != nil {
		return nil, err
	}
	return DecodeF32(raw, n, dt), nil
}

// Param is a trainable (or frozen) model weight.
type Param struct {
	*Tensor
	Name   string
	Frozen bool
	// LoRA marks the matrices of a LoRA adapter (Llama.AddLoRA), which
	// optimizers train with AdamW (optim.Config.LoRA).
	LoRA bool

	gradDType gpu.DType // the gradient's dtype (Tensor.GradDType); f32 by default
	gradRows  *GradRows // set while the gradient is row-sparse
}

// GradRows describes a gradient delivered by rows (Tape.RowGrads,
// Tape.HeadBlocks): the
// gradient buffer a GradFunc receives holds N rows of the table's Cols(),
// the gradients of table rows Rows[Off..Off+N-1] (u32, distinct,
// ascending). For an embedding the other rows' gradients are zero; an LM
// head's other rows come in the other calls (Block).
type GradRows struct {
	Rows   *gpu.Buffer
	Off, N int
	// Block says that the other rows come in other calls, each row once
	// (an LM head's blocks, Tape.HeadBlocks); false, that their gradients
	// are zero (an embedding's, Tape.RowGrads).
	Block bool
}

// GradRows returns the rows p's gradient holds during its GradFunc call,
// nil when the gradient is whole (every parameter but an embedding or an
// untied head on a tape with RowGrads or HeadBlocks).
func (p *Param) GradRows() *GradRows { return p.gradRows }

// GradLen is the number of elements of p's gradient during its GradFunc
// call: p.Len(), or those of the rows it holds (GradRows).
func (p *Param) GradLen() int {
	if p.gradRows != nil {
		return p.gradRows.N * p.Cols()
	}
	return p.Len()
}

// NewParam allocates a parameter tensor (tag param).
func NewParam(d *gpu.Device, name string, dt gpu.DType, shape ...int) (*Param, error) {
	// Kernels bind a parameter whole, so it must fit one buffer and one
	// storage binding: say which tensor does not, and the limit, before
	// anything is allocated.
	n := int64(1)
	for _, s := range shape {
		n *= int64(s)
	}
	lim := d.Limits()
	bytes := dt.Bytes(int(n))
	for _, l := range []struct {
		name  string
		limit uint64
	}{{"max buffer size", lim.MaxBufferSize}, {"max storage buffer binding size", lim.MaxStorageBufferBindingSize}} {
		if l.limit > 0 && uint64(bytes) > l.limit {
			return nil, fmt.Errorf("nn: tensor %s %v (%v) is %d bytes, larger than this device's %s of %d bytes", name, shape, dt, bytes, l.name, l.limit)
		}
	}
	t, err := NewTensor(d, gpu.TagParam, dt, shape...)
	if err != nil {
		return nil, fmt.Errorf("nn: param %s: %w", name, err)
	}
	p := &Param{Tensor: t, Name: name}
	t.param = p
	t.needsGrad = true
	return p, nil
}

// Rows and Cols view a parameter as a matrix (a vector is 1 x n).
func (p *Param) Rows() int {
	if len(p.Shape) < 2 {
		return 1
	}
	return p.Shape[0]
}

// Cols is the size of the last dimension.
func (p *Param) Cols() int { return p.Shape[len(p.Shape)-1] }
