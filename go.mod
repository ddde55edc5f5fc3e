module github.com/lomo-dev/lomo

go 1.26

require (
	github.com/coder/websocket v1.8.15
	github.com/cogentcore/webgpu v0.23.0
	github.com/schollz/progressbar/v3 v3.19.1
	golang.org/x/term v0.44.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/mitchellh/colorstring v0.0.0-20190213212951-d06e56a500db // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/sys v0.46.0 // indirect
)
