package nomadtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
	buildOut  []byte
)

// PluginName is the binary name Nomad must see in plugin_dir, and
// DevicePluginName the device plugin's (a symlink to it).
const (
	PluginName       = "agentkernel-pool"
	DevicePluginName = "agentkernel-pool-device"
)

// Main runs a test binary's tests and then removes the plugin BuildPlugin
// built: every package calling BuildPlugin has
// func TestMain(m *testing.M) { os.Exit(nomadtest.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	return code
}

// BuildPlugin builds the plugin binary once per test process into a temporary
// plugin dir and returns that dir; Main removes it when the tests are done.
func BuildPlugin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		var root []byte
		root, buildErr = exec.Command("go", "env", "GOMOD").Output()
		if buildErr != nil {
			return
		}
		buildDir, buildErr = os.MkdirTemp("", "akp-plugins-")
		if buildErr != nil {
			return
		}
		// With the fault points compiled in (driver/failpoint_on.go).
		cmd := exec.Command("go", "build", "-tags", "failpoint", "-o", filepath.Join(buildDir, PluginName), ".")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
		if buildOut, buildErr = cmd.CombinedOutput(); buildErr != nil {
			return
		}
		// The device plugin is the same binary under a second name; an
		// agent without its plugin block skips it.
		buildErr = os.Symlink(PluginName, filepath.Join(buildDir, DevicePluginName))
	})
	if buildErr != nil {
		t.Fatalf("build plugin: %v\n%s", buildErr, buildOut)
	}
	return buildDir
}
