// Package hf groups lomo's readers and writers of Hugging Face formats, each
// in its own package: tokenizer (tokenizer.json), safetensors (weights,
// sharded or not) and config (config.json).
package hf
