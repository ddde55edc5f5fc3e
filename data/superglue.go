package data

// SuperGLUE tasks in their official jsonl format, turned into prompted
// examples. The prompts follow the spirit of the LOMO reference: the fields
// of the item, labelled, then a question, and a last line "Answer: " after
// which the verbalized label is the target. The texts are our own.
//
// Label verbalizers keep the official label indices, so Example.Label is
// the dataset's own label number:
//
//	BoolQ, WiC, WSC, MultiRC  false/0 -> "No",  true/1 -> "Yes"
//	RTE                       entailment -> "Yes", not_entailment -> "No"
//	CB                        entailment -> "Yes", contradiction -> "No", neutral -> "Maybe"
//	COPA                      the two choices, label 0 or 1
//	ReCoRD                    generation of the entity; Options are the passage's
//	                          entities (deduplicated, in order of appearance)
//
// A missing "label" (the unlabelled test files) gives Label -1 and an empty
// Target; any other missing field is an error.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The answer line every SuperGLUE prompt ends with.
const sgAnswer = "\nAnswer: "

var (
	sgNoYes   = []string{"No", "Yes"}
	sgYesNo   = []string{"Yes", "No"}
	sgCBWords = []string{"Yes", "No", "Maybe"}
)

// sgLabel decodes a label: null or absent -> -1; a bool (when allowBool and
// n == 2) -> 0/1; an integer in [0, n); or a string equal (ignoring case) to
// one of names.
func sgLabel(raw json.RawMessage, names []string, n int, allowBool bool) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return -1, nil
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		if !allowBool || n != 2 {
			return 0, fmt.Errorf("label %s: want %s", raw, sgLabelWant(names, n))
		}
		if b {
			return 1, nil
		}
		return 0, nil
	}
	var f float64
	if json.Unmarshal(raw, &f) == nil {
		i := int(f)
		if float64(i) != f || i < 0 || i >= n {
			return 0, fmt.Errorf("label %s out of range: want %s", raw, sgLabelWant(names, n))
		}
		return i, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		for i, name := range names {
			if strings.EqualFold(s, name) {
				return i, nil
			}
		}
		return 0, fmt.Errorf("label %q out of range: want %s", s, sgLabelWant(names, n))
	}
	return 0, fmt.Errorf("label %s: want %s", raw, sgLabelWant(names, n))
}

func sgLabelWant(names []string, n int) string {
	w := fmt.Sprintf("an integer in [0, %d)", n)
	if len(names) > 0 {
		w = "one of " + strings.Join(names, ", ") + " or " + w
	}
	return w
}

// sgChoiceExample fills a multiple-choice example.
func sgChoiceExample(prompt string, options []string, label int, id string) Example {
	ex := Example{Prompt: prompt, Options: options, Label: label, ID: id}
	if label >= 0 {
		ex.Target = options[label]
	}
	return ex
}

// sgQuestion makes a question end with "?" (BoolQ questions come
// lower-case and without one).
func sgQuestion(q string) string {
	q = strings.TrimSpace(q)
	if q != "" && !strings.HasSuffix(q, "?") {
		q += "?"
	}
	if r, n := utf8.DecodeRuneInString(q); n > 0 && r != utf8.RuneError {
		q = string(unicode.ToUpper(r)) + q[n:]
	}
	return q
}

// sgNeed checks that the required string fields are present.
func sgNeed(fields ...any) error {
	for i := 0; i+1 < len(fields); i += 2 {
		if p := fields[i+1].(*string); p == nil {
			return dsMissing(fields[i].(string))
		}
	}
	return nil
}

func sgBoolQ(line []byte) ([]Example, error) {
	var v struct {
		Question *string         `json:"question"`
		Passage  *string         `json:"passage"`
		Label    json.RawMessage `json:"label"`
		Idx      json.RawMessage `json:"idx"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if err := sgNeed("passage", v.Passage, "question", v.Question); err != nil {
		return nil, err
	}
	label, err := sgLabel(v.Label, []string{"false", "true"}, 2, true)
	if err != nil {
		return nil, err
	}
	prompt := "Passage: " + *v.Passage + "\nQuestion: " + sgQuestion(*v.Question) + sgAnswer
	return []Example{sgChoiceExample(prompt, sgNoYes, label, dsID(v.Idx))}, nil
}

// sgPremiseHypothesis parses the CB/RTE layout.
func sgPremiseHypothesis(line []byte, names, words []string, question string) ([]Example, error) {
	var v struct {
		Premise    *string         `json:"premise"`
		Hypothesis *string         `json:"hypothesis"`
		Label      json.RawMessage `json:"label"`
		Idx        json.RawMessage `json:"idx"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if err := sgNeed("premise", v.Premise, "hypothesis", v.Hypothesis); err != nil {
		return nil, err
	}
	label, err := sgLabel(v.Label, names, len(names), false)
	if err != nil {
		return nil, err
	}
	prompt := "Premise: " + *v.Premise + "\nHypothesis: " + *v.Hypothesis + "\nQuestion: " + question + sgAnswer
	return []Example{sgChoiceExample(prompt, words, label, dsID(v.Idx))}, nil
}

func sgCB(line []byte) ([]Example, error) {
	return sgPremiseHypothesis(line, []string{"entailment", "contradiction", "neutral"}, sgCBWords,
		"Given the premise, is the hypothesis true? Yes, No, or Maybe?")
}

func sgRTE(line []byte) ([]Example, error) {
	return sgPremiseHypothesis(line, []string{"entailment", "not_entailment"}, sgYesNo,
		"Does the premise entail the hypothesis? Yes or No?")
}

func sgCOPA(line []byte) ([]Example, error) {
	var v struct {
		Premise  *string         `json:"premise"`
		Choice1  *string         `json:"choice1"`
		Choice2  *string         `json:"choice2"`
		Question *string         `json:"question"`
		Label    json.RawMessage `json:"label"`
		Idx      json.RawMessage `json:"idx"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if err := sgNeed("premise", v.Premise, "choice1", v.Choice1, "choice2", v.Choice2, "question", v.Question); err != nil {
		return nil, err
	}
	var q string
	switch *v.Question {
	case "cause":
		q = "What was the cause?"
	case "effect":
		q = "What was the effect?"
	default:
		return nil, fmt.Errorf("question %q: want cause or effect", *v.Question)
	}
	label, err := sgLabel(v.Label, nil, 2, false)
	if err != nil {
		return nil, err
	}
	prompt := "Premise: " + *v.Premise + "\nQuestion: " + q + sgAnswer
	return []Example{sgChoiceExample(prompt, []string{*v.Choice1, *v.Choice2}, label, dsID(v.Idx))}, nil
}

// sgMultiRC flattens the nested format: one example per (question, answer).
func sgMultiRC(line []byte) ([]Example, error) {
	var v struct {
		Idx     json.RawMessage `json:"idx"`
		Passage *struct {
			Text      *string `json:"text"`
			Questions *[]struct {
				Question *string         `json:"question"`
				Idx      json.RawMessage `json:"idx"`
				Answers  *[]struct {
					Text  *string         `json:"text"`
					Idx   json.RawMessage `json:"idx"`
					Label json.RawMessage `json:"label"`
				} `json:"answers"`
			} `json:"questions"`
		} `json:"passage"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if v.Passage == nil {
		return nil, dsMissing("passage")
	}
	if v.Passage.Text == nil {
		return nil, dsMissing("passage.text")
	}
	if v.Passage.Questions == nil {
		return nil, dsMissing("passage.questions")
	}
	pid := dsID(v.Idx)
	var out []Example
	for qi, q := range *v.Passage.Questions {
		if q.Question == nil {
			return nil, fmt.Errorf("passage.questions[%d]: %w", qi, dsMissing("question"))
		}
		if q.Answers == nil {
			return nil, fmt.Errorf("passage.questions[%d]: %w", qi, dsMissing("answers"))
		}
		qid := dsID(q.Idx)
		for ai, a := range *q.Answers {
			if a.Text == nil {
				return nil, fmt.Errorf("passage.questions[%d].answers[%d]: %w", qi, ai, dsMissing("text"))
			}
			label, err := sgLabel(a.Label, []string{"false", "true"}, 2, true)
			if err != nil {
				return nil, fmt.Errorf("passage.questions[%d].answers[%d]: %w", qi, ai, err)
			}
			prompt := "Paragraph: " + *v.Passage.Text + "\nQuestion: " + strings.TrimSpace(*q.Question) +
				"\nCandidate answer: " + *a.Text + "\nIs the candidate answer correct? Yes or No?" + sgAnswer
			id := ""
			if pid != "" && qid != "" {
				id = pid + "-" + qid + "-" + dsID(a.Idx)
			}
			out = append(out, sgChoiceExample(prompt, sgNoYes, label, id))
		}
	}
	return out, nil
}

func sgWiC(line []byte) ([]Example, error) {
	var v struct {
		Word      *string         `json:"word"`
		Sentence1 *string         `json:"sentence1"`
		Sentence2 *string         `json:"sentence2"`
		Label     json.RawMessage `json:"label"`
		Idx       json.RawMessage `json:"idx"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if err := sgNeed("sentence1", v.Sentence1, "sentence2", v.Sentence2, "word", v.Word); err != nil {
		return nil, err
	}
	label, err := sgLabel(v.Label, []string{"false", "true"}, 2, true)
	if err != nil {
		return nil, err
	}
	prompt := "Sentence 1: " + *v.Sentence1 + "\nSentence 2: " + *v.Sentence2 +
		"\nQuestion: Is the word \"" + *v.Word + "\" used with the same meaning in both sentences? Yes or No?" + sgAnswer
	return []Example{sgChoiceExample(prompt, sgNoYes, label, dsID(v.Idx))}, nil
}

func sgWSC(line []byte) ([]Example, error) {
	var v struct {
		Text   *string `json:"text"`
		Target *struct {
			Span1 *string `json:"span1_text"`
			Span2 *string `json:"span2_text"`
		} `json:"target"`
		Label json.RawMessage `json:"label"`
		Idx   json.RawMessage `json:"idx"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if v.Text == nil {
		return nil, dsMissing("text")
	}
	if v.Target == nil {
		return nil, dsMissing("target")
	}
	if err := sgNeed("target.span1_text", v.Target.Span1, "target.span2_text", v.Target.Span2); err != nil {
		return nil, err
	}
	label, err := sgLabel(v.Label, []string{"false", "true"}, 2, true)
	if err != nil {
		return nil, err
	}
	prompt := "Text: " + *v.Text + "\nQuestion: In the text above, does the pronoun \"" + *v.Target.Span2 +
		"\" refer to \"" + *v.Target.Span1 + "\"? Yes or No?" + sgAnswer
	return []Example{sgChoiceExample(prompt, sgNoYes, label, dsID(v.Idx))}, nil
}

// sgReCoRD gives one example per query. Entity offsets are inclusive
// character (code point) offsets into the passage, as in the official data.
func sgReCoRD(line []byte) ([]Example, error) {
	type span struct {
		Start *int `json:"start"`
		End   *int `json:"end"`
	}
	var v struct {
		Idx     json.RawMessage `json:"idx"`
		Passage *struct {
			Text     *string `json:"text"`
			Entities *[]span `json:"entities"`
		} `json:"passage"`
		QAs *[]struct {
			Query   *string         `json:"query"`
			Idx     json.RawMessage `json:"idx"`
			Answers *[]struct {
				Text *string `json:"text"`
			} `json:"answers"`
		} `json:"qas"`
	}
	if err := dsUnmarshal(line, &v); err != nil {
		return nil, err
	}
	if v.Passage == nil {
		return nil, dsMissing("passage")
	}
	if v.Passage.Text == nil {
		return nil, dsMissing("passage.text")
	}
	if v.Passage.Entities == nil {
		return nil, dsMissing("passage.entities")
	}
	if v.QAs == nil {
		return nil, dsMissing("qas")
	}
	text := []rune(*v.Passage.Text)
	var options []string
	seen := map[string]bool{}
	for i, e := range *v.Passage.Entities {
		if e.Start == nil || e.End == nil {
			return nil, fmt.Errorf("passage.entities[%d]: %w", i, dsMissing("start/end"))
		}
		s, en := *e.Start, *e.End
		if s < 0 || en < s || en >= len(text) {
			return nil, fmt.Errorf("passage.entities[%d]: span [%d, %d] outside the passage (%d characters)", i, s, en, len(text))
		}
		ent := strings.TrimSpace(string(text[s : en+1]))
		if ent != "" && !seen[ent] {
			seen[ent] = true
			options = append(options, ent)
		}
	}
	passage := strings.ReplaceAll(*v.Passage.Text, "@highlight\n", "- ")
	var out []Example
	for qi, qa := range *v.QAs {
		if qa.Query == nil {
			return nil, fmt.Errorf("qas[%d]: %w", qi, dsMissing("query"))
		}
		ex := Example{
			Prompt: "Passage: " + passage + "\nQuery: " + *qa.Query +
				"\nQuestion: Which entity from the passage does @placeholder stand for in the query?" + sgAnswer,
			Options: options,
			Label:   -1,
			ID:      dsID(qa.Idx),
		}
		if qa.Answers != nil {
			got := map[string]bool{}
			for ai, a := range *qa.Answers {
				if a.Text == nil {
					return nil, fmt.Errorf("qas[%d].answers[%d]: %w", qi, ai, dsMissing("text"))
				}
				if !got[*a.Text] {
					got[*a.Text] = true
					ex.Answers = append(ex.Answers, *a.Text)
				}
			}
			for i, o := range options {
				if got[o] {
					ex.Label = i
					break
				}
			}
			if len(ex.Answers) > 0 {
				ex.Target = ex.Answers[0]
			}
		}
		out = append(out, ex)
	}
	return out, nil
}
