//go:build !js

package monitor

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestEventNonFiniteRoundTrip(t *testing.T) {
	ev := Event{V: SchemaVersion, Run: "r", Seq: 3, Time: time.Unix(1, 0).UTC(), Kind: KindStep,
		Step: &Step{Step: 7, Loss: math.NaN(), LR: 1e-4, GradNorm: math.Inf(1), LossScale: math.Inf(-1)}}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"loss":"NaN"`, `"grad_norm":"Inf"`, `"loss_scale":"-Inf"`, `"lr":0.0001`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s lacks %s", b, want)
		}
	}
	got, err := DecodeEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	s := got.Step
	if !math.IsNaN(s.Loss) || !math.IsInf(s.GradNorm, 1) || !math.IsInf(s.LossScale, -1) || s.LR != 1e-4 || s.Step != 7 {
		t.Errorf("round trip: %+v", s)
	}
	// null decodes as NaN; Eval values too.
	e, err := DecodeEvent([]byte(`{"v":1,"run":"r","kind":"eval","eval":{"step":1,"task":"t","metric":"acc","value":null}}`))
	if err != nil || !math.IsNaN(e.Eval.Value) {
		t.Errorf("null value: %v %+v", err, e.Eval)
	}
}

func TestEventValidate(t *testing.T) {
	ok := Event{V: 1, Run: "r", Kind: KindSample, Sample: &Sample{Text: "x"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ev   Event
		want error
	}{
		{Event{V: 2, Run: "r", Kind: KindEnd, End: &End{}}, ErrVersion},
		{Event{V: 1, Run: "r", Kind: "bogus", End: &End{}}, ErrKind},
		{Event{V: 1, Run: "r", Kind: KindStep, End: &End{}}, ErrPayload},
		{Event{V: 1, Run: "r", Kind: KindStep, Step: &Step{}, End: &End{}}, ErrPayload},
		{Event{V: 1, Run: "r", Kind: KindError, End: &End{}}, ErrPayload},
		{Event{V: 1, Run: "", Kind: KindEnd, End: &End{}}, ErrRunID},
		{Event{V: 1, Run: "a/b", Kind: KindEnd, End: &End{}}, ErrRunID},
	}
	for i, c := range cases {
		if err := c.ev.Validate(); !errors.Is(err, c.want) {
			t.Errorf("case %d: got %v, want %v", i, err, c.want)
		}
	}
}

func TestHistoryBoundKeepsRunEvent(t *testing.T) {
	h := NewHub(HubOptions{MaxHistory: 10})
	mustPublish(t, h, runEvent("r"))
	for i := 1; i <= 30; i++ {
		mustPublish(t, h, stepEvent("r", i))
	}
	rep, sub, _, err := h.subscribe("r")
	if err != nil {
		t.Fatal(err)
	}
	defer h.unsubscribe(sub)
	hist := rep.frames
	if len(hist) != 11 {
		t.Fatalf("history has %d events, want 11", len(hist))
	}
	var seqs []uint64
	for _, b := range hist {
		ev, err := DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ev.Seq)
	}
	if seqs[0] != 1 || seqs[1] != 22 || seqs[10] != 31 {
		t.Errorf("seqs %v: want 1, then 22..31", seqs)
	}
	st, _ := h.Stats("r")
	if st.Events != 31 || st.LastStep == nil || st.LastStep.Step != 30 || st.Info == nil {
		t.Errorf("stats %+v", st)
	}
}
