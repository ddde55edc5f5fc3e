// Package tokenizer reads Hugging Face tokenizer.json files of BPE models
// (SentencePiece-style as in Llama-2, byte-level as in GPT-2 and Llama-3) and
// encodes and decodes text exactly as the tokenizers library does. It also
// trains a small byte-level BPE (TrainBPE) for the built-in demo model.
//
// The files follow the pipeline: tokenizer.go loads the file and splits out
// added tokens, normalize.go, pretokenize.go and bpe.go turn a segment into
// ids, decode.go turns ids back into text.
package tokenizer
