package data

import (
	"embed"
	"io/fs"
	"os"
	"path/filepath"
)

// demoModel is the built-in base model of `lomo demo`, pretrained by lomo
// itself (`lomo pretrain`, recipe train.DefaultPretrain) on text that lomo
// generates (SynthCorpus): Hugging Face layout.
//
//go:embed assets/demo
var demoModel embed.FS

// DemoModel returns the built-in model's files.
func DemoModel() fs.FS {
	sub, err := fs.Sub(demoModel, "assets/demo")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	return sub
}

// WriteDemoModel writes the built-in model's files into dir.
func WriteDemoModel(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return fs.WalkDir(DemoModel(), ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fs.ReadFile(DemoModel(), p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	})
}
