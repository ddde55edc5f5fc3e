package gpu

import (
	"sort"
	"time"
)

// KernelTime is the time a kernel took over a profiled stretch of work.
type KernelTime struct {
	Kernel  string  `json:"kernel"`
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
}

// profiler times each dispatch by waiting for the queue before and after
// it: the wall time of one submit and wait per dispatch. That includes the
// submit's overhead and serializes the device, so small kernels read slow;
// the large ones, which decide a step's time, read true.
type profiler struct {
	byKernel map[string]*KernelTime
}

// StartProfile makes every later dispatch wait for the device before and
// after it and charge the time to its kernel, until StopProfile. Work runs
// much slower meanwhile: profile a separate step, not a timed one.
func (d *Device) StartProfile() error {
	if err := d.Sync(); err != nil {
		return err
	}
	d.prof = &profiler{byKernel: map[string]*KernelTime{}}
	return nil
}

// StopProfile ends profiling and returns the kernels' times, the slowest
// first.
func (d *Device) StopProfile() []KernelTime {
	p := d.prof
	d.prof = nil
	if p == nil {
		return nil
	}
	out := make([]KernelTime, 0, len(p.byKernel))
	for _, k := range p.byKernel {
		out = append(out, *k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seconds > out[j].Seconds })
	return out
}

// profiled runs one dispatch under the profiler.
func (d *Device) profiled(name string, dispatch func() error) error {
	if err := d.Sync(); err != nil {
		return err
	}
	t0 := time.Now()
	if err := dispatch(); err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		return err
	}
	k := d.prof.byKernel[name]
	if k == nil {
		k = &KernelTime{Kernel: name}
		d.prof.byKernel[name] = k
	}
	k.Calls++
	k.Seconds += time.Since(t0).Seconds()
	return nil
}
