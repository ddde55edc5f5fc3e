package data

// A tiny procedural world for the `lomo demo`: a pretraining corpus of short
// stories and a BoolQ-schema yes/no task ("is the thing in the story an
// animal?") over the same small vocabulary (about 150 words: names,
// animals, objects, colours, sizes, places, foods, simple verbs).
//
// Design:
//
//   - Everything is generated from a seed with math/rand/v2's PCG; word lists
//     are slices and nothing iterates a map, so the output is the same on
//     every run and platform.
//   - The corpus uses every animal and object word, in contexts that differ by
//     class (animals run, sleep, eat and get fed; objects fall, break, get
//     held and washed) as well as neutral ones (saw, found, drew ...), so a
//     model pretrained on it has embeddings that tell the two classes apart.
//   - The corpus never contains a question, "?", "Answer", "Yes" or "No", so a
//     base model pretrained on it is at chance on the task zero-shot; the
//     fine-tuning only has to map the class of the mentioned word to Yes/No.
//   - A task passage is one story sentence (at most 10 words) that mentions
//     exactly one animal-or-object word; half of them use a neutral verb, so
//     the word itself, not only its verb, carries the label.

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
)

// SynthExample is one item of the synthetic yes/no task, in the fields of a
// SuperGLUE BoolQ line.
type SynthExample struct {
	Question, Passage string
	Label             bool // whether the word the passage mentions is an animal
	Idx               int
}

type synName struct {
	name string
	she  bool
}

type synPlace struct{ prep, name string }

var (
	synNames = []synName{
		{"Mia", true}, {"Tom", false}, {"Lily", true}, {"Ben", false},
		{"Sam", false}, {"Anna", true}, {"Max", false}, {"Zoe", true},
		{"Leo", false}, {"Ella", true}, {"Jack", false}, {"Nina", true},
	}
	synAnimals = []string{
		"cat", "dog", "fox", "owl", "frog", "duck", "cow", "pig", "hen", "bee",
		"bear", "deer", "goat", "horse", "mouse", "rabbit", "sheep", "wolf", "bird", "fish",
	}
	synObjects = []string{
		"hammer", "cup", "spoon", "ball", "kite", "box", "book", "hat", "drum", "lamp",
		"bell", "key", "rope", "brush", "bowl", "chair", "clock", "sock", "shoe", "boat",
	}
	synColours = []string{"red", "blue", "green", "yellow", "brown", "white", "black", "pink"}
	synSizes   = []string{"big", "small", "little", "old", "new"}
	synPlaces  = []synPlace{
		{"in", "park"}, {"in", "garden"}, {"in", "house"}, {"in", "barn"}, {"in", "forest"},
		{"on", "hill"}, {"near", "river"}, {"in", "yard"}, {"in", "field"}, {"in", "kitchen"},
		{"by", "pond"}, {"on", "table"}, {"under", "bed"}, {"near", "school"},
	}
	synFoods       = []string{"bread", "corn", "seeds", "grass", "apples", "cake"}
	synPeopleFoods = []string{"bread", "apples", "cake"}

	// Verbs whose object can be any thing.
	synNeutralVerbs = []string{"saw", "found", "liked", "drew", "watched", "painted", "wanted"}
	// Transitive verbs for animals and for objects.
	synAnimalTake = []string{"fed", "petted", "chased", "called"}
	synObjectTake = []string{"held", "bought", "dropped", "washed", "fixed", "carried"}
	// Intransitive verbs (then a place) for animals and for objects.
	synAnimalMove = []string{"ran", "jumped", "slept", "hid", "played", "rested", "walked"}
	synObjectMove = []string{"fell", "rolled", "broke", "stayed"}
	// Adjectives after "It was" / "The X was".
	synAnimalAdj = []string{"happy", "hungry", "sleepy", "fast", "quiet", "soft"}
	synObjectAdj = []string{"shiny", "heavy", "broken", "clean", "hard", "light"}
	// Endings about the person.
	synPersonAdj = []string{"happy", "glad", "tired", "proud"}
)

func synPick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// synArticle returns "a" or "an" for the word w.
func synArticle(w string) string {
	if w != "" && strings.ContainsRune("aeiou", rune(w[0])) {
		return "an"
	}
	return "a"
}

func synCap(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// synNoun returns "[size] [colour] noun" with each modifier present by chance.
func synNoun(r *rand.Rand, noun string) string {
	var parts []string
	if r.IntN(3) == 0 {
		parts = append(parts, synPick(r, synSizes))
	}
	if r.IntN(2) == 0 {
		parts = append(parts, synPick(r, synColours))
	}
	return strings.Join(append(parts, noun), " ")
}

// synWithA prefixes a noun phrase with its indefinite article.
func synWithA(np string) string { return synArticle(np) + " " + np }

func synWhere(r *rand.Rand) string {
	p := synPick(r, synPlaces)
	return p.prep + " the " + p.name
}

// synIntro is a sentence that mentions the thing noun exactly once and no
// other animal or object. Neutral verbs are chosen half of the time.
func synIntro(r *rand.Rand, n synName, noun string, animal bool) string {
	np := synNoun(r, noun)
	if r.IntN(2) == 0 {
		switch r.IntN(3) {
		case 0, 1:
			return n.name + " " + synPick(r, synNeutralVerbs) + " " + synWithA(np) + " " + synWhere(r) + "."
		default:
			return synCap(synWithA(np)) + " was " + synWhere(r) + "."
		}
	}
	take, move := synObjectTake, synObjectMove
	if animal {
		take, move = synAnimalTake, synAnimalMove
	}
	if r.IntN(2) == 0 {
		return n.name + " " + synPick(r, take) + " " + synWithA(np) + " " + synWhere(r) + "."
	}
	return "The " + np + " " + synPick(r, move) + " " + synWhere(r) + "."
}

// synFollow is a second sentence about the thing introduced.
func synFollow(r *rand.Rand, n synName, noun string, animal bool) string {
	the := "The " + noun
	if animal {
		switch r.IntN(6) {
		case 0:
			return the + " ran to the " + synPick(r, synPlaces).name + "."
		case 1:
			return the + " ate some " + synPick(r, synFoods) + "."
		case 2:
			return the + " " + synPick(r, synAnimalMove) + " " + synWhere(r) + "."
		case 3:
			return "It was " + synPick(r, synAnimalAdj) + "."
		case 4:
			return the + " played with " + n.name + "."
		default:
			return the + " was " + synPick(r, synAnimalAdj) + "."
		}
	}
	switch r.IntN(6) {
	case 0:
		return the + " fell " + synWhere(r) + "."
	case 1:
		return n.name + " used the " + noun + "."
	case 2:
		return n.name + " put the " + noun + " " + synWhere(r) + "."
	case 3:
		return "It was " + synPick(r, synObjectAdj) + "."
	case 4:
		return n.name + " " + synPick(r, synObjectTake) + " the " + noun + "."
	default:
		return the + " was " + synPick(r, synObjectAdj) + "."
	}
}

// synPronoun is "She" or "He" for the person.
func synPronoun(n synName) string {
	if n.she {
		return "She"
	}
	return "He"
}

// synEnd is a closing sentence about the person; named says whether the
// story has named them yet (else no pronoun).
func synEnd(r *rand.Rand, n synName, named bool) string {
	who := n.name
	if r.IntN(2) == 0 && named {
		who = synPronoun(n)
	}
	switch r.IntN(4) {
	case 0:
		return who + " was " + synPick(r, synPersonAdj) + "."
	case 1:
		return "Then " + n.name + " went home."
	case 2:
		return who + " ate some " + synPick(r, synPeopleFoods) + "."
	default:
		return who + " " + synPick(r, []string{"smiled", "laughed", "sang"}) + "."
	}
}

// SynthCorpus returns n short stories (1-3 simple sentences each, e.g. "Mia
// saw a red fox in the park. The fox ran to the hill."), one per line, from
// seed. The same seed and n give the same stories; the first k stories of
// SynthCorpus(seed, n) do not depend on n.
func SynthCorpus(seed uint64, n int) []string {
	r := rand.New(rand.NewPCG(seed, 0x5c0a9b05))
	out := make([]string, 0, max(n, 0))
	for range n {
		who := synPick(r, synNames)
		var s []string
		if r.IntN(8) == 0 { // a story about the person only
			s = append(s, who.name+" went to the "+synPick(r, synPlaces).name+".")
			if r.IntN(2) == 0 {
				s = append(s, synPronoun(who)+" saw "+synPick(r, synNames).name+" there.")
			}
			s = append(s, synEnd(r, who, true))
		} else {
			animal := r.IntN(2) == 0
			list := synObjects
			if animal {
				list = synAnimals
			}
			noun := synPick(r, list)
			s = append(s, synIntro(r, who, noun, animal))
			if r.IntN(4) != 0 {
				s = append(s, synFollow(r, who, noun, animal))
			}
			if len(s) == 2 && r.IntN(3) == 0 || len(s) == 1 && r.IntN(3) == 0 {
				s = append(s, synEnd(r, who, strings.Contains(strings.Join(s, " "), who.name)))
			}
		}
		out = append(out, strings.Join(s, " "))
	}
	return out
}

// synQuestions are the task's question wordings, lower case and without
// "?" like BoolQ's (the BoolQ prompt capitalizes them and adds the "?").
var synQuestions = []string{
	"is the thing in the story an animal",
	"is the story about an animal",
	"does the story mention an animal",
	"is it an animal",
}

// SynthTask returns n BoolQ-schema examples from seed: the passage is one
// short story sentence that mentions exactly one animal-or-object word, the
// question asks (in one of a few wordings) whether it is an animal, and the
// label says whether it is. Labels are balanced (exactly half true when n is
// even, one more true when n is odd) and shuffled; Idx is 0..n-1 in order.
func SynthTask(seed uint64, n int) []SynthExample {
	r := rand.New(rand.NewPCG(seed, 0x7a5c0b01))
	out := make([]SynthExample, max(n, 0))
	for i := range out {
		out[i].Label = i < (n+1)/2
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	for i := range out {
		animal := out[i].Label
		list := synObjects
		if animal {
			list = synAnimals
		}
		noun := synPick(r, list)
		out[i].Passage = synIntro(r, synPick(r, synNames), noun, animal)
		out[i].Question = synPick(r, synQuestions)
		out[i].Idx = i
	}
	return out
}

// WriteSynthTaskJSONL writes examples as SuperGLUE BoolQ jsonl, one
// {"question","passage","label","idx"} object per line, keys in that order.
func WriteSynthTaskJSONL(w io.Writer, ex []SynthExample) error {
	type line struct {
		Question string `json:"question"`
		Passage  string `json:"passage"`
		Label    bool   `json:"label"`
		Idx      int    `json:"idx"`
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for _, e := range ex {
		if err := enc.Encode(line{e.Question, e.Passage, e.Label, e.Idx}); err != nil {
			return fmt.Errorf("synthetic task: %w", err)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
