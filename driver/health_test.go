package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// A start of the pools that fails (say, the token lacks a right) leaves the
// driver unhealthy with the error, and is retried: once the operator fixes
// the cause, the driver turns healthy with no agent restart.
func TestFailedPoolStartRetriedUntilFixed(t *testing.T) {
	e := &env{t: t, pool: newFakePool(), runner: newFakeRunner(), dir: t.TempDir()}
	e.pool.dir = e.dir
	var mu sync.Mutex
	denied := true
	starts := 0
	e.drv = New(hclog.NewNullLogger(), func(cfg *Config, token *nomadapi.Token, logger hclog.Logger, onChange func(), _ Metrics) (Backend, error) {
		return &fakeNomad{fakeRunner: e.runner,
			startPool: func(context.Context) (Pool, error) {
				mu.Lock()
				defer mu.Unlock()
				starts++
				if denied {
					return nil, errors.New("check acl token: write claim record: permission denied (needs variables write)")
				}
				return e.pool, nil
			}}, nil
	})
	e.drv.startRetry = 50 * time.Millisecond
	t.Cleanup(func() { _ = e.drv.Shutdown(context.Background()) })
	e.c = plugintest.Serve(t, e.drv)

	_, err := e.c.Base.SetConfig(context.Background(), &base.SetConfigRequest{MsgpackConfig: e.pluginConfig(e.devPool()), PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512}}})
	if err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	fp := e.waitHealth(drivers.FingerprintResponse_UNHEALTHY)
	for !strings.Contains(fp.HealthDescription, "permission denied") {
		fp = e.waitHealth(drivers.FingerprintResponse_UNHEALTHY)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	tries := starts
	denied = false // the operator fixed the policy
	mu.Unlock()
	if tries < 2 {
		t.Errorf("pools started %d times while failing, want retries", tries)
	}
	e.waitHealth(drivers.FingerprintResponse_HEALTHY)
	h := e.start(e.taskConfig("agent", map[string]any{"pool": "dev"}, nil))
	if h.Config.GetId() == "" {
		t.Fatal("no task started after the fix")
	}
}

// The files the plugin block names are read again: a token_file that appears
// after the agent started makes the driver healthy, and a new token in it (a
// rotation) is what the next API call sends, with the same backend and pools:
// nothing is torn down or started twice, and a running task goes on.
func TestTokenFileReloaded(t *testing.T) {
	e := &env{t: t, pool: newFakePool(), runner: newFakeRunner(), dir: t.TempDir()}
	e.pool.dir = e.dir
	var mu sync.Mutex
	var builds, starts int
	var tok *nomadapi.Token
	e.drv = New(hclog.NewNullLogger(), func(cfg *Config, token *nomadapi.Token, logger hclog.Logger, onChange func(), _ Metrics) (Backend, error) {
		mu.Lock()
		builds++
		tok = token
		mu.Unlock()
		return &fakeNomad{fakeRunner: e.runner,
			startPool: func(context.Context) (Pool, error) {
				mu.Lock()
				starts++
				mu.Unlock()
				return e.pool, nil
			}}, nil
	})
	e.drv.reloadEvery = 50 * time.Millisecond
	t.Cleanup(func() { _ = e.drv.Shutdown(context.Background()) })
	e.c = plugintest.Serve(t, e.drv)

	tokenFile := filepath.Join(e.dir, "token")
	cfg := map[string]any{"address": nil, "ca_file": nil, "cert_file": nil, "key_file": nil,
		"namespace": nil, "tls_server_name": nil, "token_file": tokenFile, "pool": e.devPool()}
	_, err := e.c.Base.SetConfig(context.Background(), &base.SetConfigRequest{MsgpackConfig: encode(t, cfg), PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512}}})
	if err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	if fp := e.waitHealth(drivers.FingerprintResponse_UNHEALTHY); !strings.Contains(fp.HealthDescription, "token_file") {
		t.Fatalf("without the token file: %q", fp.HealthDescription)
	}
	if err := os.WriteFile(tokenFile, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.waitHealth(drivers.FingerprintResponse_HEALTHY)
	mu.Lock()
	if got := tok.Secret(); got != "first-token" {
		t.Errorf("token sent after token_file appeared: %q, want first-token", got)
	}
	mu.Unlock()
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, map[string]string{"OUT": "before"})
	e.start(tc)

	if err := os.WriteFile(tokenFile, []byte("second-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for tok.Secret() != "second-token" {
		if time.Now().After(deadline) {
			t.Fatalf("token after the rotation %q, want second-token", tok.Secret())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a few more reloads: no rebuild either
	mu.Lock()
	if builds != 1 || starts != 1 {
		t.Errorf("backend built %d times and pools started %d times, want once each: a token is a value", builds, starts)
	}
	mu.Unlock()
	e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 7}
	if r := e.wait(tc.Id); r.Result.GetExitCode() != 7 {
		t.Errorf("task running across the rotation: exit code %d, want 7", r.Result.GetExitCode())
	}
}

// A pool whose template fails is named, with the reason, in the health
// description and its node attribute; the driver stays healthy (other
// pools serve), a task on that pool fails at once and recoverably with the
// reason, and once the pool works again both go away.
func TestFailingPoolInHealthAndAttributes(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	const why = `pool "dev" is failing: warm instances die before turning warm (3 in a row): task "sandbox": Driver Failure: exec: "/no/such": no such file or directory`
	e.pool.mu.Lock()
	e.pool.poolErr = why
	e.pool.claimErr = fmt.Errorf(`claim warm allocation in pool "dev": %w: task "sandbox": Driver Failure: exec: "/no/such": no such file or directory`, pool.ErrFailing)
	e.pool.mu.Unlock()
	e.drv.health.poke() // what the pool's OnChange does

	fp := e.waitFingerprint("the failing pool", func(fp *drivers.FingerprintResponse) bool {
		return strings.Contains(fp.HealthDescription, why)
	})
	if fp.Health != drivers.FingerprintResponse_HEALTHY {
		t.Errorf("health %v with one failing pool, want healthy", fp.Health)
	}
	if got := fp.Attributes[nodeattr.Pool("dev", nodeattr.Error)].GetStringVal(); got != why {
		t.Errorf("error attribute = %q, want %q", got, why)
	}
	_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{
		Task: e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/true"}, nil)})
	if err == nil || !recoverable(err) || !strings.Contains(err.Error(), `exec: "/no/such": no such file`) {
		t.Fatalf("start on a failing pool: want a recoverable error with the reason, got %v", err)
	}

	e.pool.mu.Lock()
	e.pool.poolErr, e.pool.claimErr = "", nil
	e.pool.mu.Unlock()
	e.drv.health.poke()
	fp = e.waitFingerprint("the pool working again", func(fp *drivers.FingerprintResponse) bool {
		return fp.HealthDescription == "ready"
	})
	if got := fp.Attributes[nodeattr.Pool("dev", nodeattr.Error)].GetStringVal(); got != "" {
		t.Errorf("error attribute %q once the pool works, want empty", got)
	}
}
