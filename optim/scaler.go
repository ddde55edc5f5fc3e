package optim

// LossScaler is fp16 dynamic loss scaling (REFERENCE §2): the loss is
// multiplied by Scale before backward so that small gradients survive fp16;
// an overflow halves the scale and skips the step; after Window consecutive
// good steps the scale doubles (the reference never grows it, a bug; this
// one does). The reference's window is 1000 steps; New picks a shorter one
// for short runs (ScaleWindow), so that a scale that fell early can recover
// within the run.
type LossScaler struct {
	Scale    float64
	Factor   float64
	Window   int
	MinScale float64
	Dynamic  bool // false: a static scale (AdaLomo's 2^10 under fp16)
	good     int
}

// NewDynamicScaler returns the reference defaults: 2^16, x2, 1000 steps, min 1.
func NewDynamicScaler() *LossScaler {
	return &LossScaler{Scale: 1 << 16, Factor: 2, Window: ReferenceScaleWindow, MinScale: 1, Dynamic: true}
}

// ReferenceScaleWindow is the reference's growth interval (DynamicLossScaler
// scale_window): good steps in a row before the scale doubles.
const ReferenceScaleWindow = 1000

// ScaleWindow is the growth interval for a run of total steps when none is
// configured: a tenth of the run, at least 10 steps and at most the
// reference's 1000. With 1000, a scale that fell in the first steps of a
// 100-step run would stay low to its end.
func ScaleWindow(total int) int {
	return min(ReferenceScaleWindow, max(10, total/10))
}

// NewStaticScaler keeps one scale (1 means no scaling).
func NewStaticScaler(scale float64) *LossScaler {
	return &LossScaler{Scale: scale, Factor: 2, Window: 1000, MinScale: 1}
}

// Update records a step's outcome and reports whether it must be skipped.
func (s *LossScaler) Update(overflow bool) (skip bool) {
	if overflow {
		s.good = 0
		if s.Dynamic {
			s.Scale = max(s.MinScale, s.Scale/s.Factor)
		}
		return true
	}
	s.good++
	if s.Dynamic && s.good >= s.Window {
		s.Scale *= s.Factor
		s.good = 0
	}
	return false
}

// GoodSteps is the count of good steps since the last change.
func (s *LossScaler) GoodSteps() int { return s.good }
