package main

import (
	"fmt"
	"io"
	"math"

	"github.com/lomo-dev/lomo/train"
)

func init() {
	register("pretrain", "pretrain the built-in demo model from scratch (seeded recipe)", cmdPretrain)
}

func cmdPretrain(args []string, stdout, stderr io.Writer) error {
	c := train.DefaultPretrain()
	fs := newOptions("pretrain", stderr).withAdapter()
	fs.StringVar(&c.Out, "out", c.Out, "output folder (Hugging Face layout)")
	fs.Uint64Var(&c.Seed, "seed", c.Seed, "seed of the corpus, tokenizer, initialisation and batches")
	fs.IntVar(&c.Steps, "steps", c.Steps, "optimizer steps")
	fs.IntVar(&c.Batch, "batch", c.Batch, "stories per step")
	fs.Float64Var(&c.LR, "lr", c.LR, "peak learning rate (cosine schedule)")
	fs.StringVar(&c.Optimizer, "optimizer", c.Optimizer, "adalomo or adamw")
	fs.IntVar(&c.Stories, "stories", c.Stories, "stories in the generated corpus")
	fs.IntVar(&c.Layers, "layers", c.Layers, "decoder layers")
	fs.IntVar(&c.Hidden, "hidden", c.Hidden, "hidden size")
	fs.atLeast("steps", &c.Steps, 1)
	fs.atLeast("batch", &c.Batch, 1)
	fs.atLeast("stories", &c.Stories, 1)
	fs.atLeast("layers", &c.Layers, 1)
	fs.atLeast("hidden", &c.Hidden, 1)
	fs.within("lr", &c.LR, 0, math.Inf(1))
	fs.oneOf("optimizer", &c.Optimizer, "adalomo", "adamw")
	if err := fs.parse(args); err != nil {
		return err
	}
	d, err := fs.open(stderr)
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
