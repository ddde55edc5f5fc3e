// Package data turns task files into training batches: the SuperGLUE tasks
// (BoolQ, CB, COPA, MultiRC, ReCoRD, RTE, WiC, WSC) and lomo's own jsonl
// formats, their prompts, the collator that packs tokenized examples into
// batches, the metrics (accuracy, F1, exact match), and the built-in demo:
// the synthetic corpus and task, and the model lomo pretrained on them.
//
// The Hugging Face file formats live in hf/: the tokenizer, safetensors and
// the model config.
package data
