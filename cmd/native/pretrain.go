package main

import (
	"fmt"
	"io"

	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("pretrain", "pretrain the built-in demo model from scratch (seeded recipe)", cmdPretrain)
}

func cmdPretrain(args []string, stdout, stderr io.Writer) error {
	c := train.DefaultPretrain()
	fs := newFlags("pretrain", stderr)
	fs.StringVar(&c.Out, "out", c.Out, "output folder (Hugging Face layout)")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the corpus, tokenizer, initialisation and batches")
	fs.IntVar(&c.Steps, "steps", c.Steps, "optimizer steps")
	fs.IntVar(&c.Batch, "batch", c.Batch, "stories per step")
	fs.Float64Var(&c.LR, "lr", c.LR, "peak learning rate (cosine schedule)")
	fs.StringVar(&c.Optimizer, "optimizer", c.Optimizer, "adalomo or adamw")
	fs.IntVar(&c.Stories, "stories", c.Stories, "stories in the generated corpus")
	fs.IntVar(&c.Layers, "layers", c.Layers, "decoder layers")
	fs.IntVar(&c.Hidden, "hidden", c.Hidden, "hidden size")
	adapter := fs.String("adapter", "", "adapter index or name")
	if err := parse(fs, args); err != nil {
		return err
	}
	d, err := openDevice(*adapter, stderr)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := train.Pretrain(d, c, &bar{w: stderr}, stderr); err != nil {
		return err
	}
	fmt.Fprintln(stdout, c.Out)
	return nil
}
