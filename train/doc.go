// Package train runs fine-tuning: the Trainer (epochs, evaluation,
// checkpoints, resume, metric events, one loop for the native and the
// browser build) and the memory planner behind `lomo plan`.
package train
