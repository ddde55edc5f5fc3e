// Package data holds tokenizers, datasets and prompts, the collator,
// safetensors and Hugging Face config loading.
package data
