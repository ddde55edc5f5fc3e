package safetensors

import (
	"errors"
)

// ErrCorrupt is wrapped by every error that reports a malformed or truncated
// safetensors file or index.
var ErrCorrupt = errors.New("corrupt safetensors")

// DType is a safetensors element type, spelled as in the file header.
type DType string

// The element types of the safetensors format. Only F32, F16 and BF16 can be
// read with ReadF32 or written with WriteF32; the others are accepted in a
// header (ReadRaw works) but rejected when read as float.
const (
	F64     DType = "F64"
	F32     DType = "F32"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I64     DType = "I64"
	I32     DType = "I32"
	I16     DType = "I16"
	I8      DType = "I8"
	U64     DType = "U64"
	U32     DType = "U32"
	U16     DType = "U16"
	U8      DType = "U8"
	Bool    DType = "BOOL"
	F8E4M3  DType = "F8_E4M3"
	F8E5M2  DType = "F8_E5M2"
	F8E8M0  DType = "F8_E8M0"
	F4      DType = "F4" // packed, two per byte: not supported here (size rule differs)
	F6E2M3  DType = "F6_E2M3"
	F6E3M2  DType = "F6_E3M2"
	Complex DType = "C64"
)

var dtypeSizes = map[DType]int64{
	F64: 8, F32: 4, F16: 2, BF16: 2,
	I64: 8, I32: 4, I16: 2, I8: 1,
	U64: 8, U32: 4, U16: 2, U8: 1,
	Bool: 1, F8E4M3: 1, F8E5M2: 1, F8E8M0: 1, Complex: 8,
}

// Size returns the size of one element in bytes, or 0 for an unknown (or
// unsupported sub-byte) dtype.
func (d DType) Size() int64 { return dtypeSizes[d] }

// IsFloat reports whether d can be read with ReadF32 and written with WriteF32.
func (d DType) IsFloat() bool { return d == F32 || d == F16 || d == BF16 }

// TensorInfo describes one tensor of a safetensors file. Offset and Size are
// absolute byte positions in File.
type TensorInfo struct {
	Name   string
	DType  DType
	Shape  []int
	Offset int64
	Size   int64
	File   string
}

// NumElements returns the product of the shape (1 for a scalar).
func (ti TensorInfo) NumElements() int64 {
	n := int64(1)
	for _, d := range ti.Shape {
		n *= int64(d)
	}
	return n
}

// maxHeaderSize bounds the JSON header, as the reference implementation does.
const maxHeaderSize = 100 << 20

// chunkBytes is the size of the buffer used to stream tensor data.
const chunkBytes = 1 << 20
