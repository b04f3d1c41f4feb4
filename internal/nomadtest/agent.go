// Package nomadtest starts a real Nomad agent on loopback for tests (a dev
// agent, a one-node server+client agent, or a server and N clients:
// cluster.go), with the plugin under test in its plugin_dir. Tests skip with
// a clear message when no nomad binary exists (NOMAD_BIN, else nomad on PATH).
package nomadtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Options shape the agent a test gets.
type Options struct {
	// PluginDir holds plugin binaries; empty means no plugin_dir.
	PluginDir string
	// PluginConfig is the body of `plugin "agentkernel-pool" { ... }`; empty means
	// no such block (and so, from Nomad 1.9, the plugin is not loaded).
	PluginConfig string
	// ExtraConfig is appended to the agent config verbatim.
	ExtraConfig string
	// ACL enables ACLs; Agent.Token then holds the bootstrap token.
	ACL bool
	// Persistent runs a one-node server+client agent instead of -dev, so jobs
	// and allocations survive Restart (-dev keeps server state in memory).
	Persistent bool
	// StartTimeout bounds how long to wait for the node to be ready (default 90s).
	StartTimeout time.Duration

	// role and servers are set by StartCluster: a server without a client,
	// or a client joining servers (RPC addresses); name names the node.
	role    role
	servers []string
	name    string
}

// role is what an agent of a cluster runs.
type role int

const (
	roleDev    role = iota // -dev, or one server+client agent when Persistent
	roleServer             // a server only
	roleClient             // a client only, joining Options.servers
)

// Agent is a running Nomad dev agent.
type Agent struct {
	Addr       string // http://127.0.0.1:<port>
	Client     *api.Client
	NodeID     string
	DataDir    string
	ConfigPath string
	LogPath    string
	Token      string // bootstrap token when ACLs are on
	RPCAddr    string // 127.0.0.1:<rpc port>

	t    testing.TB
	bin  string
	opts Options
	dir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	// killed holds the process groups of agents Kill ended: their plugins
	// and helpers outlive them, and Stop ends them too.
	killed []int
}

// Binary finds the nomad binary: NOMAD_BIN, else nomad on PATH; none in a
// -short run (the unit tier).
func Binary() (string, error) {
	if testing.Short() {
		return "", errors.New("real-agent tests do not run with -short (make test); make e2e runs them")
	}
	if b := os.Getenv("NOMAD_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("NOMAD_BIN=%s: %w", b, err)
		}
		return b, nil
	}
	b, err := exec.LookPath("nomad")
	if err != nil {
		return "", errors.New("no nomad binary: set NOMAD_BIN or put nomad on PATH (README, Compatibility)")
	}
	return b, nil
}

// Start launches a dev agent and waits for its node to be ready. It skips the test
// when no nomad binary exists, and stops the agent when the test ends.
func Start(t testing.TB, opts Options) *Agent {
	t.Helper()
	if _, err := Binary(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	a, err := start(t, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// start is Start without skipping or failing the test, so StartCluster can
// start clients at once from goroutines of its own.
func start(t testing.TB, opts Options) (*Agent, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	dir, err := os.MkdirTemp("", "akp-nomad-")
	if err != nil {
		return nil, fmt.Errorf("make agent dir: %w", err)
	}
	a := &Agent{t: t, bin: bin, opts: opts, dir: dir,
		DataDir:    filepath.Join(dir, "data"),
		ConfigPath: filepath.Join(dir, "agent.hcl"),
		LogPath:    filepath.Join(dir, "agent.log"),
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() || os.Getenv("NOMADTEST_KEEP") != "" {
			// Kept for a post-mortem: the whole log and the alloc dirs.
			t.Logf("agent dir kept: %s; log tail:\n%s", dir, a.LogTail(60))
			return
		}
		// Task dirs hold mounts (secrets tmpfs, chroot binds) that outlive the agent.
		unmountBelow(dir)
		_ = os.RemoveAll(dir)
	})
	ports, err := freePorts(3)
	if err != nil {
		return nil, fmt.Errorf("find free ports: %w", err)
	}
	a.Addr = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	a.RPCAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])
	if err := os.WriteFile(a.ConfigPath, []byte(a.config(ports)), 0o600); err != nil {
		return nil, fmt.Errorf("write agent config: %w", err)
	}
	if err := a.launch(); err != nil {
		return nil, fmt.Errorf("start nomad agent: %w", err)
	}
	if err := a.waitReady(opts.StartTimeout); err != nil {
		return nil, fmt.Errorf("nomad agent %s not ready: %w\nlog tail:\n%s", opts.name, err, a.LogTail(40))
	}
	return a, nil
}

func (a *Agent) config(ports []int) string {
	var b strings.Builder
	if a.opts.name != "" {
		fmt.Fprintf(&b, "name = %q\n", a.opts.name)
	}
	fmt.Fprintf(&b, `data_dir  = %q
bind_addr = "127.0.0.1"
log_level = "DEBUG"
ports {
  http = %d
  rpc  = %d
  serf = %d
}
advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}
`, a.DataDir, ports[0], ports[1], ports[2])
	if a.opts.role == roleServer {
		b.WriteString(serverOnly)
	} else {
		a.clientConfig(&b, ports)
	}
	if a.opts.ACL {
		b.WriteString("acl {\n  enabled = true\n}\n")
	}
	b.WriteString(a.opts.ExtraConfig)
	return b.String()
}

// clientConfig is the config of an agent with a client, after the part every
// agent has.
func (a *Agent) clientConfig(b *strings.Builder, ports []int) {
	b.WriteString(`client {
  enabled = true
  network_interface = "lo"
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`)
	switch {
	case a.opts.role == roleClient:
		fmt.Fprintf(b, "client {\n  servers = [%q]\n}\n", strings.Join(a.opts.servers, `", "`))
	case a.opts.Persistent:
		fmt.Fprintf(b, "server {\n  enabled = true\n  bootstrap_expect = 1\n}\nclient {\n  servers = [\"127.0.0.1:%d\"]\n}\n", ports[1])
	}
	if a.opts.PluginDir != "" {
		fmt.Fprintf(b, "plugin_dir = %q\n", a.opts.PluginDir)
	}
	if a.opts.PluginConfig != "" {
		fmt.Fprintf(b, "plugin \"agentkernel-pool\" {\n%s\n}\n", a.opts.PluginConfig)
	}
}

func (a *Agent) launch() error {
	logf, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	args := []string{"agent", "-config=" + a.ConfigPath}
	if !a.opts.Persistent && a.opts.role == roleDev {
		args = append(args, "-dev")
	}
	cmd := exec.Command(a.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A group of its own, so Stop can end the agent's plugins and executors too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The agent's own temporary dir, removed with the agent's: the unix
	// sockets of its plugins (logmon, executors, this driver) live there,
	// and those of a plugin a test kills are never removed by their owner.
	tmp := filepath.Join(a.dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		logf.Close()
		return err
	}
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+a.Addr, "TMPDIR="+tmp)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()
	return nil
}

func (a *Agent) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	var lastErr error
	for ctx.Err() == nil {
		if a.exited() {
			return errors.New("agent exited during start")
		}
		if a.Client == nil {
			c, err := api.NewClient(cfg)
			if err != nil {
				return err
			}
			a.Client = c
			if a.Token != "" { // a restart keeps the bootstrap token
				a.Client.SetSecretID(a.Token)
			}
		}
		if a.opts.ACL && a.Token == "" {
			tok, _, err := a.Client.ACLTokens().Bootstrap((&api.WriteOptions{}).WithContext(ctx))
			if err == nil {
				a.Token = tok.SecretID
				a.Client.SetSecretID(a.Token)
			} else {
				lastErr = fmt.Errorf("acl bootstrap: %w", err)
				sleep(ctx, 250*time.Millisecond)
				continue
			}
		}
		ready, err := a.ready(ctx)
		if ready {
			return nil
		}
		lastErr = err
		sleep(ctx, 250*time.Millisecond)
	}
	return fmt.Errorf("timed out after %s (last error: %v)", timeout, lastErr)
}
