package train

import (
	"time"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/wgsl"
)

// Probe is the adapter's ceilings as measured by the probe kernels
// (wgsl/probe.wgsl): every kernel and step figure of `lomo bench` is also
// given as a fraction of them.
type Probe struct {
	FMAF32GFLOPs float64 `json:"fma_f32_gflops"`
	FMAF16GFLOPs float64 `json:"fma_f16_gflops,omitempty"` // 0 without shader-f16
	CopyGBs      float64 `json:"copy_gb_per_s"`            // bytes read + written per second / 1e9
}

// probeMinSeconds is how long a timed probe runs at least: long enough that
// submit and synchronisation costs vanish next to it.
const probeMinSeconds = 0.05

// timeBest returns the best time of three runs of run, each followed by a
// Sync.
func timeBest(d *gpu.Device, run func() error) (float64, error) {
	best := 0.0
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		if err := run(); err != nil {
			return 0, err
		}
		if err := d.Sync(); err != nil {
			return 0, err
		}
		if s := time.Since(t0).Seconds(); i == 0 || s < best {
			best = s
		}
	}
	return best, nil
}

// ProbePeaks measures the f32 (and, with shader-f16, f16) FMA throughput
// and the copy bandwidth of d, growing each probe until one run takes
// probeMinSeconds.
func ProbePeaks(d *gpu.Device) (Probe, error) {
	var p Probe
	const threads = 256 * 1024
	out, err := d.NewBuffer(gpu.TagScratch, 4*threads)
	if err != nil {
		return p, err
	}
	defer out.Release()
	dts := []gpu.DType{gpu.F32}
	if d.Caps.F16 {
		dts = append(dts, gpu.F16)
	}
	for _, dt := range dts {
		iters := 16
		for {
			sec, err := timeBest(d, func() error { return wgsl.ProbeFMA(d, out, dt, threads, iters, 0.75, 0.25) })
			if err != nil {
				return p, err
			}
			if sec >= probeMinSeconds || iters >= 1<<20 {
				g := float64(threads) * float64(iters) * float64(wgsl.ProbeFMAFlops(dt)) / sec / 1e9
				if dt == gpu.F16 {
					p.FMAF16GFLOPs = g
				} else {
					p.FMAF32GFLOPs = g
				}
				break
			}
			iters *= 2
		}
	}
	// Copy: 64 MiB each way (within every adapter's storage binding limit),
	// repeated until a batch of copies takes probeMinSeconds.
	n := 4 << 20 // vec4<f32>
	if max := int(d.Limits().MaxStorageBufferBindingSize / 16); n > max {
		n = max
	}
	src, err := d.NewBuffer(gpu.TagScratch, 16*int64(n))
	if err != nil {
		return p, err
	}
	defer src.Release()
	dst, err := d.NewBuffer(gpu.TagScratch, 16*int64(n))
	if err != nil {
		return p, err
	}
	defer dst.Release()
	for reps := 1; ; reps *= 2 {
		sec, err := timeBest(d, func() error {
			for i := 0; i < reps; i++ {
				if err := wgsl.ProbeCopy(d, dst, src, n); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return p, err
		}
		if sec >= probeMinSeconds || reps >= 1<<14 {
			p.CopyGBs = float64(reps) * 32 * float64(n) / sec / 1e9
			break
		}
	}
	return p, nil
}
