package driver

import (
	"os"
	"path/filepath"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

// offsetsPath is where a task's output offsets are kept: the task's own private
// dir on the host, which outlives the plugin process and goes with the task.
func offsetsPath(cfg *plugin.TaskConfig) string {
	if cfg.AllocDir == "" {
		return ""
	}
	return privateFile(cfg.AllocDir, cfg.Name, ".agentkernel-offsets.json")
}

// privateFile is where the plugin keeps a file of a task's: the task's private
// dir, which no sandbox and no other task reaches (the task dir when it has
// none).
func privateFile(allocDir, task, name string) string {
	dir := filepath.Join(allocDir, task, "private")
	if _, err := os.Stat(dir); err != nil {
		dir = filepath.Join(allocDir, task)
	}
	return filepath.Join(dir, name)
}
