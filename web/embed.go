// Package web holds the live training dashboard served by package monitor.
//
// The dashboard (dashboard/) is embedded in the Go binary so that `lomo
// monitor` and the trainer serve it without any network access. For the same
// reason its charting library, uPlot (MIT), is vendored under
// dashboard/vendor/ rather than loaded from a CDN: the files are copied from
// node_modules by `npm run vendor` (see package.json) and committed.
package web

import (
	"embed"
	"io/fs"
)

//go:embed dashboard
var files embed.FS

// Dashboard is the dashboard's file tree, rooted at dashboard/ (index.html at
// its top).
var Dashboard fs.FS

func init() {
	sub, err := fs.Sub(files, "dashboard")
	if err != nil {
		panic(err) // cannot happen: "dashboard" is a valid, embedded path
	}
	Dashboard = sub
}
