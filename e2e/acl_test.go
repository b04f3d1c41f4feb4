package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// aclPolicy reads the least-privilege policy shipped in example/acl.hcl, with
// alloc-node-exec enabled as its comment says for pools on raw_exec (the test
// pool's driver).
func aclPolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../example/acl.hcl")
	if err != nil {
		t.Fatal(err)
	}
	const rawExec = `# "alloc-node-exec",`
	if !strings.Contains(string(b), rawExec) {
		t.Fatalf("example/acl.hcl changed shape: no %s line", rawExec)
	}
	return strings.Replace(string(b), rawExec, `"alloc-node-exec",`, 1)
}

// withoutVariables drops the variables block from a policy: the token can no
// longer read or write claim records.
func withoutVariables(t *testing.T, rules string) string {
	t.Helper()
	i := strings.Index(rules, "  variables {")
	j := strings.Index(rules, "# The plugin asks its local agent")
	if i < 0 || j < i {
		t.Fatalf("example/acl.hcl changed shape: no variables block before the agent rule")
	}
	// The variables block closes the namespace block too: keep one brace.
	return rules[:i] + "}\n\n" + rules[j:]
}

// withoutCapability drops one capability line from a policy.
func withoutCapability(t *testing.T, rules, capability string) string {
	t.Helper()
	if !strings.Contains(rules, capability) {
		t.Fatalf("policy has no %s", capability)
	}
	return strings.Replace(rules, capability, "", 1)
}

// applyPolicy creates or updates a policy.
func applyPolicy(t *testing.T, a *nomadtest.Agent, name, rules string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Client.ACLPolicies().Upsert(&api.ACLPolicy{Name: name, Description: "agentkernel-pool e2e", Rules: rules},
		(&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatalf("apply policy %s: %v", name, err)
	}
}

// aclAgent starts an ACL-enabled agent whose plugin block names a token file
// that does not exist yet and puts the warm jobs in a namespace of their own,
// as example/agent.hcl does (example/acl.hcl grants rights there only); it
// returns the agent and the file's path.
func aclAgent(t *testing.T, persistent bool) (*nomadtest.Agent, string) {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	tokenFile := filepath.Join(t.TempDir(), "agentkernel-pool.token")
	block := strings.Replace(poolBlock("dev", rawExecTemplate(t), 1, 4), "config {\n",
		"config {\n  token_file = \""+tokenFile+"\"\n  namespace = \""+warmNamespace+"\"\n", 1)
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block, ACL: true, Persistent: persistent})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.Client.Namespaces().Register(&api.Namespace{Name: warmNamespace, Description: "warm sandboxes of agentkernel-pool"},
		(&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatalf("create namespace %s: %v", warmNamespace, err)
	}
	return a, tokenFile
}

// warmNamespace is the namespace of the warm jobs in example/agent.hcl.
const warmNamespace = "agentkernel-pool"

// pluginToken creates a policy from rules and a client token holding only it.
func pluginToken(t *testing.T, a *nomadtest.Agent, name, rules string) string {
	t.Helper()
	applyPolicy(t, a, name, rules)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, _, err := a.Client.ACLTokens().Create(&api.ACLToken{Name: name, Type: "client", Policies: []string{name}},
		(&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return tok.SecretID
}

func writeToken(t *testing.T, path, secret string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// unhealthyWith waits until the driver is detected and unhealthy with a
// description containing every one of want.
func unhealthyWith(t *testing.T, a *nomadtest.Agent, within time.Duration, want ...string) *api.DriverInfo {
	t.Helper()
	d, ok := a.WaitDriver(driver.Name, within, func(d *api.DriverInfo) bool {
		if !d.Detected || d.Healthy {
			return false
		}
		for _, w := range want {
			if !strings.Contains(d.HealthDescription, w) {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("driver not unhealthy with a description naming %q in %s; last: %+v", want, within, d)
	}
	return d
}

// noSecret fails when secret appears in the agent log or in the task's events.
func noSecret(t *testing.T, a *nomadtest.Agent, secret string, states ...*api.TaskState) {
	t.Helper()
	if secret == "" {
		return
	}
	if strings.Contains(a.Log(), secret) {
		t.Errorf("the plugin token's secret appears in the agent log %s", a.LogPath)
	}
	for _, ts := range states {
		for _, e := range ts.Events {
			s := e.Type + e.DisplayMessage + e.Message + e.DriverError + e.DriverMessage + e.KillError + e.SetupError + e.DownloadError + e.ValidationError
			for k, v := range e.Details {
				s += k + v
			}
			if strings.Contains(s, secret) {
				t.Errorf("the token's secret appears in a task event: %s: %s", e.Type, e.DisplayMessage)
			}
		}
	}
}

// TestACLLeastPrivilege: on an ACL-enabled agent, as an operator would set it up.
// The token file does not exist yet (driver unhealthy, naming token_file); a
// token without the variables rules (claim records) makes the driver unhealthy
// with a description naming the variables capability, one without dispatch-job
// likewise; once the operator changes that token's policy to example/acl.hcl,
// the driver turns healthy without a restart and a sandbox job runs to
// completion with its output. No secret ever reaches the agent log or a task
// event.
func TestACLLeastPrivilege(t *testing.T) {
	a, tokenFile := aclAgent(t, true)

	// 1. No token file yet: the operator is told which field is wrong.
	unhealthyWith(t, a, 60*time.Second, "token_file", "no such file")

	// 2. A token missing the variables rules: claims cannot be recorded.
	limited := pluginToken(t, a, "akp-no-variables", withoutVariables(t, aclPolicy(t)))
	writeToken(t, tokenFile, limited)
	a.Restart()
	d := unhealthyWith(t, a, 90*time.Second, "403")
	for _, w := range []string{"claim record", "variables write", "agentkernel-pool/*"} {
		if !strings.Contains(d.HealthDescription, w) {
			t.Errorf("health description %q does not name the missing capability (%q)", d.HealthDescription, w)
		}
	}
	if strings.Contains(d.HealthDescription, limited) {
		t.Errorf("health description carries the token's secret")
	}
	t.Logf("without variables: %s", d.HealthDescription)

	// 3. A token without dispatch-job: warm instances cannot be dispatched.
	noDispatch := pluginToken(t, a, "akp-no-dispatch", withoutCapability(t, aclPolicy(t), `"dispatch-job",`))
	writeToken(t, tokenFile, noDispatch)
	a.Restart()
	d = unhealthyWith(t, a, 90*time.Second, "403", "dispatch-job")
	t.Logf("without dispatch-job: %s", d.HealthDescription)

	// 4. The operator fixes the policy in place to example/acl.hcl: the same
	// token, no restart. The driver retries its start and turns healthy, and a
	// command runs in a sandbox.
	fixed := time.Now()
	applyPolicy(t, a, "akp-no-dispatch", aclPolicy(t))
	if d, ok := a.WaitDriver(driver.Name, 90*time.Second, func(d *api.DriverInfo) bool { return d.Healthy }); !ok {
		t.Fatalf("driver not healthy after the policy became example/acl.hcl: %+v", d)
	}
	t.Logf("healthy %s after the policy fix, without a restart", time.Since(fixed).Round(time.Millisecond))
	waitWarm(t, a, "dev", 1)
	alloc := runJob(t, a, jobHCL(t, "command.nomad.hcl"))
	ts := waitTask(t, a, alloc.ID, "agent", "dead", 90*time.Second)
	if code, ok := exitCode(ts); !ok || code != 3 {
		t.Errorf("exit code %d (found %v), want 3; events:\n%s", code, ok, events(ts))
	}
	if !strings.Contains(events(ts), "Claimed warm sandbox") && !strings.Contains(events(ts), "miss: started a sandbox cold") {
		t.Errorf("no claim event:\n%s", events(ts))
	}
	if out := aclLogs(t, a, alloc.ID, "agent"); !strings.Contains(out, "out:hello from the task env") {
		t.Errorf("stdout %q lacks the command's output", out)
	}
	// The used sandbox is purged and the pool refills with the limited token.
	waitFor(t, 60*time.Second, "1 live warm instance", func() bool { return len(warmJobs(t, a)) == 1 })
	noSecret(t, a, limited, ts)
	noSecret(t, a, noDispatch, ts)
}

// TestACLNoToken: ACLs on and no token at all (no token_file, no NOMAD_TOKEN):
// the driver is unhealthy with a description that says the API refused it and
// what to give the plugin; the agent keeps running.
func TestACLNoToken(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	if os.Getenv("NOMAD_TOKEN") != "" {
		t.Skip("skipping: NOMAD_TOKEN is set in the environment, which the plugin would use")
	}
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), ACL: true,
		PluginConfig: poolBlock("dev", rawExecTemplate(t), 1, 4)})
	d := unhealthyWith(t, a, 60*time.Second, "403")
	for _, w := range []string{"/v1/agent/self", "token_file"} {
		if !strings.Contains(d.HealthDescription, w) {
			t.Errorf("health description %q does not mention %q", d.HealthDescription, w)
		}
	}
	t.Logf("no token: %s", d.HealthDescription)
	if !a.Running() {
		t.Fatal("nomad agent stopped")
	}
}

// aclLogs reads a task's stdout through the API with the bootstrap token.
func aclLogs(t *testing.T, a *nomadtest.Agent, allocID, task string) string {
	t.Helper()
	out, errOut, code := nomadCLI(t, a, "", "alloc", "logs", allocID, task)
	if code != 0 {
		t.Fatalf("nomad alloc logs: %s", errOut)
	}
	return out
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf for dnsName and 127.0.0.1; it returns cert and key PEM.
func (ca *testCA) issue(t *testing.T, dnsName string, usage x509.ExtKeyUsage) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{dnsName}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// TestTLS: the plugin reaches the Nomad API over mutual TLS (ca_file, cert_file,
// key_file, tls_server_name) through a TLS-terminating forwarder in front of the
// agent's HTTP port: healthy, and a sandbox job runs (claim, exec stream, output).
// With a CA that did not sign the server's certificate the driver is unhealthy
// with a description naming the certificate problem.
func TestTLS(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	const serverName = "server.global.nomad"
	ca := newTestCA(t, "akp-e2e-ca")
	srvCert, srvKey := ca.issue(t, serverName, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey := ca.issue(t, "akp-plugin", x509.ExtKeyUsageClientAuth)
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": ca.pem, "cli.pem": cliCert, "cli-key.pem": cliKey}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	fwd := newForwarder(t)
	// The forwarder picks a loopback port; the plugin must use https on it.
	fwd.tlsConf = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots, MinVersion: tls.VersionTLS12}
	url := "https://" + fwd.addr
	block := strings.Replace(poolBlock("dev", rawExecTemplate(t), 1, 4), "config {\n", "config {\n"+
		"  address = \""+url+"\"\n"+
		"  ca_file = \""+filepath.Join(dir, "ca.pem")+"\"\n"+
		"  cert_file = \""+filepath.Join(dir, "cli.pem")+"\"\n"+
		"  key_file = \""+filepath.Join(dir, "cli-key.pem")+"\"\n"+
		"  tls_server_name = \""+serverName+"\"\n", 1)
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block, Persistent: true})
	fwd.open(t, strings.TrimPrefix(a.Addr, "http://"))

	if d, ok := a.WaitDriver(driver.Name, 90*time.Second, func(d *api.DriverInfo) bool { return d.Healthy }); !ok {
		t.Fatalf("driver not healthy over TLS: %+v", d)
	}
	waitWarm(t, a, "dev", 1)
	alloc := runJob(t, a, jobHCL(t, "command.nomad.hcl"))
	ts := waitTask(t, a, alloc.ID, "agent", "dead", 90*time.Second)
	if code, ok := exitCode(ts); !ok || code != 3 {
		t.Errorf("exit code %d (found %v), want 3; events:\n%s", code, ok, events(ts))
	}
	if out := logs(t, a, alloc.ID, "agent"); !strings.Contains(out, "out:hello from the task env") {
		t.Errorf("stdout %q lacks the command's output", out)
	}

	// A CA that did not sign the server's certificate.
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), newTestCA(t, "akp-wrong-ca").pem, 0o600); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	d := unhealthyWith(t, a, 90*time.Second, url, "certificate")
	t.Logf("wrong CA: %s", d.HealthDescription)
}
