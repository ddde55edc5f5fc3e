//go:build js

package testgpu

// startValidation: the browser has no Vulkan layers; WebGPU's own validation
// reaches lomo through error scopes.
func startValidation() (finish func(bool) error, err error) {
	return func(bool) error { return nil }, nil
}
