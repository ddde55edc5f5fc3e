// Package nn is lomo's model layer: Tensors on a gpu.Device, Params, the
// forward/backward op pairs of a LLaMA block, a Tape that records the
// backward of a forward pass, activation checkpointing, and the LLaMA model,
// with LoRA adapters on its linear layers (lora.go: their weights frozen or
// not; PEFT folders loaded, saved and merged) and its blocks placed on one
// device or split over several (placement.go).
//
// The contract everything above relies on (DESIGN.md, contract 1):
// Tape.Backward(loss, callback) calls callback exactly once per trainable
// parameter with its complete gradient (tied weights: summed), in reverse
// order of use, and releases that gradient when the callback returns. An
// optimizer is such a callback: LOMO updates the parameter in place and the
// gradient is gone before the next one exists.
package nn
