package gpu

import "testing"

func TestParseTuning(t *testing.T) {
	t.Setenv("LOMO_TUNE", "")
	for s, want := range map[string]Tuning{"": TuneAuto, "auto": TuneAuto, "on": TuneOn, "OFF": TuneOff} {
		if got, err := ParseTuning(s); err != nil || got != want {
			t.Errorf("ParseTuning(%q) = %q, %v; want %q", s, got, err, want)
		}
	}
	if _, err := ParseTuning("fast"); err == nil {
		t.Error(`ParseTuning("fast") succeeded`)
	}
	t.Setenv("LOMO_TUNE", "off")
	if got, err := ParseTuning(""); err != nil || got != TuneOff {
		t.Errorf(`ParseTuning("") with LOMO_TUNE=off = %q, %v`, got, err)
	}
	gpu, cpu := AdapterInfo{Type: "discrete"}, AdapterInfo{Type: "cpu", Software: true}
	if !TuneAuto.tunes(gpu) || TuneAuto.tunes(cpu) || !TuneOn.tunes(cpu) || TuneOff.tunes(gpu) {
		t.Error("auto must tune on GPUs only, on and off everywhere and nowhere")
	}
}

// TestChoices: a dry device never tunes; choices are kept by key.
func TestChoices(t *testing.T) {
	d := OpenDry("dry", UnlimitedLimits())
	defer d.Close()
	if d.SetTuning(true); d.Tunes() {
		t.Error("a dry device tunes: it runs no kernels to time")
	}
	d.Choose(Choice{Key: "b", Chosen: "x"})
	d.Choose(Choice{Key: "a", Chosen: "y", Timed: []Timing{{"y", 1e-3, 3}}})
	d.Choose(Choice{Key: "b", Chosen: "z"})
	if c, ok := d.Choice("b"); !ok || c.Chosen != "z" {
		t.Errorf(`Choice("b") = %+v, %v; want the last choice, z`, c, ok)
	}
	if cs := d.Choices(); len(cs) != 2 || cs[0].Key != "a" || cs[1].Key != "b" {
		t.Errorf("Choices() = %+v, want a then b", cs)
	}
}
