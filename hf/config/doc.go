// Package config reads, validates and writes the config.json of a Hugging
// Face LLaMA-family model (Llama), with the defaults of transformers'
// LlamaConfig, and checks a model's weights against it (shapes, dtypes,
// tied or separate LM head).
package config
