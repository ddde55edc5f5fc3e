// Package safetensors reads and writes the safetensors format of Hugging
// Face: single files and sharded models (model.safetensors.index.json), F32,
// F16 and BF16 tensors read as float32, headers validated so that a
// malformed or truncated file is an error wrapping ErrCorrupt, never a
// panic. Writes go to a temporary file that replaces the target only when
// every tensor was written.
package safetensors
