// Package optim holds the optimizers: LOMO and AdaLomo, which run inside the
// backward pass as nn.GradFunc callbacks and drop each gradient at once, and
// the SGD and AdamW baselines that keep every gradient until the end of the
// pass (for comparison and for `lomo plan`), and AdamW for LoRA adapters,
// alone or beside LOMO/AdaLomo in the same backward pass (Config.LoRA).
// Also the learning-rate
// schedules, the dynamic loss scaler and two-pass gradient-norm clipping
// (REFERENCE.md §1-4).
package optim
