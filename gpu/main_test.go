package gpu

import (
	"testing"

	"github.com/lomo-dev/lomo/internal/testgpu"
)

// Each test opens its own device; LOMO_VALIDATION=1 runs them under the
// Vulkan validation layers.
func TestMain(m *testing.M) { testgpu.Main(m, nil) }
