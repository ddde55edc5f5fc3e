package safetensors_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/safetensors"
	"github.com/lomo-dev/lomo/internal/half"
	"github.com/lomo-dev/lomo/internal/shared"
)

// stories returns the stories260K model folder (or skips).
func storiesDir(t testing.TB) string {
	t.Helper()
	return shared.Path(t, "models/stories260K")
}

// rawFile builds a safetensors file from a header string and data bytes.
func buildRawFile(header string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func writeTemp(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hfStrictCheck verifies the rules the reference (Rust) safetensors reader
// enforces on a file: header is a JSON object starting with '{', at most
// 100 MB, padded to 8 bytes by our writer, tensors contiguous from 0 in
// offset order, and the last one ending exactly at the end of the file.
func hfStrictCheck(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n%8 != 0 {
		t.Errorf("%s: header length %d not a multiple of 8", path, n)
	}
	hdr := b[8 : 8+n]
	if hdr[0] != '{' {
		t.Errorf("%s: header does not start with '{'", path)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &m); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	var meta map[string]string
	if err := json.Unmarshal(m["__metadata__"], &meta); err != nil || meta["format"] != "pt" {
		t.Errorf("%s: __metadata__ %s lacks format pt (%v)", path, m["__metadata__"], err)
	}
	type ent struct {
		DType       string  `json:"dtype"`
		Shape       []int   `json:"shape"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	var ents []ent
	for k, v := range m {
		if k == "__metadata__" {
			continue
		}
		var e ent
		if err := json.Unmarshal(v, &e); err != nil {
			t.Fatal(err)
		}
		if e.Shape == nil {
			t.Errorf("%s: %s: shape is null", path, k)
		}
		ents = append(ents, e)
	}
	// By (begin, end): an empty tensor shares its begin with the next one,
	// and map order must not decide which comes first.
	sort.Slice(ents, func(i, j int) bool {
		a, b := ents[i].DataOffsets, ents[j].DataOffsets
		return a[0] < b[0] || a[0] == b[0] && a[1] < b[1]
	})
	var off int64
	for _, e := range ents {
		if e.DataOffsets[0] != off {
			t.Fatalf("%s: offsets not contiguous: %v after %d", path, e.DataOffsets, off)
		}
		off = e.DataOffsets[1]
	}
	if int64(len(b))-int64(8+n) != off {
		t.Errorf("%s: data section is %d bytes, tensors cover %d", path, int64(len(b))-int64(8+n), off)
	}
}

func TestStories260KRead(t *testing.T) {
	dir := storiesDir(t)
	s, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := s.Tensors()
	if len(ts) != 1+5*9+1 {
		t.Fatalf("got %d tensors, want 47", len(ts))
	}
	for i := 1; i < len(ts); i++ {
		if ts[i-1].Name >= ts[i].Name {
			t.Fatalf("Tensors not sorted: %q before %q", ts[i-1].Name, ts[i].Name)
		}
	}
	if s.Metadata()["format"] != "pt" {
		t.Errorf("metadata %v lacks format pt", s.Metadata())
	}
	ti, ok := s.Info("model.embed_tokens.weight")
	if !ok || ti.DType != safetensors.F32 || len(ti.Shape) != 2 || ti.Shape[0] != 512 || ti.Shape[1] != 64 {
		t.Fatalf("embed info %+v %v", ti, ok)
	}
	if ti.File != filepath.Join(dir, "model.safetensors") {
		t.Errorf("File = %q", ti.File)
	}
	for _, ti := range ts {
		v, err := s.ReadF32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(v)) != ti.NumElements() {
			t.Fatalf("%s: %d values, want %d", ti.Name, len(v), ti.NumElements())
		}
		var sumsq float64
		for _, x := range v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				t.Fatalf("%s: non-finite value %v", ti.Name, x)
			}
			sumsq += float64(x) * float64(x)
		}
		if sumsq == 0 {
			t.Errorf("%s: all zero", ti.Name)
		}
		raw, err := s.ReadRaw(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range v {
			if math.Float32bits(x) != binary.LittleEndian.Uint32(raw[4*i:]) {
				t.Fatalf("%s[%d]: ReadF32 and ReadRaw disagree", ti.Name, i)
			}
		}
	}
	// Norm weights of a trained model are near 1, not random.
	v, _ := s.ReadF32("model.norm.weight")
	var mean float64
	for _, x := range v {
		mean += float64(x) / float64(len(v))
	}
	if mean < 0.1 {
		t.Errorf("model.norm.weight mean %v: implausible", mean)
	}
	if _, err := s.ReadF32("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("ReadF32 of a missing tensor: %v", err)
	}
	if err := s.ReadF32Into("model.norm.weight", make([]float32, 3)); err == nil {
		t.Error("ReadF32Into with a wrong length succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadF32("model.norm.weight"); err == nil {
		t.Error("read after Close succeeded")
	}
}

func TestConcurrentReads(t *testing.T) {
	s, err := safetensors.Open(storiesDir(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string][]float32{}
	for _, ti := range s.Tensors() {
		want[ti.Name], _ = s.ReadF32(ti.Name)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := s.Tensors()
			for i := range ts {
				ti := ts[(i+g*7)%len(ts)]
				v, err := s.ReadF32(ti.Name)
				if err != nil {
					errs <- err
					return
				}
				for j := range v {
					if v[j] != want[ti.Name][j] {
						errs <- errors.New(ti.Name + ": concurrent read differs")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRoundTripStories writes all stories260K tensors as F32, F16 and BF16
// and reads them back.
func TestRoundTripStories(t *testing.T) {
	dir := storiesDir(t)
	src, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	orig := map[string][]float32{}
	for _, ti := range src.Tensors() {
		orig[ti.Name], err = src.ReadF32(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16} {
		t.Run(string(dt), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "model.safetensors")
			var infos []safetensors.TensorInfo
			for _, ti := range src.Tensors() {
				infos = append(infos, safetensors.TensorInfo{Name: ti.Name, DType: dt, Shape: ti.Shape})
			}
			w, err := safetensors.Create(out, infos, map[string]string{"note": "round trip"})
			if err != nil {
				t.Fatal(err)
			}
			// Write in reverse order: any order is allowed.
			for i := len(infos) - 1; i >= 0; i-- {
				if err := w.WriteF32(infos[i].Name, orig[infos[i].Name]); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			hfStrictCheck(t, out)
			if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
				t.Errorf("temporary files left behind: %v", ents)
			}
			got, err := safetensors.OpenFile(out)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			if m := got.Metadata(); m["format"] != "pt" || m["note"] != "round trip" {
				t.Errorf("metadata %v", m)
			}
			if len(got.Tensors()) != len(infos) {
				t.Fatalf("%d tensors read back, want %d", len(got.Tensors()), len(infos))
			}
			for _, ti := range got.Tensors() {
				if ti.DType != dt {
					t.Fatalf("%s: dtype %s", ti.Name, ti.DType)
				}
				want := orig[ti.Name]
				v, err := got.ReadF32(ti.Name)
				if err != nil {
					t.Fatal(err)
				}
				for i, x := range want {
					var exp float32
					switch dt {
					case safetensors.F32:
						exp = x
					case safetensors.F16:
						exp = half.F16ToF32(half.F32ToF16(x))
					case safetensors.BF16:
						exp = half.BF16ToF32(half.F32ToBF16(x))
					}
					if math.Float32bits(v[i]) != math.Float32bits(exp) {
						t.Fatalf("%s[%d]: got %v want %v (orig %v)", ti.Name, i, v[i], exp, x)
					}
					if dt != safetensors.F32 && math.Abs(float64(v[i]-x)) > math.Abs(float64(x))*(1.0/128)+1e-7 {
						t.Fatalf("%s[%d]: %v too far from %v", ti.Name, i, v[i], x)
					}
				}
			}
			if dt == safetensors.F32 {
				// Same tensor order (sorted names) as the original: the data
				// section must be byte-identical.
				a, _ := os.ReadFile(filepath.Join(dir, "model.safetensors"))
				b, _ := os.ReadFile(out)
				na, nb := binary.LittleEndian.Uint64(a), binary.LittleEndian.Uint64(b)
				if !bytes.Equal(a[8+na:], b[8+nb:]) {
					t.Error("F32 data section differs from the original")
				}
				cfg, err := config.Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				if err := cfg.CheckWeights(got); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestWriterSmall(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.safetensors")
	infos := []safetensors.TensorInfo{
		{Name: "scalar", DType: safetensors.F32},
		{Name: "empty", DType: safetensors.F16, Shape: []int{0, 3}},
		{Name: "ints", DType: safetensors.I32, Shape: []int{2}},
		{Name: "h", DType: safetensors.F16, Shape: []int{3}},
		{Name: `we"ird\name`, DType: safetensors.BF16, Shape: []int{1, 1}},
	}
	w, err := safetensors.Create(p, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.WriteF32("scalar", []float32{3.5}))
	must(w.WriteF32("empty", nil))
	if err := w.WriteF32("ints", []float32{1, 2}); err == nil {
		t.Error("WriteF32 to an I32 tensor succeeded")
	}
	if err := w.WriteRaw("ints", []byte{1, 0, 0}); err == nil {
		t.Error("WriteRaw with a wrong length succeeded")
	}
	must(w.WriteRaw("ints", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}))
	if err := w.WriteF32("h", []float32{1, 2}); err == nil {
		t.Error("WriteF32 with a wrong length succeeded")
	}
	if err := w.WriteF32("nope", []float32{1}); err == nil {
		t.Error("WriteF32 of an undeclared tensor succeeded")
	}
	must(w.WriteF32("h", []float32{1, 65504, 1e9}))
	if err := w.WriteF32("h", []float32{1, 2, 3}); err == nil {
		t.Error("writing a tensor twice succeeded")
	}
	must(w.WriteF32(`we"ird\name`, []float32{-0.1}))
	must(w.Close())
	must(w.Close()) // idempotent
	hfStrictCheck(t, p)
	s, err := safetensors.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.ReadF32("scalar"); err != nil || len(v) != 1 || v[0] != 3.5 {
		t.Errorf("scalar: %v %v", v, err)
	}
	if ti, _ := s.Info("scalar"); ti.Shape == nil || len(ti.Shape) != 0 {
		t.Errorf("scalar shape %#v", ti.Shape)
	}
	if v, err := s.ReadF32("empty"); err != nil || len(v) != 0 {
		t.Errorf("empty: %v %v", v, err)
	}
	if v, err := s.ReadF32("h"); err != nil || v[0] != 1 || v[1] != 65504 || !math.IsInf(float64(v[2]), 1) {
		t.Errorf("h: %v %v", v, err)
	}
	if v, err := s.ReadF32(`we"ird\name`); err != nil || v[0] != half.BF16ToF32(half.F32ToBF16(-0.1)) {
		t.Errorf("weird: %v %v", v, err)
	}
	if _, err := s.ReadF32("ints"); err == nil || !strings.Contains(err.Error(), "I32") {
		t.Errorf("ReadF32 of I32: %v", err)
	}
	if raw, err := s.ReadRaw("ints"); err != nil || int32(binary.LittleEndian.Uint32(raw[4:])) != -1 {
		t.Errorf("ints raw %v %v", raw, err)
	}

	// Invalid declarations.
	for _, bad := range [][]safetensors.TensorInfo{
		{{Name: "a", DType: safetensors.F32}, {Name: "a", DType: safetensors.F32}},
		{{Name: "a", DType: "F3"}},
		{{Name: "a", DType: safetensors.F32, Shape: []int{-1}}},
		{{Name: "__metadata__", DType: safetensors.F32}},
		{{Name: "", DType: safetensors.F32}},
		{{Name: "bad\xffutf8", DType: safetensors.F32}},
	} {
		if w, err := safetensors.Create(filepath.Join(dir, "bad.safetensors"), bad, nil); err == nil {
			w.Abort()
			t.Errorf("Create(%v) succeeded", bad)
		}
	}
	if _, err := safetensors.Create(filepath.Join(dir, "no", "such", "dir", "x.safetensors"), infos, nil); err == nil {
		t.Error("Create in a missing folder succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("files left behind: %v", ents)
	}
}

func TestWriterAbortAndFailure(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "model.safetensors")
	infos := []safetensors.TensorInfo{{Name: "a", DType: safetensors.F32, Shape: []int{2}}, {Name: "b", DType: safetensors.BF16, Shape: []int{2}}}
	empty := func() {
		t.Helper()
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("files left behind: %v", names)
		}
	}

	// Abort.
	w, err := safetensors.Create(p, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteF32("a", []float32{1, 2}); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	empty()
	if err := w.Close(); err == nil {
		t.Error("Close after Abort succeeded")
	}
	if err := w.WriteF32("b", []float32{1, 2}); err == nil {
		t.Error("write after Abort succeeded")
	}
	w.Abort() // twice is fine
	empty()

	// Close with a tensor missing fails and leaves nothing.
	w, err = safetensors.Create(p, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteF32("a", []float32{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `not written: b`) {
		t.Errorf("Close with a missing tensor: %v", err)
	}
	empty()

	// An I/O failure during a write removes the temporary file.
	w, err = safetensors.Create(p, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	safetensors.CloseTemp(w) // simulate the file going bad
	if err := w.WriteF32("a", []float32{1, 2}); err == nil {
		t.Error("write to a closed file succeeded")
	}
	if err := w.Close(); err == nil {
		t.Error("Close after a failed write succeeded")
	}
	empty()

	// Existing files are replaced only on a successful Close.
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err = safetensors.Create(p, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Errorf("aborted writer replaced the file: %q", b)
	}
	w, _ = safetensors.Create(p, infos, nil)
	w.WriteF32("a", []float32{1, 2})
	w.WriteF32("b", []float32{3, 4})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := safetensors.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.ReadF32("b"); v[0] != 3 || v[1] != 4 {
		t.Errorf("b = %v", v)
	}
	s.Close()
	if st, _ := os.Stat(p); st.Mode().Perm()&0o044 != 0o044 {
		t.Errorf("written file mode %v is not readable by others", st.Mode())
	}
}

// smallValid returns a valid small safetensors file: "a" F32 [2,3], "b" F16 [4].
func smallValidFile(t testing.TB) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.safetensors")
	w, err := safetensors.Create(p, []safetensors.TensorInfo{{Name: "a", DType: safetensors.F32, Shape: []int{2, 3}}, {Name: "b", DType: safetensors.F16, Shape: []int{4}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteF32("a", []float32{1, 2, 3, 4, 5, 6})
	w.WriteF32("b", []float32{-1, 0.5, 2, 100})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCorrupt(t *testing.T) {
	data := make([]byte, 40)
	hdrLen := func(n uint64, rest []byte) []byte {
		b := binary.LittleEndian.AppendUint64(nil, n)
		return append(b, rest...)
	}
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty file", nil, "too short"},
		{"short file", []byte{1, 2, 3}, "too short"},
		{"header length huge", hdrLen(1<<62, []byte(`{}`)), "beyond the end"},
		{"header length beyond file", hdrLen(100, []byte(`{"a":1}`)), "beyond the end"},
		{"header too small", hdrLen(1, []byte(`{}`)), "too short for a JSON object"},
		{"garbage JSON", buildRawFile(`{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]`, data), "malformed JSON"},
		{"not an object", buildRawFile(`[1, 2, 3]`, data), "not an object"},
		{"binary garbage", buildRawFile("\x00\xff\xfe\x01garbage", data), "malformed JSON"},
		{"trailing data", buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} xx`, data), "trailing data"},
		{"entry not an object", buildRawFile(`{"a": 5}`, data), `tensor "a": malformed entry`},
		{"missing field", buildRawFile(`{"a":{"dtype":"F32","shape":[2]}}`, data), "needs dtype, shape and data_offsets"},
		{"unknown dtype", buildRawFile(`{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}`, data), `unknown dtype "F31"`},
		{"negative dim", buildRawFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, data), "invalid dimension"},
		{"shape overflow", buildRawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}`, data), "overflow"},
		{"offsets size mismatch", buildRawFile(`{"x":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}}`, make([]byte, 120)),
			`tensor "x": data_offsets [0 100] do not match F32 [5 6] (120 bytes)`},
		{"offsets reversed", buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, data), "invalid data_offsets"},
		{"offsets negative", buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}`, data), "invalid data_offsets"},
		{"offsets three", buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}}`, data), "two entries"},
		{"offsets out of range", buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[36,44]}}`, data), "beyond the 40-byte data section"},
		{"truncated data", buildRawFile(`{"a":{"dtype":"F32","shape":[20],"data_offsets":[0,80]}}`, data), "truncated"},
		{"overlap", buildRawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, data), "overlap"},
		{"duplicate", buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, data), `duplicate entry "a"`},
		{"bad metadata", buildRawFile(`{"__metadata__":{"format":5}}`, data), "__metadata__"},
		{"float offsets", buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0.5,8]}}`, data), "malformed entry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, "model.safetensors", c.file)
			s, err := safetensors.OpenFile(p)
			if err == nil {
				s.Close()
				t.Fatal("opened without error")
			}
			if !errors.Is(err, safetensors.ErrCorrupt) {
				t.Errorf("error %q does not wrap ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q: want the file name and %q", err, c.want)
			}
		})
	}
	// A valid file with no tensors and gaps between tensors are accepted.
	for _, ok := range [][]byte{
		buildRawFile(`{}`, nil),
		buildRawFile(`{"__metadata__":{"format":"pt"}}  `, nil),
		buildRawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"b":{"dtype":"I8","shape":[],"data_offsets":[20,21]}}`, data),
	} {
		p := writeTemp(t, "ok.safetensors", ok)
		s, err := safetensors.OpenFile(p)
		if err != nil {
			t.Errorf("%q: %v", ok, err)
			continue
		}
		s.Close()
	}
}

// TestCorruptStories damages copies of the real checkpoint.
func TestCorruptStories(t *testing.T) {
	dir := storiesDir(t)
	orig, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(orig)
	hdr := string(orig[8 : 8+n])
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), orig...)) }
	replaceHdr := func(old, new string) []byte {
		if !strings.Contains(hdr, old) {
			t.Fatalf("header lacks %q", old)
		}
		h := strings.Replace(hdr, old, new, 1)
		return buildRawFile(h, orig[8+n:])
	}
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"header length huge", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b, 1<<40); return b }), "beyond the end"},
		{"truncated data", orig[:len(orig)-1000], "file truncated?"},
		{"truncated header", orig[:8+n/2], "beyond the end"},
		{"garbage JSON", mutate(func(b []byte) []byte { copy(b[8+n/2:], "\x00garbage\x01"); return b }), "malformed"},
		{"offsets out of range", replaceHdr(`"data_offsets":[1039872,1040128]`, `"data_offsets":[2039872,2040128]`), "beyond the"},
		{"offsets mismatch", replaceHdr(`"data_offsets":[1039872,1040128]`, `"data_offsets":[1039872,1040132]`), "do not match F32 [64]"},
		{"overlap", replaceHdr(`"data_offsets":[1039872,1040128]`, `"data_offsets":[0,256]`), "overlap"},
		{"unknown dtype", replaceHdr(`"dtype":"F32"`, `"dtype":"Q4_K"`), `unknown dtype "Q4_K"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			if err := os.WriteFile(filepath.Join(d, "model.safetensors"), c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := safetensors.Open(d)
			if err == nil {
				s.Close()
				t.Fatal("opened without error")
			}
			if !errors.Is(err, safetensors.ErrCorrupt) || !strings.Contains(err.Error(), "model.safetensors") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q: want ErrCorrupt naming the file and %q", err, c.want)
			}
		})
	}
	// The header is JSON with no spacing in this file, so the replacements
	// above matched; check the shape mismatch against the config too.
	t.Run("shape mismatch vs config", func(t *testing.T) {
		d := t.TempDir()
		// k_proj [32,64] (8192 bytes) declared as [64,32]: same size, wrong shape.
		f := replaceHdr(`"model.layers.2.self_attn.k_proj.weight":{"dtype":"F32","shape":[32,64]`,
			`"model.layers.2.self_attn.k_proj.weight":{"dtype":"F32","shape":[64,32]`)
		if err := os.WriteFile(filepath.Join(d, "model.safetensors"), f, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := safetensors.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		cfg, err := config.Load(filepath.Join(dir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		err = cfg.CheckWeights(s)
		if !errors.Is(err, config.ErrShapeMismatch) {
			t.Fatalf("CheckWeights: %v", err)
		}
		for _, want := range []string{"model.layers.2.self_attn.k_proj.weight", "[32 64]", "[64 32]"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
}

// writeShard writes the named tensors (values i*0.5+k) to a shard file.
func writeShardFile(t *testing.T, path string, names []string, shape []int, dt safetensors.DType) {
	t.Helper()
	var infos []safetensors.TensorInfo
	for _, n := range names {
		infos = append(infos, safetensors.TensorInfo{Name: n, DType: dt, Shape: shape})
	}
	w, err := safetensors.Create(path, infos, map[string]string{"shard": filepath.Base(path)})
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range names {
		v := make([]float32, safetensors.TensorInfo{Shape: shape}.NumElements())
		for i := range v {
			v[i] = float32(i)*0.5 + float32(k)
		}
		if err := w.WriteF32(n, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeIndex(t *testing.T, dir string, wm map[string]string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 123}, "weight_map": wm})
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSharded(t *testing.T) {
	dir := t.TempDir()
	s1, s2 := "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	writeShardFile(t, filepath.Join(dir, s1), []string{"a", "b"}, []int{2, 3}, safetensors.F32)
	writeShardFile(t, filepath.Join(dir, s2), []string{"c"}, []int{4}, safetensors.BF16)
	writeIndex(t, dir, map[string]string{"a": s1, "b": s1, "c": s2})
	s, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ts := s.Tensors()
	if len(ts) != 3 || ts[0].Name != "a" || ts[2].Name != "c" {
		t.Fatalf("tensors %+v", ts)
	}
	if ts[2].File != filepath.Join(dir, s2) || ts[0].File != filepath.Join(dir, s1) {
		t.Errorf("files %q %q", ts[0].File, ts[2].File)
	}
	if v, err := s.ReadF32("b"); err != nil || v[5] != 3.5 {
		t.Errorf("b = %v %v", v, err)
	}
	if v, err := s.ReadF32("c"); err != nil || v[3] != 1.5 {
		t.Errorf("c = %v %v", v, err)
	}
	if m := s.Metadata(); m["format"] != "pt" || m["shard"] != s1 {
		t.Errorf("metadata %v", m)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The index path itself can be given.
	s, err = safetensors.Open(filepath.Join(dir, "model.safetensors.index.json"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	bad := []struct {
		name string
		wm   map[string]string
		want string
	}{
		{"missing shard", map[string]string{"a": s1, "b": s1, "c": "model-00003-of-00002.safetensors"}, "model-00003"},
		{"wrong shard", map[string]string{"a": s1, "b": s2, "c": s2}, `tensor "b": weight_map says`},
		{"absent tensor", map[string]string{"a": s1, "b": s1, "c": s2, "d": s2}, `tensor "d": listed in weight_map`},
		{"escaping path", map[string]string{"a": "../x.safetensors"}, "invalid shard file name"},
		{"empty", map[string]string{}, "no weight_map"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			writeIndex(t, dir, c.wm)
			s, err := safetensors.Open(dir)
			if err == nil {
				s.Close()
				t.Fatal("opened without error")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q lacks %q", err, c.want)
			}
		})
	}
	t.Run("duplicate across shards", func(t *testing.T) {
		d := t.TempDir()
		writeShardFile(t, filepath.Join(d, s1), []string{"a", "b"}, []int{2}, safetensors.F32)
		writeShardFile(t, filepath.Join(d, s2), []string{"b"}, []int{2}, safetensors.F32)
		writeIndex(t, d, map[string]string{"a": s1, "b": s2})
		if s, err := safetensors.Open(d); err == nil || !errors.Is(err, safetensors.ErrCorrupt) || !strings.Contains(err.Error(), `"b" is in both`) {
			if s != nil {
				s.Close()
			}
			t.Errorf("error %v", err)
		}
	})
	t.Run("malformed index", func(t *testing.T) {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, "model.safetensors.index.json"), []byte(`{"weight_map": [`), 0o644)
		if _, err := safetensors.Open(d); !errors.Is(err, safetensors.ErrCorrupt) || !strings.Contains(err.Error(), "index.json") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("corrupt shard", func(t *testing.T) {
		d := t.TempDir()
		writeShardFile(t, filepath.Join(d, s1), []string{"a"}, []int{2}, safetensors.F32)
		os.WriteFile(filepath.Join(d, s2), []byte("garbage garbage"), 0o644)
		writeIndex(t, d, map[string]string{"a": s1, "b": s2})
		if _, err := safetensors.Open(d); !errors.Is(err, safetensors.ErrCorrupt) || !strings.Contains(err.Error(), s2) {
			t.Errorf("error %v", err)
		}
	})
	t.Run("empty folder", func(t *testing.T) {
		if _, err := safetensors.Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no model.safetensors") {
			t.Errorf("error %v", err)
		}
	})
}

// TestShardedStories splits stories260K into two shards and checks that the
// sharded model reads identically and passes CheckWeights.
func TestShardedStories(t *testing.T) {
	dir := storiesDir(t)
	src, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := t.TempDir()
	ts := src.Tensors()
	half := len(ts) / 2
	wm := map[string]string{}
	for i, part := range [][]safetensors.TensorInfo{ts[:half], ts[half:]} {
		name := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[i]
		w, err := safetensors.Create(filepath.Join(out, name), part, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range part {
			v, _ := src.ReadF32(ti.Name)
			if err := w.WriteF32(ti.Name, v); err != nil {
				t.Fatal(err)
			}
			wm[ti.Name] = name
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex(t, out, wm)
	s, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckWeights(s); err != nil {
		t.Fatal(err)
	}
	for _, ti := range ts {
		a, _ := src.ReadRaw(ti.Name)
		b, err := s.ReadRaw(ti.Name)
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs (%v)", ti.Name, err)
		}
	}
}

func TestReadF32LargeChunked(t *testing.T) {
	// A tensor larger than the streaming chunk, in each float dtype.
	n := safetensors.ChunkBytes/2 + 12345
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i%1000) - 500.25
	}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F16, safetensors.BF16} {
		p := filepath.Join(t.TempDir(), "big.safetensors")
		w, err := safetensors.Create(p, []safetensors.TensorInfo{{Name: "pad", DType: safetensors.U8, Shape: []int{3}}, {Name: "big", DType: dt, Shape: []int{n}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteRaw("pad", []byte{1, 2, 3}) // misaligns the big tensor on purpose
		if err := w.WriteF32("big", v); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := safetensors.OpenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.ReadF32("big")
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := range v {
			want := v[i]
			switch dt {
			case safetensors.F16:
				want = half.F16ToF32(half.F32ToF16(want))
			case safetensors.BF16:
				want = half.BF16ToF32(half.F32ToBF16(want))
			}
			if got[i] != want {
				t.Fatalf("%s[%d] = %v, want %v", dt, i, got[i], want)
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	valid := smallValidFile(f)
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(buildRawFile(`{}`, nil))
	f.Add(buildRawFile(`{"__metadata__":{"format":"pt"}}`, nil))
	f.Add(buildRawFile(`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}}`, make([]byte, 16)))
	f.Add(buildRawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, make([]byte, 16)))
	f.Add(buildRawFile(`{"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}`, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'})
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "fuzz.safetensors")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := safetensors.OpenFile(p)
		if err != nil {
			if !errors.Is(err, safetensors.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		defer s.Close()
		s.Metadata()
		for _, ti := range s.Tensors() {
			if ti.Offset < 0 || ti.Offset+ti.Size > int64(len(b)) {
				t.Fatalf("%s: range [%d,%d) outside the %d-byte file", ti.Name, ti.Offset, ti.Offset+ti.Size, len(b))
			}
			raw, err := s.ReadRaw(ti.Name)
			if err != nil {
				t.Fatalf("ReadRaw(%q): %v", ti.Name, err)
			}
			if int64(len(raw)) != ti.Size {
				t.Fatalf("ReadRaw(%q): %d bytes, want %d", ti.Name, len(raw), ti.Size)
			}
			v, err := s.ReadF32(ti.Name)
			if ti.DType.IsFloat() != (err == nil) {
				t.Fatalf("ReadF32(%q) %s: %v", ti.Name, ti.DType, err)
			}
			if err == nil && int64(len(v)) != ti.NumElements() {
				t.Fatalf("ReadF32(%q): %d values, want %d", ti.Name, len(v), ti.NumElements())
			}
		}
	})
}
