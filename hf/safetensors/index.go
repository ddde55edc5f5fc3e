package safetensors

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type safetensorsIndex struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// openIndex opens a sharded model from its model.safetensors.index.json.
func openIndex(indexPath string) (_ *Reader, err error) {
	b, err := os.ReadFile(indexPath)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var idx safetensorsIndex
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, corruptf(indexPath, "malformed index JSON: %v", err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, corruptf(indexPath, "index has no weight_map")
	}
	dir := filepath.Dir(indexPath)
	s := &Reader{
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
			return nil, corruptf(indexPath, "tensor %q: invalid shard file name %q", name, shard)
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
			return nil, fmt.Errorf("safetensors: %s: shard: %w", indexPath, err)
		}
		s.files[p] = f
		infos, meta, err := readHeader(f, p)
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
				return nil, corruptf(indexPath, "tensor %q is in both %s and %s", ti.Name, prev, sh)
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
			return nil, corruptf(indexPath, "tensor %q: listed in weight_map for %s but not found there", name, want)
		} else if got != want {
			return nil, corruptf(indexPath, "tensor %q: weight_map says %s but it is in %s", name, want, got)
		}
	}
	s.sort()
	return s, nil
}
