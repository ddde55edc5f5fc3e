package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("merge", "fold a LoRA adapter (PEFT layout) into its base model and write a full HF checkpoint", cmdMerge)
}

// cmdMerge writes W + (alpha/r)·B·A for every adapted layer, with the rest
// of the base, as a model folder in Hugging Face layout. Everything is
// checked (the adapter against the base's shapes) before --out is
// created, so bad input writes nothing.
func cmdMerge(args []string, stdout, stderr io.Writer) error {
	fs := newOptions("merge", stderr).withAdapter().withModelDType().withPeft().withOneShot()
	model := fs.String("model", "", "the base model: folder (HF layout) or Hub id org/name[@revision] in the local HF cache")
	out := fs.String("out", "", "folder to write the merged model to (must not exist, or be empty)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *model == "" || fs.peft == "" || *out == "" {
		return fmt.Errorf("%w: --model, --peft and --out are required", errUsage)
	}
	if entries, err := os.ReadDir(*out); err == nil && len(entries) > 0 {
		return fmt.Errorf("%w: --out %s exists and is not empty", errUsage, *out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	m, release, err := fs.loadModel(*model, io.Discard) // in the storage the merged weights take
	if err != nil {
		return err
	}
	defer release()
	pc := m.PeftConfig()
	n := m.NumLoRAParams()
	if err := m.MergeLoRA(); err != nil {
		return err
	}
	if err := m.Save(*out); err != nil {
		return err
	}
	if err := train.CopyTokenizerFiles(*model, *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "merged %d adapter parameters (r=%d, scale %g, %v) into %s: %s\n", n, pc.R, pc.Scale(), pc.TargetModules, *model, *out)
	return nil
}
