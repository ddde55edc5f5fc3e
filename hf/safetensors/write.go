package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lomo-dev/lomo/internal/half"
)

// Writer writes a safetensors file tensor by tensor. The data goes
// to a temporary file in the destination folder, which Close renames into
// place; Abort, or any failure, removes it.
type Writer struct {
	path    string
	tmp     *os.File
	infos   map[string]TensorInfo // Offset absolute in the file
	written map[string]bool
	err     error // sticky failure
	done    bool
}

// Create starts writing a safetensors file at path with the given
// tensors (names, dtypes and shapes; data is laid out contiguously in this
// order) and metadata ("format": "pt" is added unless given).
func Create(path string, infos []TensorInfo, metadata map[string]string) (*Writer, error) {
	meta := map[string]string{"format": "pt"}
	for k, v := range metadata {
		meta[k] = v
	}
	var hdr bytes.Buffer
	hdr.WriteString(`{"__metadata__":`)
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	hdr.Write(mb)
	w := &Writer{path: path, infos: map[string]TensorInfo{}, written: map[string]bool{}}
	var off int64
	for _, ti := range infos {
		if ti.Name == "" || ti.Name == "__metadata__" || !utf8.ValidString(ti.Name) {
			return nil, fmt.Errorf("safetensors: %s: invalid tensor name %q", path, ti.Name)
		}
		if _, dup := w.infos[ti.Name]; dup {
			return nil, fmt.Errorf("safetensors: %s: duplicate tensor %q", path, ti.Name)
		}
		esize := ti.DType.Size()
		if esize == 0 {
			return nil, fmt.Errorf("safetensors: %s: tensor %q: unknown dtype %q", path, ti.Name, string(ti.DType))
		}
		n := esize
		for _, d := range ti.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors: %s: tensor %q: negative dimension in shape %v", path, ti.Name, ti.Shape)
			}
			if d != 0 && n > math.MaxInt64/int64(d) {
				return nil, fmt.Errorf("safetensors: %s: tensor %q: shape %v overflows", path, ti.Name, ti.Shape)
			}
			n *= int64(d)
		}
		shape := ti.Shape
		if shape == nil {
			shape = []int{}
		}
		nb, _ := json.Marshal(ti.Name)
		sb, _ := json.Marshal(shape)
		fmt.Fprintf(&hdr, `,%s:{"dtype":%s,"shape":%s,"data_offsets":[%d,%d]}`,
			nb, strconv.Quote(string(ti.DType)), sb, off, off+n)
		w.infos[ti.Name] = TensorInfo{Name: ti.Name, DType: ti.DType, Shape: append([]int{}, shape...), Offset: off, Size: n, File: path}
		off += n
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	dataStart := int64(8 + hdr.Len())
	for name, ti := range w.infos {
		ti.Offset += dataStart
		w.infos[name] = ti
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	w.tmp = tmp
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(hdr.Len()))
	if _, err := tmp.Write(lenBuf[:]); err != nil {
		w.fail(err)
		return nil, w.err
	}
	if _, err := tmp.Write(hdr.Bytes()); err != nil {
		w.fail(err)
		return nil, w.err
	}
	// Size the file so that tensors may be written in any order.
	if err := tmp.Truncate(dataStart + off); err != nil {
		w.fail(err)
		return nil, w.err
	}
	return w, nil
}

// fail records the first error and removes the temporary file.
func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("safetensors: writing %s: %w", w.path, err)
	}
	if w.tmp != nil {
		name := w.tmp.Name()
		w.tmp.Close()
		os.Remove(name)
		w.tmp = nil
	}
}

func (w *Writer) check(name string) (TensorInfo, error) {
	if w.err != nil {
		return TensorInfo{}, w.err
	}
	if w.done {
		return TensorInfo{}, fmt.Errorf("safetensors: writing %s: writer is closed", w.path)
	}
	ti, ok := w.infos[name]
	if !ok {
		return TensorInfo{}, fmt.Errorf("safetensors: writing %s: tensor %q was not declared", w.path, name)
	}
	if w.written[name] {
		return TensorInfo{}, fmt.Errorf("safetensors: writing %s: tensor %q written twice", w.path, name)
	}
	return ti, nil
}

// WriteF32 writes the named tensor, converting to its declared dtype (F32,
// F16 or BF16, rounding to nearest even). Tensors may be written in any
// order, each once. A write error aborts the writer; a caller mistake (an
// unknown name, a wrong length) is reported without aborting it.
func (w *Writer) WriteF32(name string, data []float32) error {
	ti, err := w.check(name)
	if err != nil {
		return err
	}
	if !ti.DType.IsFloat() {
		return fmt.Errorf("safetensors: writing %s: tensor %q has dtype %s, which WriteF32 cannot produce", w.path, name, ti.DType)
	}
	if n := ti.NumElements(); int64(len(data)) != n {
		return fmt.Errorf("safetensors: writing %s: tensor %q %v needs %d values, got %d", w.path, name, ti.Shape, n, len(data))
	}
	esize := int(ti.DType.Size())
	per := max(chunkBytes/esize, 1)
	buf := make([]byte, min(len(data), per)*esize)
	off := ti.Offset
	for start := 0; start < len(data); start += per {
		src := data[start:min(start+per, len(data))]
		b := buf[:len(src)*esize]
		switch ti.DType {
		case F32:
			for i, v := range src {
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
			}
		case F16:
			for i, v := range src {
				binary.LittleEndian.PutUint16(b[2*i:], half.F32ToF16(v))
			}
		case BF16:
			for i, v := range src {
				binary.LittleEndian.PutUint16(b[2*i:], half.F32ToBF16(v))
			}
		}
		if _, err := w.tmp.WriteAt(b, off); err != nil {
			w.fail(fmt.Errorf("tensor %q: %w", name, err))
			return w.err
		}
		off += int64(len(b))
	}
	w.written[name] = true
	return nil
}

// WriteRaw writes the named tensor's bytes as stored (little-endian, any
// dtype); len(b) must match the declared dtype and shape.
func (w *Writer) WriteRaw(name string, b []byte) error {
	ti, err := w.check(name)
	if err != nil {
		return err
	}
	if int64(len(b)) != ti.Size {
		return fmt.Errorf("safetensors: writing %s: tensor %q %s %v needs %d bytes, got %d", w.path, name, ti.DType, ti.Shape, ti.Size, len(b))
	}
	if _, err := w.tmp.WriteAt(b, ti.Offset); err != nil {
		w.fail(fmt.Errorf("tensor %q: %w", name, err))
		return w.err
	}
	w.written[name] = true
	return nil
}

// Close checks that every declared tensor was written, flushes the file and
// renames it into place. On any error the temporary file is removed and
// nothing is left at path.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return nil
	}
	var missing []string
	for name := range w.infos {
		if !w.written[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		if len(missing) > 5 {
			missing = append(missing[:5], "...")
		}
		w.fail(fmt.Errorf("%d tensor(s) not written: %s", len(w.infos)-len(w.written), strings.Join(missing, ", ")))
		return w.err
	}
	if err := w.tmp.Chmod(0o644); err != nil {
		w.fail(err)
		return w.err
	}
	if err := w.tmp.Sync(); err != nil {
		w.fail(err)
		return w.err
	}
	name := w.tmp.Name()
	if err := w.tmp.Close(); err != nil {
		w.tmp = nil
		os.Remove(name)
		w.fail(err)
		return w.err
	}
	w.tmp = nil
	if err := os.Rename(name, w.path); err != nil {
		os.Remove(name)
		w.fail(err)
		return w.err
	}
	w.done = true
	return nil
}

// Abort discards the file being written. It is a no-op after Close.
func (w *Writer) Abort() {
	if w.done || w.tmp == nil {
		return
	}
	w.fail(errors.New("aborted"))
}
