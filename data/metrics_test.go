package data

import (
	"math"
	"testing"
)

func TestAccuracy(t *testing.T) {
	if a := Accuracy([]int{0, 1, 2, 1}, []int{0, 1, 1, -1}); a != 0.5 {
		t.Errorf("Accuracy %v", a)
	}
	if a := Accuracy(nil, nil); a != 0 {
		t.Errorf("empty Accuracy %v", a)
	}
	defer func() {
		if recover() == nil {
			t.Error("length mismatch did not panic")
		}
	}()
	Accuracy([]int{1}, []int{1, 2})
}

func TestNormalizeAnswer(t *testing.T) {
	for in, want := range map[string]string{
		"The  Cat!":             "cat",
		"  an Apple, a day. ":   "apple day",
		"U.S.A.":                "usa",
		"Theatre the":           "theatre",
		"Olimpija\tLjubljana\n": "olimpija ljubljana",
		"$5 (approx.)":          "5 approx",
		"Zoë's café":            "zoës café",
		"":                      "",
		"a an the":              "",
	} {
		if got := NormalizeAnswer(in); got != want {
			t.Errorf("NormalizeAnswer(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExactMatchF1(t *testing.T) {
	answers := []string{"Olimpija Ljubljana", "the Slovenian side"}
	cases := []struct {
		pred   string
		em, f1 float64
	}{
		{" olimpija ljubljana.", 1, 1},
		{"Slovenian side", 1, 1},
		{"Olimpija", 0, 2.0 / 3},                        // p 1/1, r 1/2
		{"Ljubljana Olimpija FC", 0, 0.8},               // p 2/3, r 2/2
		{"the slovenian side of Ljubljana", 0, 2.0 / 3}, // vs "slovenian side": p 2/4, r 2/2
		{"Chelsea", 0, 0},
		{"", 0, 0},
	}
	for _, c := range cases {
		if em := ExactMatch(c.pred, answers); em != c.em {
			t.Errorf("ExactMatch(%q) = %v, want %v", c.pred, em, c.em)
		}
		if f1 := F1(c.pred, answers); math.Abs(f1-c.f1) > 1e-12 {
			t.Errorf("F1(%q) = %v, want %v", c.pred, f1, c.f1)
		}
	}
	// Repeated tokens count once per occurrence.
	if f1 := F1("a b b b", []string{"b b c"}); math.Abs(f1-2*(2.0/3)*(2.0/3)/(4.0/3)) > 1e-12 {
		t.Errorf("repeated tokens F1 %v", f1)
	}
	if ExactMatch("x", nil) != 0 || F1("x", nil) != 0 {
		t.Error("no answers should score 0")
	}
	if ExactMatch("the", []string{"a"}) != 1 || F1("the", []string{"a"}) != 1 {
		t.Error("two empty normalized strings should match")
	}
}

func TestPickOption(t *testing.T) {
	nll := []float64{3.0, 2.5, 4.0}
	ntok := []int{1, 1, 4}
	if p := PickOption(nll, ntok, false); p != 1 {
		t.Errorf("sum pick %d", p)
	}
	if p := PickOption(nll, ntok, true); p != 2 { // means 3, 2.5, 1
		t.Errorf("mean pick %d", p)
	}
	if p := PickOption([]float64{1, 1}, []int{1, 1}, false); p != 0 {
		t.Errorf("tie pick %d", p)
	}
	if p := PickOption([]float64{math.NaN(), 5}, []int{1, 1}, false); p != 1 {
		t.Errorf("NaN pick %d", p)
	}
	if p := PickOption([]float64{0, 5}, []int{0, 1}, true); p != 1 {
		t.Errorf("zero-token pick %d", p)
	}
	if p := PickOption(nil, nil, true); p != -1 {
		t.Errorf("empty pick %d", p)
	}
	if p := PickOption([]float64{math.NaN(), math.NaN()}, nil, false); p != 0 {
		t.Errorf("all-NaN pick %d", p)
	}
}
