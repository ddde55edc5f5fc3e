// Command lomo fine-tunes LLaMA-family models with LOMO and AdaLomo on any
// WebGPU adapter.
//
//	lomo demo       fine-tune the built-in model on the built-in task and report
//	lomo train      fine-tune from a YAML config (keys of the LOMO reference)
//	lomo eval       evaluate a model on a task
//	lomo generate   continue a prompt
//	lomo tokenize   print token ids
//	lomo plan       predict device memory per optimizer
//	lomo bench      kernel and step benchmarks as JSON
//	lomo monitor    run a standalone monitoring hub
//	lomo devices    list adapters, features and limits
//	lomo web        serve the page that fine-tunes in the browser (WASM)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/lomo-dev/lomo/hf/cache"
)

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(name, summary string, run func(args []string, stdout, stderr io.Writer) error) {
	commands[name] = command{summary, run}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: lomo <command> [flags]\n\ncommands:")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'lomo <command> -h' for its flags.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "lomo: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	if err := c.run(args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "lomo %s: %v\n", args[0], err)
		if errors.Is(err, errUsage) {
			return 2
		}
		if errors.Is(err, errInterrupted) {
			return 130
		}
		return 1
	}
	return 0
}

// newFlags makes a command's flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lomo "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses a command's flags. A --model flag names a local folder or
// file, or a Hub model id (org/name[@revision]) that it replaces with its
// snapshot folder in the local Hugging Face cache, so that every command
// taking a model takes either.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if f := fs.Lookup("model"); f != nil && f.Value.String() != "" {
		dir, err := cache.Resolve(f.Value.String())
		if err != nil {
			return err
		}
		return f.Value.Set(dir)
	}
	return nil
}
