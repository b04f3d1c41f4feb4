package driver

import (
	"os"
	"path/filepath"

	"github.com/agentkernel/agentkernel-pool/plugin"
)

// offsetsPath is where the output offsets of one run of a task are kept: the
// task's own private dir on the host, which outlives the plugin process and
// goes with the task. Each run has its own: a task restarted (by the user,
// its restart policy, or after its sandbox died) starts a new run in a new
// sandbox, whose output is shipped from its start; offsets shared by the
// runs had the next run's shipper skip as many bytes as the last had shipped.
// The shipper's and the log holder's files sit beside it (shipper.Stop
// removes them all).
func offsetsPath(cfg *plugin.TaskConfig, runID string) string {
	if cfg.AllocDir == "" {
		return ""
	}
	return privateFile(cfg.AllocDir, cfg.Name, ".agentkernel-"+runID+".offsets.json")
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
