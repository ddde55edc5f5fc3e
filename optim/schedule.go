package optim

import (
	"fmt"
	"math"
)

// Schedule is a learning-rate schedule (REFERENCE §4).
type Schedule struct {
	Kind   string  // "linear", "constant" or "cosine"
	LR     float64 // peak learning rate
	Warmup float64 // <= 1: a fraction of Total; > 1: a number of steps
	Total  int     // total optimizer steps
}

// Validate checks the kind and the numbers.
func (s Schedule) Validate() error {
	switch s.Kind {
	case "linear", "constant", "cosine":
	default:
		return fmt.Errorf("optim: unknown lr_scheduler_type %q (linear, constant, cosine)", s.Kind)
	}
	if s.LR < 0 || s.Warmup < 0 || s.Total < 0 || math.IsNaN(s.LR) {
		return fmt.Errorf("optim: schedule with negative or NaN values: %+v", s)
	}
	return nil
}

// At returns the learning rate at step (counted from 1).
func (s Schedule) At(step int) float64 {
	total := float64(max(2, s.Total))
	progress := float64(step) / total
	warm := s.Warmup
	if warm > 1 {
		warm /= total // a step count
	}
	var f float64
	switch {
	case warm > 0 && progress < warm:
		f = progress / warm
	case s.Kind == "constant":
		f = 1
	case s.Kind == "cosine":
		f = 0.5 * (1 + math.Cos(math.Pi*(progress-warm)/(1-warm)))
	default: // linear decay to 0 at the end
		f = (1 - progress) / (1 - warm)
	}
	return s.LR * math.Max(0, math.Min(1, f))
}
