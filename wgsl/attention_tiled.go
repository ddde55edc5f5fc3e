package wgsl

import (
	"fmt"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
)

// attentionTiling is the shape of the tiled attention kernels (entry point
// "tiled" of the forward, dq and dkdv sections of attention.wgsl): head
// size dh, rq rows per thread (query rows; key rows for dkdv) against 8
// columns (keys; queries for dkdv), 8*64/rq threads, chunks of ch columns
// of q, k, v, dout (or rows of them) in workgroup memory.
type attentionTiling struct{ dh, rq, ch int }

// dv is the output columns per thread, ceil(dh/8).
func (t attentionTiling) dv() int { return (t.dh + 7) / 8 }

// threads is the workgroup size.
func (t attentionTiling) threads() int { return 8 * attentionWG / t.rq }

// cw and cdw are the lengths of the chunk arrays: ch columns of 64 rows,
// and the same or ch rows of 8*dv columns.
func (t attentionTiling) cw() int  { return t.ch * attentionWG }
func (t attentionTiling) cdw() int { return max(t.ch*attentionWG, t.ch*8*t.dv()) }

// sharedBytes is the workgroup memory of the largest of the three kernels:
// the forward's q and k/v chunks, the block's probabilities and the rows'
// partial maxima; dq's q, dout, v and k chunks and the block's dS; dkdv's
// q, dout, k and v chunks and half a block's P and dS.
func (t attentionTiling) sharedBytes() int {
	wg2 := attentionWG * attentionWG
	forward := t.cw() + t.cdw() + wg2 + attentionWG*8
	dq := 3*t.cw() + t.cdw() + wg2
	dkdv := 2*t.cdw() + 2*t.cw() + wg2
	return 4 * max(forward, dq, dkdv)
}

// attentionChunk is the chunk of the tiled kernels for head size dh on d:
// 16 where the workgroup memory holds it, else 8.
func attentionChunk(d *gpu.Device, dh int) int {
	if (attentionTiling{dh: dh, rq: 8, ch: 16}).sharedBytes() <= workgroupStorage(d) {
		return 16
	}
	return 8
}

// workgroupStorage is d's workgroup memory per workgroup, in bytes.
func workgroupStorage(d *gpu.Device) int {
	limit := int(d.Limits().MaxComputeWorkgroupStorageSize)
	if limit == 0 {
		limit = 16384 // WebGPU's default; a dry device reports no limits
	}
	return limit
}

// attentionTiled lists the rows per thread of the tiled kernels that run
// head size dh on d, the first one first (none: the row kernels, or the
// backward's block kernels, run). Up to head size 128, with the tiles'
// arrays in the workgroup memory; 8 rows per thread (64 threads) up to
// head size 64, and 4 (128 threads), whose registers stay within what a GPU
// thread holds where 8 rows' would not (tuning picks between them).
func attentionTiled(d *gpu.Device, dh int) []int {
	if AttentionRowKernels || dh > 128 {
		return nil
	}
	if strings.Contains(strings.ToLower(d.Info.Name), "swiftshader") {
		// Chromium's SwiftShader compiled the tiled forward (head size 4,
		// 8 rows per thread) for 137 s, after which the page had lost its
		// WebGPU instance ("A valid external Instance reference no longer
		// exists"): the row kernels run there.
		return nil
	}
	var rqs []int
	for _, rq := range []int{8, 4} {
		t := attentionTiling{dh: dh, rq: rq, ch: attentionChunk(d, dh)}
		if rq == 8 && dh > 64 || t.sharedBytes() > workgroupStorage(d) {
			continue
		}
		if lim := d.Limits().MaxComputeInvocations; lim != 0 && t.threads() > int(lim) {
			continue
		}
		rqs = append(rqs, rq)
	}
	return rqs
}

// gen writes lines of WGSL, each format expanded for every index of the
// loops it is given.
type gen struct{ strings.Builder }

// line writes one line at the given indent.
func (g *gen) line(indent int, format string, args ...any) {
	g.WriteString(strings.Repeat("\t", indent))
	fmt.Fprintf(&g.Builder, format, args...)
	g.WriteByte('\n')
}

// subst sets the tiled kernels' placeholders: their sizes, and their
// per-thread arithmetic written out with constant names, row a and column
// c or e, so that it stays in registers (a per-thread array indexed at run
// time lives in memory).
func (t attentionTiling) subst(s map[string]string) {
	s["DH"], s["RQ"], s["NT"], s["DV"], s["CH"] = fmt.Sprint(t.dh), fmt.Sprint(t.rq), fmt.Sprint(t.threads()), fmt.Sprint(t.dv()), fmt.Sprint(t.ch)
	s["CW"], s["CDW"] = fmt.Sprint(t.cw()), fmt.Sprint(t.cdw())
	t.forward(s)
	t.dq(s)
	t.dkdv(s)
}

// forward: s{a}_{c} the scores (then NEG where masked) of row a and key c,
// o{a}_{e} the outputs, m{a}, l{a}, cr{a} (corr), bl{a}, act{a} (the row
// takes part in the block).
func (t attentionTiling) forward(s map[string]string) {
	rows, dv := t.rq, t.dv()
	var decl, zero, score, mask, prob, rescale, pv, sum, end gen
	for a := range rows {
		for c := range 8 {
			decl.line(1, "var s%d_%d = 0.0;", a, c)
			zero.line(2, "s%d_%d = 0.0;", a, c)
		}
		for e := range dv {
			decl.line(1, "var o%d_%d = 0.0;", a, e)
		}
		decl.line(1, "var m%d = NEG;", a)
		decl.line(1, "var l%d = 0.0;", a)
		decl.line(1, "var cr%d = 0.0;", a)
		decl.line(1, "var bl%d = 0.0;", a)
		decl.line(1, "var act%d = false;", a)
	}
	for a := range rows {
		score.line(4, "let q%d = tq_s[qb + %du];", a, a)
	}
	for c := range 8 {
		score.line(4, "let k%d = tkv_s[kb + %du];", c, c)
	}
	for a := range rows {
		for c := range 8 {
			score.line(4, "s%d_%d = fma(q%d, k%d, s%d_%d);", a, c, a, c, a, c)
		}
	}
	for a := range rows {
		mask.line(2, "{")
		mask.line(3, "let t = t0 + r0 + %du;", a)
		mask.line(3, "act%d = t < p.T && s0 <= t;", a)
		mask.line(3, "var mx = NEG;")
		for c := range 8 {
			mask.line(3, "s%d_%d = select(NEG, p.scale * s%d_%d, act%d && s0 + tk * 8u + %du <= t);", a, c, a, c, a, c)
			mask.line(3, "mx = max(mx, s%d_%d);", a, c)
		}
		mask.line(3, "tmax_s[(r0 + %du) * 8u + tk] = mx;", a)
		mask.line(2, "}")
		prob.line(2, "{")
		prob.line(3, "let t = t0 + r0 + %du;", a)
		prob.line(3, "var bm = NEG;")
		prob.line(3, "for (var u = 0u; u < 8u; u++) { bm = max(bm, tmax_s[(r0 + %du) * 8u + u]); }", a)
		prob.line(3, "let mn = max(m%d, bm);", a)
		prob.line(3, "cr%d = exp(m%d - mn);", a, a)
		prob.line(3, "if (act%d) { m%d = mn; }", a, a)
		for c := range 8 {
			prob.line(3, "tp_s[(r0 + %du) * WG + tk * 8u + %du] = select(0.0, exp(s%d_%d - mn), act%d && s0 + tk * 8u + %du <= t);", a, c, a, c, a, c)
		}
		prob.line(2, "}")
		rescale.line(2, "bl%d = 0.0;", a)
		rescale.line(2, "if (act%d) {", a)
		for e := range dv {
			rescale.line(3, "o%d_%d = o%d_%d * cr%d;", a, e, a, e, a)
		}
		rescale.line(2, "}")
		sum.line(2, "if (act%d) { l%d = fma(l%d, cr%d, bl%d); }", a, a, a, a, a)
		// Row a's outputs; a padding row (t < start[b]) attends only
		// itself: the row kernel's one-key block (nj = 1), with the same
		// operations.
		end.line(1, "{")
		end.line(2, "let t = t0 + r0 + %du;", a)
		end.line(2, "if (t < p.T) {")
		end.line(3, "let qo = qrow(b, t, h);")
		end.line(3, "if (t < st) {")
		end.line(4, "let ko = krow(b, t, kh);")
		end.line(4, "let x = p.scale * dot_qk(qo, ko);")
		end.line(4, "let mn = max(m%d, x);", a)
		end.line(4, "let pr = exp(x - mn);")
		end.line(4, "let cr = exp(m%d - mn);", a)
		end.line(4, "m%d = mn;", a)
		end.line(4, "var b1 = 0.0;")
		end.line(4, "b1 = b1 + pr;")
		end.line(4, "l%d = fma(l%d, cr, b1);", a, a)
		for e := range dv {
			end.line(4, "if (tk * DV + %du < DH) { o%d_%d = fma(pr, v_at(ko + tk * DV + %du), o%d_%d * cr); }", e, a, e, e, a, e)
		}
		end.line(3, "}")
		end.line(3, "let inv = 1.0 / l%d;", a)
		for e := range dv {
			end.line(3, "if (tk * DV + %du < DH) { out_st(qo + tk * DV + %du, o%d_%d * inv); }", e, e, a, e)
		}
		end.line(3, "if (tk == 0u) { lse[(b * p.H + h) * p.T + t] = m%d + log(l%d); }", a, a)
		end.line(2, "}")
		end.line(1, "}")
	}
	for e := range dv {
		pv.line(4, "let v%d = tkv_s[vb + %du];", e, e)
	}
	for a := range rows {
		pv.line(4, "if (act%d) {", a)
		pv.line(5, "let pr = tp_s[pb + %du];", a*attentionWG)
		pv.line(5, "bl%d = bl%d + pr;", a, a)
		for e := range dv {
			pv.line(5, "o%d_%d = fma(pr, v%d, o%d_%d);", a, e, e, a, e)
		}
		pv.line(4, "}")
	}
	s["T_DECL"], s["T_ZERO"], s["T_SCORE"], s["T_MASK"], s["T_PROB"] = decl.String(), zero.String(), score.String(), mask.String(), prob.String()
	s["T_RESCALE"], s["T_PV"], s["T_SUM"], s["T_END"] = rescale.String(), pv.String(), sum.String(), end.String()
}

// dq: s{a}_{c} the scores and g{a}_{c} the products dout·v of row a and key
// c, acc{a}_{e} the query gradient (before its scale), lse{a}, dl{a}
// (delta) the row's statistics.
func (t attentionTiling) dq(s map[string]string) {
	rows, dv := t.rq, t.dv()
	var decl, zero, score, ds, acc, end gen
	for a := range rows {
		decl.line(1, "let row%d = (b * p.H + h) * p.T + min(t0 + r0 + %du, p.T - 1u);", a, a)
		decl.line(1, "let lse%d = stats[2u * row%d];", a, a)
		decl.line(1, "let dl%d = stats[2u * row%d + 1u];", a, a)
		for c := range 8 {
			decl.line(1, "var s%d_%d = 0.0;", a, c)
			decl.line(1, "var g%d_%d = 0.0;", a, c)
			zero.line(2, "s%d_%d = 0.0;", a, c)
			zero.line(2, "g%d_%d = 0.0;", a, c)
		}
		for e := range dv {
			decl.line(1, "var acc%d_%d = 0.0;", a, e)
		}
	}
	for a := range rows {
		score.line(4, "let q%d = tq_s[qb + %du];", a, a)
		score.line(4, "let o%d = tg_s[qb + %du];", a, a)
	}
	for c := range 8 {
		score.line(4, "let k%d = tk_s[kb + %du];", c, c)
		score.line(4, "let v%d = tv_s[kb + %du];", c, c)
	}
	for a := range rows {
		for c := range 8 {
			score.line(4, "s%d_%d = fma(q%d, k%d, s%d_%d);", a, c, a, c, a, c)
			score.line(4, "g%d_%d = fma(o%d, v%d, g%d_%d);", a, c, a, c, a, c)
		}
	}
	for a := range rows {
		ds.line(2, "{")
		ds.line(3, "let t = t0 + r0 + %du;", a)
		ds.line(3, "let lo = min(st, t);")
		for c := range 8 {
			ds.line(3, "{")
			ds.line(4, "let s = s0 + tk * 8u + %du;", c)
			ds.line(4, "let pr = exp(p.scale * s%d_%d - lse%d);", a, c, a)
			ds.line(4, "tds_s[(r0 + %du) * WG + tk * 8u + %du] = select(0.0, pr * (g%d_%d - dl%d), t < p.T && lo <= s && s <= t);", a, c, a, c, a)
			ds.line(3, "}")
		}
		ds.line(2, "}")
		end.line(1, "if (t0 + r0 + %du < p.T) {", a)
		end.line(2, "let qo = qrow(b, t0 + r0 + %du, h);", a)
		for e := range dv {
			end.line(2, "if (tk * DV + %du < DH) { dq_st(qo + tk * DV + %du, p.scale * acc%d_%d); }", e, e, a, e)
		}
		end.line(1, "}")
	}
	for e := range dv {
		acc.line(4, "let k%d = tk_s[kb + %du];", e, e)
	}
	for a := range rows {
		acc.line(4, "{")
		acc.line(5, "let d = tds_s[db + %du];", a*attentionWG)
		for e := range dv {
			acc.line(5, "acc%d_%d = fma(d, k%d, acc%d_%d);", a, e, e, a, e)
		}
		acc.line(4, "}")
	}
	s["D_DECL"], s["D_ZERO"], s["D_SCORE"], s["D_DS"], s["D_ACC"], s["D_END"] = decl.String(), zero.String(), score.String(), ds.String(), acc.String(), end.String()
}

// dkdv: rows are keys and columns queries. s{a}_{c} the scores, then P;
// g{a}_{c} dout·v, then dS; ak{a}_{e}, av{a}_{e} the key and value
// gradients (dk before its scale); hi{a} the key's last query.
func (t attentionTiling) dkdv(s map[string]string) {
	rows, dv := t.rq, t.dv()
	var decl, zero, score, ps, write, acc, end gen
	for a := range rows {
		decl.line(1, "let ks%d = s_0 + r0 + %du;", a, a)
		decl.line(1, "let hi%d = select(p.T - 1u, ks%d, ks%d < st);", a, a, a)
		for c := range 8 {
			decl.line(1, "var s%d_%d = 0.0;", a, c)
			decl.line(1, "var g%d_%d = 0.0;", a, c)
			zero.line(3, "s%d_%d = 0.0;", a, c)
			zero.line(3, "g%d_%d = 0.0;", a, c)
		}
		for e := range dv {
			decl.line(1, "var ak%d_%d = 0.0;", a, e)
			decl.line(1, "var av%d_%d = 0.0;", a, e)
		}
	}
	for a := range rows {
		score.line(5, "let k%d = tk_s[kb + %du];", a, a)
		score.line(5, "let v%d = tv_s[kb + %du];", a, a)
	}
	for c := range 8 {
		score.line(5, "let q%d = tq_s[qb + %du];", c, c)
		score.line(5, "let o%d = tg_s[qb + %du];", c, c)
	}
	for a := range rows {
		for c := range 8 {
			score.line(5, "s%d_%d = fma(q%d, k%d, s%d_%d);", a, c, c, a, a, c)
			score.line(5, "g%d_%d = fma(o%d, v%d, g%d_%d);", a, c, c, a, a, c)
		}
	}
	for c := range 8 {
		ps.line(3, "{")
		ps.line(4, "let t = t0 + tk * 8u + %du;", c)
		ps.line(4, "let row = (b * p.H + h) * p.T + min(t, p.T - 1u);")
		ps.line(4, "let lse = stats[2u * row];")
		ps.line(4, "let dl = stats[2u * row + 1u];")
		for a := range rows {
			ps.line(4, "{")
			ps.line(5, "let on = t < p.T && ks%d <= t && t <= hi%d;", a, a)
			ps.line(5, "let pr = exp(p.scale * s%d_%d - lse);", a, c)
			ps.line(5, "g%d_%d = select(0.0, pr * (g%d_%d - dl), on);", a, c, a, c)
			ps.line(5, "s%d_%d = select(0.0, pr, on);", a, c)
			ps.line(4, "}")
		}
		ps.line(3, "}")
	}
	for a := range rows {
		for c := range 8 {
			write.line(5, "tp_s[(r0 + %du) * HW + (tk %% 4u) * 8u + %du] = s%d_%d;", a, c, a, c)
			write.line(5, "tds_s[(r0 + %du) * HW + (tk %% 4u) * 8u + %du] = g%d_%d;", a, c, a, c)
		}
		end.line(1, "if (ks%d < p.T) {", a)
		end.line(2, "let ko = krow(b, ks%d, kh);", a)
		for e := range dv {
			end.line(2, "if (tk * DV + %du < DH) {", e)
			end.line(3, "dk_st(ko + tk * DV + %du, p.scale * ak%d_%d);", e, a, e)
			end.line(3, "dv_st(ko + tk * DV + %du, av%d_%d);", e, a, e)
			end.line(2, "}")
		}
		end.line(1, "}")
	}
	for e := range dv {
		acc.line(6, "let q%d = tq_s[qb + %du];", e, e)
		acc.line(6, "let o%d = tg_s[qb + %du];", e, e)
	}
	for a := range rows {
		acc.line(6, "{")
		acc.line(7, "let pr = tp_s[pb + %du];", a*attentionWG/2)
		acc.line(7, "let d = tds_s[pb + %du];", a*attentionWG/2)
		for e := range dv {
			acc.line(7, "ak%d_%d = fma(d, q%d, ak%d_%d);", a, e, e, a, e)
			acc.line(7, "av%d_%d = fma(pr, o%d, av%d_%d);", a, e, e, a, e)
		}
		acc.line(6, "}")
	}
	s["E_DECL"], s["E_ZERO"], s["E_SCORE"], s["E_P"], s["E_WRITE"], s["E_ACC"], s["E_END"] = decl.String(), zero.String(), score.String(), ps.String(), write.String(), acc.String(), end.String()
}
