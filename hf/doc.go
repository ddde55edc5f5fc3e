// Package hf groups lomo's readers and writers of Hugging Face formats, each
// in its own package: tokenizer (tokenizer.json), safetensors (weights,
// sharded or not), config (config.json) and cache (models named by Hub id,
// found in the local Hugging Face cache).
package hf
