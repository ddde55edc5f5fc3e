//go:build !js

package testgpu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const layer = "VK_LAYER_KHRONOS_validation"

// startValidation turns the validation layers on for this process when
// LOMO_VALIDATION=1: the layer reads its settings from the file named by
// VK_LAYER_SETTINGS_PATH when the Vulkan instance is created, and logs every
// error, warning and performance warning to a file of this process (child
// processes that run this TestMain get their own). finish reports what was
// logged, and, if mustHaveLoaded, a layer that never wrote its log.
func startValidation() (finish func(mustHaveLoaded bool) error, err error) {
	if os.Getenv("LOMO_VALIDATION") != "1" {
		return func(bool) error { return nil }, nil
	}
	if !layerInstalled() {
		return nil, fmt.Errorf("LOMO_VALIDATION=1: the Khronos validation layer is not installed (Debian/Ubuntu: apt-get install vulkan-validationlayers)")
	}
	dir, err := os.MkdirTemp("", "lomo-validation-")
	if err != nil {
		return nil, err
	}
	log := filepath.Join(dir, "validation.log")
	settings := strings.Join([]string{
		"khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG",
		"khronos_validation.log_filename = " + log,
		"khronos_validation.report_flags = error,warn,perf",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(dir, "vk_layer_settings.txt"), []byte(settings), 0o644); err != nil {
		return nil, err
	}
	os.Setenv("VK_LAYER_SETTINGS_PATH", dir)
	layers := layer
	if l := os.Getenv("VK_INSTANCE_LAYERS"); l != "" && !strings.Contains(l, layer) {
		layers = l + ":" + layer
	}
	os.Setenv("VK_INSTANCE_LAYERS", layers)
	return func(mustHaveLoaded bool) error {
		defer os.RemoveAll(dir)
		b, err := os.ReadFile(log)
		if os.IsNotExist(err) && !mustHaveLoaded {
			return nil
		}
		if os.IsNotExist(err) {
			return fmt.Errorf("LOMO_VALIDATION=1: the validation layer wrote no log: it did not load, or no Vulkan instance was created")
		}
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(b)) == 0 {
			return nil
		}
		n := bytes.Count(b, []byte("msgNum:"))
		if len(b) > 8000 {
			b = append(b[:8000], "\n..."...)
		}
		return fmt.Errorf("Vulkan validation layers: %d messages:\n%s", n, b)
	}, nil
}

// layerInstalled looks for the layer's manifest where the Vulkan loader
// does (VK_LAYER_PATH, XDG and system folders).
func layerInstalled() bool {
	dirs := filepath.SplitList(os.Getenv("VK_LAYER_PATH"))
	for _, base := range append(filepath.SplitList(os.Getenv("XDG_DATA_DIRS")), "/usr/local/share", "/usr/share", "/etc") {
		dirs = append(dirs, filepath.Join(base, "vulkan", "explicit_layer.d"))
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "VkLayer_khronos_validation.json")); err == nil {
			return true
		}
	}
	return false
}
