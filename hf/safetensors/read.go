package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/lomo-dev/lomo/internal/half"
)

// Reader is an open safetensors model: a single file or the shards of
// a sharded model. It is safe for concurrent reads.
type Reader struct {
	tensors map[string]TensorInfo
	sorted  []TensorInfo
	files   map[string]*os.File
	meta    map[string]string
}

// Open opens the weights of the Hugging Face model folder dir:
// model.safetensors, or the shards listed by model.safetensors.index.json.
// If dir is a file it is opened as a single safetensors file, or as an index
// when its name ends in ".index.json".
func Open(dir string) (*Reader, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.IsDir() {
		if strings.HasSuffix(dir, ".index.json") {
			return openIndex(dir)
		}
		return OpenFile(dir)
	}
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err == nil {
		return OpenFile(single)
	}
	index := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(index); err == nil {
		return openIndex(index)
	}
	return nil, fmt.Errorf("safetensors: %s: no model.safetensors or model.safetensors.index.json", dir)
}

// OpenFile opens one safetensors file and validates its header.
func OpenFile(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	infos, meta, err := readHeader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &Reader{
		tensors: make(map[string]TensorInfo, len(infos)),
		files:   map[string]*os.File{path: f},
		meta:    meta,
	}
	for _, ti := range infos {
		s.tensors[ti.Name] = ti
	}
	s.sort()
	return s, nil
}

func (s *Reader) sort() {
	s.sorted = make([]TensorInfo, 0, len(s.tensors))
	for _, ti := range s.tensors {
		s.sorted = append(s.sorted, ti)
	}
	sort.Slice(s.sorted, func(i, j int) bool { return s.sorted[i].Name < s.sorted[j].Name })
}

func corruptf(path, format string, args ...any) error {
	return fmt.Errorf("safetensors: %s: %s: %w", path, fmt.Sprintf(format, args...), ErrCorrupt)
}

// readHeader parses and validates the header of an open safetensors file.
func readHeader(f *os.File, path string) ([]TensorInfo, map[string]string, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	size := st.Size()
	if size < 8 {
		return nil, nil, corruptf(path, "file is %d bytes, too short for the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		return nil, nil, fmt.Errorf("safetensors: %s: reading header length: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(size-8) {
		return nil, nil, corruptf(path, "header length %d goes beyond the end of the %d-byte file", n, size)
	}
	if n > maxHeaderSize {
		return nil, nil, corruptf(path, "header length %d exceeds the %d-byte limit", n, maxHeaderSize)
	}
	if n < 2 {
		return nil, nil, corruptf(path, "header length %d is too short for a JSON object", n)
	}
	hdr := make([]byte, n)
	if _, err := f.ReadAt(hdr, 8); err != nil {
		return nil, nil, fmt.Errorf("safetensors: %s: reading header: %w", path, err)
	}
	dataStart := int64(8 + n)
	return parseHeader(hdr, path, dataStart, size-dataStart)
}

type rawTensor struct {
	DType       *DType   `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseHeader validates the JSON header; dataStart is the absolute position
// of the data section and dataLen its length.
func parseHeader(hdr []byte, path string, dataStart, dataLen int64) ([]TensorInfo, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, corruptf(path, "malformed JSON header: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, corruptf(path, "malformed JSON header: not an object")
	}
	seen := map[string]bool{}
	var infos []TensorInfo
	var meta map[string]string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, corruptf(path, "malformed JSON header: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, corruptf(path, "malformed JSON header: key is not a string")
		}
		if seen[name] {
			return nil, nil, corruptf(path, "duplicate entry %q in header", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, corruptf(path, "malformed JSON header at %q: %v", name, err)
		}
		if name == "__metadata__" {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, corruptf(path, "__metadata__ is not an object of strings: %v", err)
			}
			continue
		}
		ti, err := parseTensor(name, raw, path, dataStart, dataLen)
		if err != nil {
			return nil, nil, err
		}
		infos = append(infos, ti)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, corruptf(path, "malformed JSON header: %v", err)
	}
	// Only whitespace (the padding) may follow the object.
	if len(bytes.TrimRight(hdr[dec.InputOffset():], " \t\r\n\x00")) != 0 {
		return nil, nil, corruptf(path, "malformed JSON header: trailing data after the object")
	}
	// Tensors must not overlap.
	byOff := append([]TensorInfo(nil), infos...)
	sort.Slice(byOff, func(i, j int) bool {
		if byOff[i].Offset != byOff[j].Offset {
			return byOff[i].Offset < byOff[j].Offset
		}
		return byOff[i].Size < byOff[j].Size
	})
	for i := 1; i < len(byOff); i++ {
		a, b := byOff[i-1], byOff[i]
		if b.Offset < a.Offset+a.Size {
			return nil, nil, corruptf(path, "tensors %q [%d %d] and %q [%d %d] overlap", a.Name,
				a.Offset-dataStart, a.Offset-dataStart+a.Size, b.Name, b.Offset-dataStart, b.Offset-dataStart+b.Size)
		}
	}
	if meta == nil {
		meta = map[string]string{}
	}
	return infos, meta, nil
}

func parseTensor(name string, raw json.RawMessage, path string, dataStart, dataLen int64) (TensorInfo, error) {
	var rt rawTensor
	if err := json.Unmarshal(raw, &rt); err != nil {
		return TensorInfo{}, corruptf(path, "tensor %q: malformed entry: %v", name, err)
	}
	if rt.DType == nil || rt.Shape == nil || rt.DataOffsets == nil {
		return TensorInfo{}, corruptf(path, "tensor %q: entry needs dtype, shape and data_offsets", name)
	}
	dt := *rt.DType
	esize := dt.Size()
	if esize == 0 {
		return TensorInfo{}, corruptf(path, "tensor %q: unknown dtype %q", name, string(dt))
	}
	shape := make([]int, len(*rt.Shape))
	nbytes := esize
	for i, d := range *rt.Shape {
		if d < 0 || d > math.MaxInt32*int64(math.MaxInt32) {
			return TensorInfo{}, corruptf(path, "tensor %q: invalid dimension %d in shape %v", name, d, *rt.Shape)
		}
		if d != 0 && nbytes > math.MaxInt64/d {
			return TensorInfo{}, corruptf(path, "tensor %q: shape %v overflows", name, *rt.Shape)
		}
		nbytes *= d
		shape[i] = int(d)
	}
	offs := *rt.DataOffsets
	if len(offs) != 2 {
		return TensorInfo{}, corruptf(path, "tensor %q: data_offsets %v must have two entries", name, offs)
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin {
		return TensorInfo{}, corruptf(path, "tensor %q: invalid data_offsets [%d %d]", name, begin, end)
	}
	if end-begin != nbytes {
		return TensorInfo{}, corruptf(path, "tensor %q: data_offsets [%d %d] do not match %s %v (%d bytes)",
			name, begin, end, dt, shape, nbytes)
	}
	if end > dataLen {
		return TensorInfo{}, corruptf(path, "tensor %q: data_offsets [%d %d] go beyond the %d-byte data section (file truncated?)",
			name, begin, end, dataLen)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Offset: dataStart + begin, Size: nbytes, File: path}, nil
}

// Tensors returns every tensor, sorted by name.
func (s *Reader) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(s.sorted))
	copy(out, s.sorted)
	return out
}

// Info returns the description of the named tensor.
func (s *Reader) Info(name string) (TensorInfo, bool) {
	ti, ok := s.tensors[name]
	return ti, ok
}

// Metadata returns the "__metadata__" of the file (for a sharded model, the
// union over the shards; the first shard in name order wins on conflicts).
func (s *Reader) Metadata() map[string]string {
	out := make(map[string]string, len(s.meta))
	for k, v := range s.meta {
		out[k] = v
	}
	return out
}

func (s *Reader) lookup(name string) (TensorInfo, *os.File, error) {
	ti, ok := s.tensors[name]
	if !ok {
		return TensorInfo{}, nil, fmt.Errorf("safetensors: no tensor %q", name)
	}
	f := s.files[ti.File]
	if f == nil {
		return TensorInfo{}, nil, fmt.Errorf("safetensors: %s: file is closed", ti.File)
	}
	return ti, f, nil
}

// ReadRaw returns the bytes of the named tensor as stored (little-endian).
func (s *Reader) ReadRaw(name string) ([]byte, error) {
	ti, f, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	b := make([]byte, ti.Size)
	if err := readAt(f, b, ti.Offset, ti); err != nil {
		return nil, err
	}
	return b, nil
}

func readAt(f *os.File, b []byte, off int64, ti TensorInfo) error {
	if _, err := f.ReadAt(b, off); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return corruptf(ti.File, "tensor %q: data truncated", ti.Name)
		}
		return fmt.Errorf("safetensors: %s: tensor %q: %w", ti.File, ti.Name, err)
	}
	return nil
}

// ReadF32 reads the named tensor as float32, converting from F16 or BF16.
// The data is streamed in chunks; only the result is held in memory.
func (s *Reader) ReadF32(name string) ([]float32, error) {
	ti, ok := s.tensors[name]
	if !ok {
		return nil, fmt.Errorf("safetensors: no tensor %q", name)
	}
	if !ti.DType.IsFloat() {
		return nil, fmt.Errorf("safetensors: %s: tensor %q has dtype %s, which cannot be read as float32", ti.File, name, ti.DType)
	}
	dst := make([]float32, ti.NumElements())
	if err := s.ReadF32Into(name, dst); err != nil {
		return nil, err
	}
	return dst, nil
}

// ReadF32Into reads the named tensor into dst, whose length must be the
// tensor's element count, converting from F16 or BF16.
func (s *Reader) ReadF32Into(name string, dst []float32) error {
	ti, f, err := s.lookup(name)
	if err != nil {
		return err
	}
	if !ti.DType.IsFloat() {
		return fmt.Errorf("safetensors: %s: tensor %q has dtype %s, which cannot be read as float32", ti.File, name, ti.DType)
	}
	if n := ti.NumElements(); int64(len(dst)) != n {
		return fmt.Errorf("safetensors: tensor %q has %d elements, destination has %d", name, n, len(dst))
	}
	esize := ti.DType.Size()
	buf := make([]byte, min(ti.Size, chunkBytes))
	for done := int64(0); done < ti.Size; {
		chunk := buf[:min(int64(len(buf)), ti.Size-done)]
		if err := readAt(f, chunk, ti.Offset+done, ti); err != nil {
			return err
		}
		out := dst[done/esize:]
		switch ti.DType {
		case F32:
			for i := range len(chunk) / 4 {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(chunk[4*i:]))
			}
		case F16:
			for i := range len(chunk) / 2 {
				out[i] = half.F16ToF32(binary.LittleEndian.Uint16(chunk[2*i:]))
			}
		case BF16:
			for i := range len(chunk) / 2 {
				out[i] = half.BF16ToF32(binary.LittleEndian.Uint16(chunk[2*i:]))
			}
		}
		done += int64(len(chunk))
	}
	return nil
}

// Close closes the underlying files.
func (s *Reader) Close() error {
	var errs []error
	for p, f := range s.files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
		delete(s.files, p)
	}
	return errors.Join(errs...)
}
