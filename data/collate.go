package data

// The collator: tokenized training and scoring sequences, left-padded
// batches.
//
// Token boundaries. The prompt and the target are tokenized separately and
// the ids concatenated: BOS + Encode(prompt) + Encode(target) [+ EOS], as
// the reference does. With a SentencePiece-style tokenizer this is not the
// same as Encode(prompt + target): the target gets its own leading "▁" and
// the prompt's trailing space stays a token of the prompt, so with the
// stories260K tokenizer "...Answer: " + "Yes" is "... : ▁ | ▁ Y es" and
// decodes to "Answer:  Yes" (two spaces). But it is the same for every
// option and for training and evaluation, the prompt tokens do not depend
// on the answer, and at generation time the model continues exactly the
// prompt tokens it was trained on (decoded answers are whitespace-trimmed
// by the metrics' normalization).
//
// Labels are next-token targets, already shifted: Labels[i] is the id the
// model should predict at position i (that is IDs[i+1] when token i+1 is
// trained on), or IgnoreIndex.

import (
	"fmt"
	"math/rand/v2"
)

// IgnoreIndex marks a position without a training target.
const IgnoreIndex = -100

// Encoder is what the collator needs of a tokenizer (*tokenizer.Tokenizer has it).
// BOS or EOS may be negative when the tokenizer has none; they are then
// left out.
type Encoder interface {
	Encode(text string) []int
	BOS() int
	EOS() int
}

// Sequence is one tokenized training or scoring sequence.
type Sequence struct {
	IDs []int
	// Labels has the length of IDs; Labels[i] is the target for position i
	// (the next token), IgnoreIndex (-100) where the next token is a prompt
	// token (unless training on inputs) and at the last position.
	Labels []int
}

// EncodeExample builds BOS + prompt + target + EOS. When longer than maxLen
// (> 0) tokens it drops prompt tokens from the left, just after BOS, so the
// answer is kept; a target that does not fit even without the prompt is cut
// at its end (and loses its EOS). The labels cover the target and EOS, and
// the prompt too when trainOnInputs. An empty target gives BOS + prompt +
// EOS.
func EncodeExample(enc Encoder, prompt, target string, maxLen int, trainOnInputs bool) Sequence {
	var tgt []int
	if target != "" {
		tgt = enc.Encode(target)
	}
	if eos := enc.EOS(); eos >= 0 {
		tgt = append(tgt, eos)
	}
	s, _ := colBuild(enc.BOS(), enc.Encode(prompt), tgt, maxLen, trainOnInputs)
	return s
}

// colBuild lays out bos + prompt + tgt within maxLen (<= 0: no limit) and
// returns the sequence and how many target tokens it kept.
func colBuild(bos int, prompt, tgt []int, maxLen int, trainOnInputs bool) (Sequence, int) {
	var head []int
	if bos >= 0 {
		head = []int{bos}
	}
	if maxLen > 0 {
		room := max(0, maxLen-len(head))
		if len(tgt) > room {
			tgt = tgt[:room]
		}
		room -= len(tgt)
		if len(prompt) > room {
			prompt = prompt[len(prompt)-room:]
		}
		if len(head) > maxLen {
			head = head[:maxLen]
		}
	}
	n := len(head) + len(prompt) + len(tgt)
	ids := make([]int, 0, n)
	ids = append(ids, head...)
	ids = append(ids, prompt...)
	ids = append(ids, tgt...)
	labels := make([]int, n)
	first := len(head) + len(prompt) // first trained token
	if trainOnInputs {
		first = len(head)
	}
	for i := range labels {
		labels[i] = IgnoreIndex
		if i+1 < n && i+1 >= first {
			labels[i] = ids[i+1]
		}
	}
	return Sequence{IDs: ids, Labels: labels}, len(tgt)
}

// Batch is a left-padded batch (REFERENCE §6). IDs and Labels are (B, T)
// row-major with T the longest sequence; row b holds Start[b] pad tokens
// (id padID, label IgnoreIndex) and then its sequence. A model should mask
// attention to positions before Start[b] and may count positions from it.
type Batch struct {
	B, T        int
	IDs, Labels []int
	Start       []int
}

// Collate left-pads seqs into one batch; padID is the pad token (EOS or 0).
func Collate(seqs []Sequence, padID int) Batch {
	b := Batch{B: len(seqs)}
	for _, s := range seqs {
		if len(s.Labels) != len(s.IDs) {
			panic(fmt.Sprintf("data.Collate: sequence with %d ids and %d labels", len(s.IDs), len(s.Labels)))
		}
		b.T = max(b.T, len(s.IDs))
	}
	b.IDs = make([]int, b.B*b.T)
	b.Labels = make([]int, b.B*b.T)
	b.Start = make([]int, b.B)
	for r, s := range seqs {
		row := r * b.T
		start := b.T - len(s.IDs)
		b.Start[r] = start
		for i := 0; i < start; i++ {
			b.IDs[row+i] = padID
			b.Labels[row+i] = IgnoreIndex
		}
		copy(b.IDs[row+start:row+b.T], s.IDs)
		copy(b.Labels[row+start:row+b.T], s.Labels)
	}
	return b
}

// ChoiceSequences returns one sequence per option for multiple-choice
// scoring, BOS + prompt + option (no EOS) with only the option tokens
// labelled, and how many target tokens each has (to turn a summed NLL into
// a mean). The prompt is tokenized once and truncated from the left like
// EncodeExample.
func ChoiceSequences(enc Encoder, ex Example, maxLen int) ([]Sequence, []int) {
	prompt := enc.Encode(ex.Prompt)
	seqs := make([]Sequence, len(ex.Options))
	ntok := make([]int, len(ex.Options))
	for i, o := range ex.Options {
		var tgt []int
		if o != "" {
			tgt = enc.Encode(o)
		}
		seqs[i], ntok[i] = colBuild(enc.BOS(), prompt, tgt, maxLen, false)
	}
	return seqs, ntok
}

// TrainBatches returns the training batches of one epoch: the examples that
// have a Target, in the order of a shuffle seeded by (seed, epoch)
// (math/rand/v2 PCG(seed, epoch+1)), encoded with EncodeExample and
// collated batchSize at a time (the last batch may be smaller).
func TrainBatches(enc Encoder, t *Task, batchSize, maxLen int, trainOnInputs bool, seed uint64, epoch int, padID int) []Batch {
	if batchSize < 1 {
		panic(fmt.Sprintf("data.TrainBatches: batch size %d", batchSize))
	}
	var idx []int
	for i, ex := range t.Examples {
		if ex.Target != "" {
			idx = append(idx, i)
		}
	}
	rng := rand.New(rand.NewPCG(seed, uint64(epoch)+1))
	rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	var out []Batch
	for lo := 0; lo < len(idx); lo += batchSize {
		hi := min(lo+batchSize, len(idx))
		seqs := make([]Sequence, 0, hi-lo)
		for _, k := range idx[lo:hi] {
			ex := t.Examples[k]
			seqs = append(seqs, EncodeExample(enc, ex.Prompt, ex.Target, maxLen, trainOnInputs))
		}
		out = append(out, Collate(seqs, padID))
	}
	return out
}
