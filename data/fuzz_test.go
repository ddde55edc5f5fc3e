package data

import (
	"bytes"
	"testing"
)

// FuzzParseTask: any bytes, under any task name, give a task or an error,
// never a panic; a task that parses has prompts, and options with a label
// in range for multiple choice.
func FuzzParseTask(f *testing.F) {
	f.Add("boolq", []byte(`{"question":"is it","passage":"A cat.","label":true,"idx":0}`))
	f.Add("copa", []byte(`{"premise":"p","choice1":"a","choice2":"b","question":"cause","label":1}`))
	f.Add("multirc", []byte(`{"idx":0,"passage":{"text":"t","questions":[{"question":"q","answers":[{"text":"a","label":1}]}]}}`))
	f.Add("record", []byte(`{"passage":{"text":"Ann met Bob.","entities":[{"start":0,"end":2}]},"qas":[{"query":"@placeholder met Bob","answers":[{"text":"Ann"}]}]}`))
	f.Add("choice", []byte(`{"prompt":"p","options":["a","b"],"label":1}`))
	f.Add("jsonl", []byte(`{"prompt":"p","completion":"c"}`+"\n\n"))
	f.Fuzz(func(t *testing.T, name string, b []byte) {
		task, err := ParseTask(name, bytes.NewReader(b), "fuzz.jsonl")
		if err != nil {
			return
		}
		for _, ex := range task.Examples {
			if task.Kind == KindChoice && (ex.Label >= len(ex.Options) || ex.Label < -1) {
				t.Fatalf("label %d of %d options", ex.Label, len(ex.Options))
			}
		}
	})
}
