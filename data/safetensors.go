package data

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
	"strconv"
	"strings"
	"unicode/utf8"
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

// stMaxHeaderSize bounds the JSON header, as the reference implementation does.
const stMaxHeaderSize = 100 << 20

// stChunkBytes is the size of the buffer used to stream tensor data.
const stChunkBytes = 1 << 20

// Safetensors is an open safetensors model: a single file or the shards of
// a sharded model. It is safe for concurrent reads.
type Safetensors struct {
	tensors map[string]TensorInfo
	sorted  []TensorInfo
	files   map[string]*os.File
	meta    map[string]string
}

// OpenSafetensors opens the weights of the Hugging Face model folder dir:
// model.safetensors, or the shards listed by model.safetensors.index.json.
// If dir is a file it is opened as a single safetensors file, or as an index
// when its name ends in ".index.json".
func OpenSafetensors(dir string) (*Safetensors, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	if !st.IsDir() {
		if strings.HasSuffix(dir, ".index.json") {
			return stOpenIndex(dir)
		}
		return OpenSafetensorsFile(dir)
	}
	single := filepath.Join(dir, "model.safetensors")
	if _, err := os.Stat(single); err == nil {
		return OpenSafetensorsFile(single)
	}
	index := filepath.Join(dir, "model.safetensors.index.json")
	if _, err := os.Stat(index); err == nil {
		return stOpenIndex(index)
	}
	return nil, fmt.Errorf("data: %s: no model.safetensors or model.safetensors.index.json", dir)
}

// OpenSafetensorsFile opens one safetensors file and validates its header.
func OpenSafetensorsFile(path string) (*Safetensors, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	infos, meta, err := stReadHeader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &Safetensors{
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

func (s *Safetensors) sort() {
	s.sorted = make([]TensorInfo, 0, len(s.tensors))
	for _, ti := range s.tensors {
		s.sorted = append(s.sorted, ti)
	}
	sort.Slice(s.sorted, func(i, j int) bool { return s.sorted[i].Name < s.sorted[j].Name })
}

func stCorrupt(path, format string, args ...any) error {
	return fmt.Errorf("data: %s: %s: %w", path, fmt.Sprintf(format, args...), ErrCorrupt)
}

// stReadHeader parses and validates the header of an open safetensors file.
func stReadHeader(f *os.File, path string) ([]TensorInfo, map[string]string, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("data: %w", err)
	}
	size := st.Size()
	if size < 8 {
		return nil, nil, stCorrupt(path, "file is %d bytes, too short for the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		return nil, nil, fmt.Errorf("data: %s: reading header length: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(size-8) {
		return nil, nil, stCorrupt(path, "header length %d goes beyond the end of the %d-byte file", n, size)
	}
	if n > stMaxHeaderSize {
		return nil, nil, stCorrupt(path, "header length %d exceeds the %d-byte limit", n, stMaxHeaderSize)
	}
	if n < 2 {
		return nil, nil, stCorrupt(path, "header length %d is too short for a JSON object", n)
	}
	hdr := make([]byte, n)
	if _, err := f.ReadAt(hdr, 8); err != nil {
		return nil, nil, fmt.Errorf("data: %s: reading header: %w", path, err)
	}
	dataStart := int64(8 + n)
	return stParseHeader(hdr, path, dataStart, size-dataStart)
}

type stRawTensor struct {
	DType       *DType   `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// stParseHeader validates the JSON header; dataStart is the absolute position
// of the data section and dataLen its length.
func stParseHeader(hdr []byte, path string, dataStart, dataLen int64) ([]TensorInfo, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, stCorrupt(path, "malformed JSON header: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, stCorrupt(path, "malformed JSON header: not an object")
	}
	seen := map[string]bool{}
	var infos []TensorInfo
	var meta map[string]string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, stCorrupt(path, "malformed JSON header: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, stCorrupt(path, "malformed JSON header: key is not a string")
		}
		if seen[name] {
			return nil, nil, stCorrupt(path, "duplicate entry %q in header", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, stCorrupt(path, "malformed JSON header at %q: %v", name, err)
		}
		if name == "__metadata__" {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, stCorrupt(path, "__metadata__ is not an object of strings: %v", err)
			}
			continue
		}
		ti, err := stParseTensor(name, raw, path, dataStart, dataLen)
		if err != nil {
			return nil, nil, err
		}
		infos = append(infos, ti)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, stCorrupt(path, "malformed JSON header: %v", err)
	}
	// Only whitespace (the padding) may follow the object.
	if len(bytes.TrimRight(hdr[dec.InputOffset():], " \t\r\n\x00")) != 0 {
		return nil, nil, stCorrupt(path, "malformed JSON header: trailing data after the object")
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
			return nil, nil, stCorrupt(path, "tensors %q [%d %d] and %q [%d %d] overlap", a.Name,
				a.Offset-dataStart, a.Offset-dataStart+a.Size, b.Name, b.Offset-dataStart, b.Offset-dataStart+b.Size)
		}
	}
	if meta == nil {
		meta = map[string]string{}
	}
	return infos, meta, nil
}

func stParseTensor(name string, raw json.RawMessage, path string, dataStart, dataLen int64) (TensorInfo, error) {
	var rt stRawTensor
	if err := json.Unmarshal(raw, &rt); err != nil {
		return TensorInfo{}, stCorrupt(path, "tensor %q: malformed entry: %v", name, err)
	}
	if rt.DType == nil || rt.Shape == nil || rt.DataOffsets == nil {
		return TensorInfo{}, stCorrupt(path, "tensor %q: entry needs dtype, shape and data_offsets", name)
	}
	dt := *rt.DType
	esize := dt.Size()
	if esize == 0 {
		return TensorInfo{}, stCorrupt(path, "tensor %q: unknown dtype %q", name, string(dt))
	}
	shape := make([]int, len(*rt.Shape))
	nbytes := esize
	for i, d := range *rt.Shape {
		if d < 0 || d > math.MaxInt32*int64(math.MaxInt32) {
			return TensorInfo{}, stCorrupt(path, "tensor %q: invalid dimension %d in shape %v", name, d, *rt.Shape)
		}
		if d != 0 && nbytes > math.MaxInt64/d {
			return TensorInfo{}, stCorrupt(path, "tensor %q: shape %v overflows", name, *rt.Shape)
		}
		nbytes *= d
		shape[i] = int(d)
	}
	offs := *rt.DataOffsets
	if len(offs) != 2 {
		return TensorInfo{}, stCorrupt(path, "tensor %q: data_offsets %v must have two entries", name, offs)
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin {
		return TensorInfo{}, stCorrupt(path, "tensor %q: invalid data_offsets [%d %d]", name, begin, end)
	}
	if end-begin != nbytes {
		return TensorInfo{}, stCorrupt(path, "tensor %q: data_offsets [%d %d] do not match %s %v (%d bytes)",
			name, begin, end, dt, shape, nbytes)
	}
	if end > dataLen {
		return TensorInfo{}, stCorrupt(path, "tensor %q: data_offsets [%d %d] go beyond the %d-byte data section (file truncated?)",
			name, begin, end, dataLen)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Offset: dataStart + begin, Size: nbytes, File: path}, nil
}

type safetensorsIndex struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// stOpenIndex opens a sharded model from its model.safetensors.index.json.
func stOpenIndex(indexPath string) (_ *Safetensors, err error) {
	b, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	var idx safetensorsIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, stCorrupt(indexPath, "malformed index JSON: %v", err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, stCorrupt(indexPath, "index has no weight_map")
	}
	dir := filepath.Dir(indexPath)
	s := &Safetensors{
		tensors: map[string]TensorInfo{},
		files:   map[string]*os.File{},
		meta:    map[string]string{},
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// Open the shards in a deterministic order.
	shardSet := map[string]bool{}
	for name, shard := range idx.WeightMap {
		clean := filepath.Clean(filepath.FromSlash(shard))
		if shard == "" || filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
			return nil, stCorrupt(indexPath, "tensor %q: invalid shard file name %q", name, shard)
		}
		shardSet[shard] = true
	}
	shards := make([]string, 0, len(shardSet))
	for sh := range shardSet {
		shards = append(shards, sh)
	}
	sort.Strings(shards)
	shardOf := map[string]string{}
	for _, sh := range shards {
		p := filepath.Join(dir, filepath.FromSlash(sh))
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("data: %s: shard: %w", indexPath, err)
		}
		s.files[p] = f
		infos, meta, err := stReadHeader(f, p)
		if err != nil {
			return nil, err
		}
		for k, v := range meta {
			if _, ok := s.meta[k]; !ok {
				s.meta[k] = v
			}
		}
		for _, ti := range infos {
			if prev, dup := shardOf[ti.Name]; dup {
				return nil, stCorrupt(indexPath, "tensor %q is in both %s and %s", ti.Name, prev, sh)
			}
			shardOf[ti.Name] = sh
			s.tensors[ti.Name] = ti
		}
	}
	names := make([]string, 0, len(idx.WeightMap))
	for name := range idx.WeightMap {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := idx.WeightMap[name]
		if got, ok := shardOf[name]; !ok {
			return nil, stCorrupt(indexPath, "tensor %q: listed in weight_map for %s but not found there", name, want)
		} else if got != want {
			return nil, stCorrupt(indexPath, "tensor %q: weight_map says %s but it is in %s", name, want, got)
		}
	}
	s.sort()
	return s, nil
}

// Tensors returns every tensor, sorted by name.
func (s *Safetensors) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(s.sorted))
	copy(out, s.sorted)
	return out
}

// Info returns the description of the named tensor.
func (s *Safetensors) Info(name string) (TensorInfo, bool) {
	ti, ok := s.tensors[name]
	return ti, ok
}

// Metadata returns the "__metadata__" of the file (for a sharded model, the
// union over the shards; the first shard in name order wins on conflicts).
func (s *Safetensors) Metadata() map[string]string {
	out := make(map[string]string, len(s.meta))
	for k, v := range s.meta {
		out[k] = v
	}
	return out
}

func (s *Safetensors) lookup(name string) (TensorInfo, *os.File, error) {
	ti, ok := s.tensors[name]
	if !ok {
		return TensorInfo{}, nil, fmt.Errorf("data: no tensor %q", name)
	}
	f := s.files[ti.File]
	if f == nil {
		return TensorInfo{}, nil, fmt.Errorf("data: %s: file is closed", ti.File)
	}
	return ti, f, nil
}

// ReadRaw returns the bytes of the named tensor as stored (little-endian).
func (s *Safetensors) ReadRaw(name string) ([]byte, error) {
	ti, f, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	b := make([]byte, ti.Size)
	if err := stReadAt(f, b, ti.Offset, ti); err != nil {
		return nil, err
	}
	return b, nil
}

func stReadAt(f *os.File, b []byte, off int64, ti TensorInfo) error {
	if _, err := f.ReadAt(b, off); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return stCorrupt(ti.File, "tensor %q: data truncated", ti.Name)
		}
		return fmt.Errorf("data: %s: tensor %q: %w", ti.File, ti.Name, err)
	}
	return nil
}

// ReadF32 reads the named tensor as float32, converting from F16 or BF16.
// The data is streamed in chunks; only the result is held in memory.
func (s *Safetensors) ReadF32(name string) ([]float32, error) {
	ti, ok := s.tensors[name]
	if !ok {
		return nil, fmt.Errorf("data: no tensor %q", name)
	}
	if !ti.DType.IsFloat() {
		return nil, fmt.Errorf("data: %s: tensor %q has dtype %s, which cannot be read as float32", ti.File, name, ti.DType)
	}
	dst := make([]float32, ti.NumElements())
	if err := s.ReadF32Into(name, dst); err != nil {
		return nil, err
	}
	return dst, nil
}

// ReadF32Into reads the named tensor into dst, whose length must be the
// tensor's element count, converting from F16 or BF16.
func (s *Safetensors) ReadF32Into(name string, dst []float32) error {
	ti, f, err := s.lookup(name)
	if err != nil {
		return err
	}
	if !ti.DType.IsFloat() {
		return fmt.Errorf("data: %s: tensor %q has dtype %s, which cannot be read as float32", ti.File, name, ti.DType)
	}
	if n := ti.NumElements(); int64(len(dst)) != n {
		return fmt.Errorf("data: tensor %q has %d elements, destination has %d", name, n, len(dst))
	}
	esize := ti.DType.Size()
	buf := make([]byte, min(ti.Size, stChunkBytes))
	for done := int64(0); done < ti.Size; {
		chunk := buf[:min(int64(len(buf)), ti.Size-done)]
		if err := stReadAt(f, chunk, ti.Offset+done, ti); err != nil {
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
				out[i] = F16ToF32(binary.LittleEndian.Uint16(chunk[2*i:]))
			}
		case BF16:
			for i := range len(chunk) / 2 {
				out[i] = BF16ToF32(binary.LittleEndian.Uint16(chunk[2*i:]))
			}
		}
		done += int64(len(chunk))
	}
	return nil
}

// Close closes the underlying files.
func (s *Safetensors) Close() error {
	var errs []error
	for p, f := range s.files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
		delete(s.files, p)
	}
	return errors.Join(errs...)
}

// SafetensorsWriter writes a safetensors file tensor by tensor. The data goes
// to a temporary file in the destination folder, which Close renames into
// place; Abort, or any failure, removes it.
type SafetensorsWriter struct {
	path    string
	tmp     *os.File
	infos   map[string]TensorInfo // Offset absolute in the file
	written map[string]bool
	err     error // sticky failure
	done    bool
}

// CreateSafetensors starts writing a safetensors file at path with the given
// tensors (names, dtypes and shapes; data is laid out contiguously in this
// order) and metadata ("format": "pt" is added unless given).
func CreateSafetensors(path string, infos []TensorInfo, metadata map[string]string) (*SafetensorsWriter, error) {
	meta := map[string]string{"format": "pt"}
	for k, v := range metadata {
		meta[k] = v
	}
	var hdr bytes.Buffer
	hdr.WriteString(`{"__metadata__":`)
	mb, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("data: %s: %w", path, err)
	}
	hdr.Write(mb)
	w := &SafetensorsWriter{path: path, infos: map[string]TensorInfo{}, written: map[string]bool{}}
	var off int64
	for _, ti := range infos {
		if ti.Name == "" || ti.Name == "__metadata__" || !utf8.ValidString(ti.Name) {
			return nil, fmt.Errorf("data: %s: invalid tensor name %q", path, ti.Name)
		}
		if _, dup := w.infos[ti.Name]; dup {
			return nil, fmt.Errorf("data: %s: duplicate tensor %q", path, ti.Name)
		}
		esize := ti.DType.Size()
		if esize == 0 {
			return nil, fmt.Errorf("data: %s: tensor %q: unknown dtype %q", path, ti.Name, string(ti.DType))
		}
		n := esize
		for _, d := range ti.Shape {
			if d < 0 {
				return nil, fmt.Errorf("data: %s: tensor %q: negative dimension in shape %v", path, ti.Name, ti.Shape)
			}
			if d != 0 && n > math.MaxInt64/int64(d) {
				return nil, fmt.Errorf("data: %s: tensor %q: shape %v overflows", path, ti.Name, ti.Shape)
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
		return nil, fmt.Errorf("data: %w", err)
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
func (w *SafetensorsWriter) fail(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("data: writing %s: %w", w.path, err)
	}
	if w.tmp != nil {
		name := w.tmp.Name()
		w.tmp.Close()
		os.Remove(name)
		w.tmp = nil
	}
}

func (w *SafetensorsWriter) check(name string) (TensorInfo, error) {
	if w.err != nil {
		return TensorInfo{}, w.err
	}
	if w.done {
		return TensorInfo{}, fmt.Errorf("data: writing %s: writer is closed", w.path)
	}
	ti, ok := w.infos[name]
	if !ok {
		return TensorInfo{}, fmt.Errorf("data: writing %s: tensor %q was not declared", w.path, name)
	}
	if w.written[name] {
		return TensorInfo{}, fmt.Errorf("data: writing %s: tensor %q written twice", w.path, name)
	}
	return ti, nil
}

// WriteF32 writes the named tensor, converting to its declared dtype (F32,
// F16 or BF16, rounding to nearest even). Tensors may be written in any
// order, each once. A write error aborts the writer; a caller mistake (an
// unknown name, a wrong length) is reported without aborting it.
func (w *SafetensorsWriter) WriteF32(name string, data []float32) error {
	ti, err := w.check(name)
	if err != nil {
		return err
	}
	if !ti.DType.IsFloat() {
		return fmt.Errorf("data: writing %s: tensor %q has dtype %s, which WriteF32 cannot produce", w.path, name, ti.DType)
	}
	if n := ti.NumElements(); int64(len(data)) != n {
		return fmt.Errorf("data: writing %s: tensor %q %v needs %d values, got %d", w.path, name, ti.Shape, n, len(data))
	}
	esize := int(ti.DType.Size())
	per := max(stChunkBytes/esize, 1)
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
				binary.LittleEndian.PutUint16(b[2*i:], F32ToF16(v))
			}
		case BF16:
			for i, v := range src {
				binary.LittleEndian.PutUint16(b[2*i:], F32ToBF16(v))
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
func (w *SafetensorsWriter) WriteRaw(name string, b []byte) error {
	ti, err := w.check(name)
	if err != nil {
		return err
	}
	if int64(len(b)) != ti.Size {
		return fmt.Errorf("data: writing %s: tensor %q %s %v needs %d bytes, got %d", w.path, name, ti.DType, ti.Shape, ti.Size, len(b))
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
func (w *SafetensorsWriter) Close() error {
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
func (w *SafetensorsWriter) Abort() {
	if w.done || w.tmp == nil {
		return
	}
	w.fail(errors.New("aborted"))
}
