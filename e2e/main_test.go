package e2e

import (
	"os"
	"testing"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestMain removes the plugin binary the tests built.
func TestMain(m *testing.M) { os.Exit(nomadtest.Main(m)) }
