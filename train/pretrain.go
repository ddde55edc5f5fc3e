package train

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lomo-dev/lomo/data"
	"github.com/lomo-dev/lomo/gpu"
	"github.com/lomo-dev/lomo/hf/config"
	"github.com/lomo-dev/lomo/hf/tokenizer"
	"github.com/lomo-dev/lomo/nn"
	"github.com/lomo-dev/lomo/optim"
)

// PretrainConfig is the recipe of the built-in demo model: a small LLaMA
// pretrained from scratch by lomo's own engine on stories that lomo
// generates (data.SynthCorpus), with a byte-level BPE tokenizer it trains on
// the same text. Everything is seeded: the recipe reproduces the model.
type PretrainConfig struct {
	Seed      uint64
	Stories   int // corpus size
	Merges    int // BPE merges
	Hidden    int
	FFN       int
	Layers    int
	Heads     int
	KVHeads   int
	Steps     int
	Batch     int
	LR        float64
	Optimizer string // adalomo (default) or adamw
	Out       string
}

// DefaultPretrain is the recipe that made the model embedded in lomo.
func DefaultPretrain() PretrainConfig {
	return PretrainConfig{Seed: 1, Stories: 4000, Merges: 381, Hidden: 64, FFN: 172, Layers: 2, Heads: 4, KVHeads: 2,
		Steps: 400, Batch: 32, LR: 0.02, Optimizer: "adalomo", Out: "pretrained"}
}

// TokenizerText is what the tokenizer is trained on: the corpus, plus the
// prompt scaffolding of the demo task (from another seed), so that "Yes",
// "No" and "Answer:" are whole tokens. The model never trains on the
// scaffolding: it stays at chance on the task until fine-tuned.
func TokenizerText(seed uint64, corpus []string) []string {
	text := append([]string(nil), corpus...)
	for _, ex := range data.SynthTask(seed+1000, 400) {
		label := "No"
		if ex.Label {
			label = "Yes"
		}
		text = append(text, "Passage: "+ex.Passage+"\nQuestion: "+strings.ToUpper(ex.Question[:1])+ex.Question[1:]+"?\nAnswer: "+label)
	}
	return text
}

// Pretrain runs the recipe and writes the model in Hugging Face layout.
func Pretrain(d *gpu.Device, c PretrainConfig, progress Progress, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	corpus := data.SynthCorpus(c.Seed, c.Stories)
	tj, tcj, err := tokenizer.TrainBPE(TokenizerText(c.Seed, corpus), c.Merges)
	if err != nil {
		return err
	}
	tok, err := tokenizer.Parse(tj, tcj)
	if err != nil {
		return err
	}
	cfg := &config.Llama{
		HiddenSize: c.Hidden, IntermediateSize: c.FFN, NumLayers: c.Layers, NumHeads: c.Heads, NumKVHeads: c.KVHeads,
		VocabSize: tok.VocabSize(), RopeTheta: 10000, RMSNormEps: 1e-5, TieWordEmbeddings: true, MaxPositionEmbeddings: 256,
		HeadDim: c.Hidden / c.Heads, ModelType: "llama", Architectures: []string{"LlamaForCausalLM"}, TorchDType: "float32",
		BOSTokenID: tok.BOS(), EOSTokenID: tok.EOS(), HiddenAct: "silu",
	}
	m, err := nn.NewLlama(d, cfg, gpu.F32)
	if err != nil {
		return err
	}
	defer m.Release()
	if err := m.InitRandom(c.Seed, 0.05); err != nil {
		return err
	}
	opt, err := optim.New(d, optim.Config{Name: c.Optimizer, ClipGradNorm: 0,
		Schedule: optim.Schedule{Kind: "cosine", LR: c.LR, Warmup: 0.05, Total: c.Steps}}, gpu.F32)
	if err != nil {
		return err
	}
	defer opt.Release()
	fmt.Fprintf(log, "pretraining %s parameters on %d stories (vocab %d), %d steps of %d\n", paramCount(cfg.NumParams()), len(corpus), cfg.VocabSize, c.Steps, c.Batch)
	if progress != nil {
		progress.Start(c.Steps, "pretrain")
		defer progress.Finish()
	}
	r := rand.New(rand.NewPCG(c.Seed, 7))
	order := r.Perm(len(corpus))
	pos := 0
	t0 := time.Now()
	var last optim.Result
	for step := 0; step < c.Steps; step++ {
		seqs := make([]data.Sequence, c.Batch)
		for i := range seqs {
			if pos == len(order) {
				r.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
				pos = 0
			}
			seqs[i] = data.EncodeExample(tok, "", corpus[order[pos]], 128, true)
			pos++
		}
		b := data.Collate(seqs, tok.EOS())
		in, err := m.NewInputs(b.B, b.T, b.IDs, b.Labels, b.Start)
		if err != nil {
			return err
		}
		last, err = opt.Step(m.Params(), StepForward(m, in, 0))
		in.Release()
		if err != nil {
			return fmt.Errorf("pretrain step %d: %w", step+1, err)
		}
		if progress != nil {
			progress.Step(last.Loss)
		}
	}
	fmt.Fprintf(log, "pretrained in %s, final loss %.4f\n", time.Since(t0).Round(time.Second), last.Loss)
	if err := m.Save(c.Out); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Out, "tokenizer.json"), tj, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.Out, "tokenizer_config.json"), tcj, 0o644)
}

func paramCount(n int64) string {
	if n >= 1e6 {
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	}
	return fmt.Sprintf("%.1fK", float64(n)/1e3)
}
