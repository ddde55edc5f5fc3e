package wgsl

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math"
	"time"

	"github.com/lomo-dev/lomo/gpu"
)

// The tuning cache (gpu.Device.TuningCache) is kept per version of the
// kernels' sources: changed kernels are tuned again. (A choice also names
// its variant: one that no longer exists is timed again too.)
func init() {
	h := sha256.New()
	_ = fs.WalkDir(files, ".", func(path string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := files.ReadFile(path)
			fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
			h.Write(b)
		}
		return nil
	})
	gpu.KernelSources = fmt.Sprintf("%x", h.Sum(nil)[:8])
}

// Tuning. Some kernels have variants that compute the same bits and differ
// in speed only, by an amount that depends on the adapter: matmul's tilings
// (Tile), attention's row and block kernels. Where the device tunes
// (gpu.Device.Tunes: GPUs, unless --tune off), the first call of each key
// (kernel, dtypes, layouts, shape) runs every variant a few times, each run
// waited for alone, and keeps the fastest for the later calls; the last
// timing run leaves the call's result in place. Results do not depend on
// the choice, so a run is reproducible across adapters and tunings.

// tuneReps is how many timed runs each variant gets after the untimed
// first one (which compiles its kernel); its time is the fastest. A variant
// whose first timed run takes over tuneCut times the best so far gets no
// more: it would not win.
const (
	tuneReps = 3
	tuneCut  = 1.5
)

// TuneMinFlops is the least work (floating-point operations) of a call that
// is tuned; smaller calls take the first variant. Below it, the waits for
// the queue that timing needs would cost more than a better variant saves.
var TuneMinFlops = 1e8

// tuned runs one of the variants of a call: the one chosen for key before;
// else, when d tunes, repeat is true and the call is worth tuning (flops),
// each variant in turn, timed, recording the fastest; else the first. run(i)
// records variant i of the call. repeat says that the call may run several
// times with the same result: its outputs do not depend on what they
// overwrite and alias none of its inputs.
func tuned(d *gpu.Device, key string, variants []string, repeat bool, flops float64, run func(i int) error) error {
	var probe func(int) error
	if repeat {
		probe = run
	}
	return tunedProbed(d, key, variants, flops, probe, run, false)
}

// tunedProbed is tuned for a call that may not run twice (it overwrites its
// inputs) but can be timed without a lasting effect: probe(i) records
// variant i doing the call's work and writing nothing, and after the timing
// run(i) records the chosen variant i once (with final; without, the last
// timed run has left the call's result: tuned with repeat). A nil probe
// cannot time the call.
func tunedProbed(d *gpu.Device, key string, variants []string, flops float64, probe, run func(i int) error, final bool) error {
	if c, ok := d.Choice(key); ok {
		for i, v := range variants {
			if v == c.Chosen {
				return run(i)
			}
		}
	}
	if !d.Tunes() || probe == nil || len(variants) < 2 || flops < TuneMinFlops {
		return run(0)
	}
	c := gpu.Choice{Key: key}
	best, chosen := math.Inf(1), 0
	for i, v := range variants {
		if err := probe(i); err != nil { // compiles the variant's kernel
			return err
		}
		t, runs := math.Inf(1), 0
		for runs < tuneReps {
			if err := d.Sync(); err != nil {
				return err
			}
			t0 := time.Now()
			if err := probe(i); err != nil {
				return err
			}
			if err := d.Sync(); err != nil {
				return err
			}
			t = min(t, time.Since(t0).Seconds())
			if runs++; t > tuneCut*best {
				break
			}
		}
		c.Timed = append(c.Timed, gpu.Timing{Variant: v, Seconds: t, Runs: runs})
		if t < best {
			best, c.Chosen, chosen = t, v, i
		}
	}
	d.Choose(c)
	if !final {
		return nil
	}
	return run(chosen)
}
