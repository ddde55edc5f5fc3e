package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/peft"
	"github.com/lomo-dev/lomo/nn"
)

// options is the one home of the option handling the commands share: the
// flag set, --adapter and the device it opens, --dtype, and the checks of
// option values. Every check runs in parse, after the flags are read and
// before anything starts (a device, a dashboard, a file), and a value out
// of range is a usage error (exit 2) naming the flag and what it accepts.
type options struct {
	*flag.FlagSet
	adapter string // --adapter, when registered by withAdapter
	tune    string // --tune, with --adapter
	oneShot bool   // the command runs each shape once or twice: no tuning unless asked (withOneShot)
	dtype   string // --dtype, when registered by withDType
	peft    string // --peft, when registered by withPeft
	checks  []func() error
}

// withPeft adds --peft, a LoRA adapter folder in PEFT layout to apply to
// the model (the word "adapter" already names the GPU). Its config is
// read and checked in parse, before anything starts; its tensors are
// checked against the model by applyPeft.
func (o *options) withPeft() *options {
	o.StringVar(&o.peft, "peft", "", "LoRA adapter folder in Hugging Face PEFT layout (adapter_config.json, adapter_model.safetensors) to apply to the model")
	o.check(func() error {
		if o.peft == "" {
			return nil
		}
		_, err := peft.Load(o.peft)
		return err
	})
	return o
}

// applyPeft adds --peft's adapters to m (nothing without --peft).
func (o *options) applyPeft(m *nn.Llama) error {
	if o.peft == "" {
		return nil
	}
	return m.LoadLoRA(o.peft)
}

// loadModel opens the device (its log to log) and loads the model folder
// in --dtype's storage with --peft's adapters added; release frees the
// model, then the device.
func (o *options) loadModel(model string, log io.Writer) (m *nn.Llama, release func(), err error) {
	dt, err := o.ModelDType(model)
	if err != nil {
		return nil, nil, err
	}
	d, err := o.open(log)
	if err != nil {
		return nil, nil, err
	}
	if m, err = nn.LoadLlama(d, model, dt); err != nil {
		d.Close()
		return nil, nil, err
	}
	release = func() { m.Release(); d.Close() }
	if err := o.applyPeft(m); err != nil {
		release()
		return nil, nil, err
	}
	return m, release, nil
}

func newOptions(name string, stderr io.Writer) *options {
	return &options{FlagSet: newFlags(name, stderr)}
}

// withAdapter adds --adapter, for the commands that run on a device (open).
func (o *options) withAdapter() *options {
	o.StringVar(&o.adapter, "adapter", "", "adapter index or name (default: LOMO_ADAPTER, else the best one)")
	o.StringVar(&o.tune, "tune", "", "time the kernel variants that give the same results (matmul tilings) on first use and keep the fastest: auto (on GPUs, not on CPU adapters), on or off (default: LOMO_TUNE, else auto; off for generate and merge, which run each shape once)")
	o.check(func() error {
		if _, err := gpu.ParseTuning(o.tune); err != nil {
			return fmt.Errorf("--tune %q: want one of %s (or LOMO_TUNE)", o.tune, strings.Join(gpu.TuningNames, ", "))
		}
		return nil
	})
	return o
}

// withDType adds --dtype, the parameters' storage (f32, f16 or bf16).
func (o *options) withDType(def string) *options {
	o.StringVar(&o.dtype, "dtype", def, "parameter storage: f32, f16 or bf16")
	o.oneOf("dtype", &o.dtype, gpu.DTypeNames...)
	return o
}

// DType is --dtype's value (checked by parse).
func (o *options) DType() gpu.DType {
	dt, _ := gpu.ParseDType(o.dtype)
	return dt
}

// withModelDType adds --dtype for the commands that load a model's weights:
// their storage, auto (the default: the weights file's torch_dtype, so a
// 16-bit checkpoint loads in its own size), f32, f16 or bf16.
func (o *options) withModelDType() *options {
	o.StringVar(&o.dtype, "dtype", "auto", "parameter storage: auto (the weights file's torch_dtype), f32, f16 or bf16")
	o.oneOf("dtype", &o.dtype, nn.DTypeNames...)
	return o
}

// ModelDType is --dtype's storage for the model folder dir (withModelDType).
func (o *options) ModelDType(dir string) (gpu.DType, error) {
	c, err := config.Load(dir)
	if err != nil {
		return gpu.F32, err
	}
	return nn.ResolveDType(o.dtype, dir, c)
}

// check adds a check of the options' values to parse.
func (o *options) check(f func() error) { o.checks = append(o.checks, f) }

// atLeast checks that the int flag name is at least least.
func (o *options) atLeast(name string, v *int, least int) {
	o.check(func() error {
		if *v < least {
			return fmt.Errorf("--%s %d: must be at least %d", name, *v, least)
		}
		return nil
	})
}

// within checks that the float flag name is a finite number in [lo, hi].
func (o *options) within(name string, v *float64, lo, hi float64) {
	o.check(func() error {
		if !(*v >= lo && *v <= hi) || math.IsInf(*v, 0) {
			want := fmt.Sprintf("a number from %g to %g", lo, hi)
			if math.IsInf(hi, 1) {
				want = fmt.Sprintf("a finite number >= %g", lo)
			}
			return fmt.Errorf("--%s %v: must be %s", name, *v, want)
		}
		return nil
	})
}

// oneOf checks that the string flag name is one of accepted.
func (o *options) oneOf(name string, v *string, accepted ...string) {
	o.check(func() error {
		if !slices.Contains(accepted, *v) {
			return fmt.Errorf("--%s %q: must be one of %s", name, *v, strings.Join(accepted, ", "))
		}
		return nil
	})
}

// listOf checks that each comma-separated item of the flag name is one of
// accepted ("" passes: the command's default).
func (o *options) listOf(name string, v *string, accepted ...string) {
	o.check(func() error {
		if *v == "" {
			return nil
		}
		for _, item := range strings.Split(*v, ",") {
			if !slices.Contains(accepted, item) {
				return fmt.Errorf("--%s %q: %q is not one of %s", name, *v, item, strings.Join(accepted, ", "))
			}
		}
		return nil
	})
}

// parse reads args (see parse in main.go) and runs every check.
func (o *options) parse(args []string) error {
	if err := parse(o.FlagSet, args); err != nil {
		return err
	}
	for _, c := range o.checks {
		if err := c(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	return nil
}

// open opens the adapter that --adapter names (or LOMO_ADAPTER) and says
// which on log.
func (o *options) open(log io.Writer) (*gpu.Device, error) {
	d, err := gpu.Open(gpu.Options{Adapter: o.adapter, Tune: o.tuning()})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "adapter: %s (%s, %s)%s\n", d.Info.Name, d.Info.Type, d.Info.Backend, tuneNote(d))
	return d, nil
}

// withOneShot marks a command whose matmuls run each shape once or twice
// (generate's prompt, merge's products): tuning them would cost more than
// it saves, so --tune and LOMO_TUNE default to off there.
func (o *options) withOneShot() *options {
	o.oneShot = true
	return o
}

// tuning is --tune's value (checked by parse).
func (o *options) tuning() gpu.Tuning {
	if o.oneShot && o.tune == "" && os.Getenv("LOMO_TUNE") == "" {
		return gpu.TuneOff
	}
	t, _ := gpu.ParseTuning(o.tune)
	return t
}

// tuneNote says, after the adapter's name, that the device tunes, with the
// choices its tuning cache gave, or why it gave none.
func tuneNote(d *gpu.Device) string {
	if !d.Tunes() {
		return ""
	}
	path, loaded, err := d.TuningCache()
	switch {
	case err != nil:
		return fmt.Sprintf(", tuning kernels on first use (%v)", err)
	case loaded > 0:
		return fmt.Sprintf(", tuning kernels on first use (%d choices kept from %s)", loaded, path)
	}
	return ", tuning kernels on first use"
}

// openDevices opens the adapters that names lists (the devices key or
// --devices), one device each (an adapter named twice gives two devices
// on it), and says which on log. An adapter that is not there is a usage
// error naming it.
func openDevices(names []string, tune gpu.Tuning, log io.Writer) ([]*gpu.Device, error) {
	var ds []*gpu.Device
	for i, name := range names {
		d, err := gpu.Open(gpu.Options{Adapter: name, Tune: tune})
		if err != nil {
			for _, d := range ds {
				d.Close()
			}
			if errors.Is(err, gpu.ErrAdapterNotFound) {
				return nil, fmt.Errorf("%w: devices: device %d %q: %v (lomo devices lists them)", errUsage, i, name, err)
			}
			return nil, fmt.Errorf("devices: device %d %q: %w", i, name, err)
		}
		fmt.Fprintf(log, "device %d: %s (%s, %s)%s\n", i, d.Info.Name, d.Info.Type, d.Info.Backend, tuneNote(d))
		ds = append(ds, d)
	}
	return ds, nil
}
