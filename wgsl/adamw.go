package wgsl

import (
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// AdamWParams mirrors Params in adamw.wgsl.
type AdamWParams struct {
	N, _, _, _              uint32
	LR, B1, B2, Eps         float32
	WD, BC1, BC2, GradScale float32
}

const adamwF32 = `p[i] = step(i, p[i]);
	if (i + 1u < u.n) { p[i + 1u] = step(i + 1u, p[i + 1u]); }`

const adamwHalf = `let a = step(i, master[i]);
	master[i] = a;
	var b = 0.0;
	if (i + 1u < u.n) { b = step(i + 1u, master[i + 1u]); master[i + 1u] = b; }
	p[j] = {{P_PACK}}(vec2<f32>(a, b));`

// AdamWStep holds one step's scalars; BC1 = 1-beta1^t, BC2 = 1-beta2^t.
type AdamWStep struct{ LR, Beta1, Beta2, Eps, WeightDecay, BC1, BC2, GradScale float32 }

// AdamWUpdate records an AdamW step on n parameters from their gradient
// (f32, f16 or bf16 by gt, read in f32). For 16-bit parameters, master is
// the f32 master copy; for f32 it must be nil (a 4-byte placeholder is bound).
func AdamWUpdate(d *gpu.Device, param, master, m, v, grad *gpu.Buffer, pt, gt gpu.DType, n int, s AdamWStep) error {
	if err := checkLen("adamw", n, gpu.F32, m, v); err != nil {
		return err
	}
	if err := checkLen("adamw", n, gt, grad); err != nil {
		return err
	}
	if param.Size() < pt.Bytes(n) {
		return fmt.Errorf("wgsl: adamw: param holds %d bytes, needs %d", param.Size(), pt.Bytes(n))
	}
	body := adamwF32
	if pt.Half() {
		if master == nil || master.Size() < int64(4*n) {
			return fmt.Errorf("wgsl: adamw: %v parameters need an f32 master copy of %d elements", pt, n)
		}
		body = adamwHalf
	} else {
		var err error
		if master, err = d.NewBuffer(gpu.TagScratch, 4); err != nil {
			return err
		}
		defer master.Release()
	}
	p := AdamWParams{N: uint32(n), LR: s.LR, B1: s.Beta1, B2: s.Beta2, Eps: s.Eps, WD: s.WeightDecay, BC1: s.BC1, BC2: s.BC2, GradScale: s.GradScale}
	subst := pairSubst(nil, "P", "p", pt)
	delete(subst, "P_AT")
	subst["BODY"] = strings.ReplaceAll(body, "{{P_PACK}}", subst["P_PACK"])
	subst = pairSubst(subst, "G", "grad", gt)
	k, err := kernel(d, "adamw", pt.String()+gradVariant(gt), subst, []gpu.Access{rw, rw, rw, rw, ro}, p)
	if err != nil {
		return err
	}
	x, y, z := d.Grid((n+1)/2, 256)
	return d.Dispatch(k, gpu.Params(p), []*gpu.Buffer{param, master, m, v, grad}, x, y, z)
}
