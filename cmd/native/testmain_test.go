package main

import (
	"testing"

	"github.com/lomo-dev/lomo/internal/testgpu"
)

// LOMO_VALIDATION=1 runs the commands' tests under the Vulkan validation
// layers.
func TestMain(m *testing.M) { testgpu.Main(m, nil) }
