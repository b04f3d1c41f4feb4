package sandbox

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tricky values survive the env file and argv untouched.
var tricky = []string{
	`plain`,
	`it's "quoted"`,
	"two\nlines\n",
	`$HOME ${PATH} $(id) ` + "`id`",
	`back\slash \n \\ \'`,
	`ünïcødé ✓ 日本`,
	`'`,
	`''`,
	` leading and trailing `,
	`*.go [a-z] ~ ; & | < > ( ) { } !`,
	``,
	`-n`,
}

func TestLaunchRunsCommandWithEnvAndArgs(t *testing.T) {
	r, ref := localSandbox(t)
	env := map[string]string{"SANDBOX_OWN": "task"}
	for i, v := range tricky {
		env["V"+strings.Repeat("X", i)] = v
	}
	env["bad.name"] = "skipped"
	// The command prints its args, then the env values, NUL-separated.
	script := `printf '%s\0' "$@"; printf '%s\0' ` + func() string {
		var b strings.Builder
		for i := range tricky {
			b.WriteString(`"$V` + strings.Repeat("X", i) + `" `)
		}
		return b.String()
	}() + `"$SANDBOX_OWN"; echo to-stderr >&2; exit 3`
	spec := Spec{ID: "run-1", Command: "/bin/sh", Args: append([]string{"-c", script, "sh"}, tricky...), Env: env}
	if err := r.Launch(ctxT(t, 10*time.Second), ref, spec); err != nil {
		t.Fatalf("launch: %v", err)
	}
	out, errOut, st := follow(t, r, ref, "run-1")
	if st != (ExitStatus{Code: 3}) {
		t.Errorf("status = %+v, want code 3", st)
	}
	if errOut != "to-stderr\n" {
		t.Errorf("stderr = %q", errOut)
	}
	got := strings.Split(strings.TrimSuffix(out, "\x00"), "\x00")
	want := append(append(append([]string{}, tricky...), tricky...), "task")
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("value %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestLaunchKeepsSecretsOutOfArgvAndAllocDir(t *testing.T) {
	r, ref := localSandbox(t)
	spec := Spec{ID: "secret", Command: "/bin/sleep", Args: []string{"0.2"}, Env: map[string]string{"TOKEN": "s3cr3t-value"}}
	if err := r.Launch(ctxT(t, 10*time.Second), ref, spec); err != nil {
		t.Fatal(err)
	}
	for _, c := range launchCommand("secret", spec, 0) {
		if strings.Contains(c, "s3cr3t") {
			t.Fatalf("secret in argv: %q", c)
		}
	}
	_ = filepath.WalkDir(filepath.Join(ref.HostAllocDir, "alloc"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "s3cr3t") {
				t.Errorf("secret in shared alloc dir file %s", p)
			}
		}
		return nil
	})
	envFile := filepath.Join(ref.HostAllocDir, "sandbox", "secrets", "agentkernel-secret.env")
	fi, err := os.Stat(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("env file mode = %v, want 0600", fi.Mode().Perm())
	}
	if b, err := os.ReadFile(envFile); err != nil || !strings.Contains(string(b), "s3cr3t-value") {
		t.Errorf("env file: %q, %v", b, err)
	}
	follow(t, r, ref, "secret")
}

func TestLaunchAtMostOnce(t *testing.T) {
	r, ref := localSandbox(t)
	spec := Spec{ID: "once", Command: "/bin/sh", Args: []string{"-c", "echo ran"}}
	if err := r.Launch(ctxT(t, 10*time.Second), ref, spec); err != nil {
		t.Fatal(err)
	}
	err := r.Launch(ctxT(t, 10*time.Second), ref, spec)
	if !errors.Is(err, ErrAlreadyLaunched) {
		t.Fatalf("second launch: %v, want ErrAlreadyLaunched", err)
	}
	if out, _, _ := follow(t, r, ref, "once"); out != "ran\n" {
		t.Errorf("stdout = %q, want one run", out)
	}
}

func TestLaunchReportsExitCodesAndSignals(t *testing.T) {
	r, ref := localSandbox(t)
	for _, tc := range []struct {
		id, script string
		want       ExitStatus
	}{
		{"ok", "exit 0", ExitStatus{}},
		{"code", "exit 42", ExitStatus{Code: 42}},
		{"term", "kill -TERM $$", ExitStatus{Code: 143, Signal: 15}},
		{"kill", "kill -KILL $$", ExitStatus{Code: 137, Signal: 9}},
		{"missing", "exec /nonexistent/cmd", ExitStatus{Code: 127}},
	} {
		if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: tc.id, Command: "/bin/sh", Args: []string{"-c", tc.script}}); err != nil {
			t.Fatal(err)
		}
		if _, _, st := follow(t, r, ref, tc.id); st != tc.want {
			t.Errorf("%s: status %+v, want %+v", tc.id, st, tc.want)
		}
	}
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "nocmd", Command: "/nonexistent/cmd"}); err != nil {
		t.Fatal(err)
	}
	_, errOut, st := follow(t, r, ref, "nocmd")
	if st.Code != 127 || !strings.Contains(errOut, "/nonexistent/cmd") {
		t.Errorf("missing command: status %+v, stderr %q", st, errOut)
	}
}

func TestLaunchOutlivesExecSession(t *testing.T) {
	r, ref := localSandbox(t)
	start := time.Now()
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "long", Command: "/bin/sleep", Args: []string{"1"}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Fatalf("launch waited for the command (%s)", d)
	}
	if _, exited, err := r.Status(ref, "long"); err != nil || exited {
		t.Fatalf("status right after launch: exited=%v err=%v", exited, err)
	}
	if _, _, st := follow(t, r, ref, "long"); st != (ExitStatus{}) {
		t.Errorf("status %+v", st)
	}
}

func TestLaunchWithoutCommandPreparesEnvForExec(t *testing.T) {
	r, ref := localSandbox(t)
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "hold", Env: map[string]string{"GREETING": "hi 'there'"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ref.RunDir("hold"), filePid)); !os.IsNotExist(err) {
		t.Fatalf("a command was started: %v", err)
	}
	out, _, code, err := execOutput(ctxT(t, 10*time.Second), r, ref, "hold", []string{"/bin/sh", "-c", `printf %s "$GREETING"; exit 7`})
	if err != nil || code != 7 || string(out) != "hi 'there'" {
		t.Fatalf("exec: out %q code %d err %v", out, code, err)
	}
	// A later launch of the same run id still starts the command.
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "hold", Command: "/bin/true"}); err != nil {
		t.Fatal(err)
	}
	follow(t, r, ref, "hold")
}

func TestBadRunIDs(t *testing.T) {
	r, ref := localSandbox(t)
	for _, id := range []string{"", ".", "..", "../x", "a/b", "a b", strings.Repeat("x", 129), ".hidden"} {
		if err := r.Launch(ctxT(t, time.Second), ref, Spec{ID: id, Command: "/bin/true"}); err == nil {
			t.Errorf("run id %q accepted", id)
		}
	}
}

func TestLaunchMakesRunDirWhenHostCannot(t *testing.T) {
	r, ref := localSandbox(t)
	noHost := ref
	noHost.HostAllocDir = "" // the plugin cannot reach the run dir: the launcher makes it
	if err := r.Launch(ctxT(t, 10*time.Second), noHost, Spec{ID: "inside", Command: "/bin/sh", Args: []string{"-c", "echo made"}}); err != nil {
		t.Fatal(err)
	}
	if out, _, _ := follow(t, r, ref, "inside"); out != "made\n" {
		t.Errorf("stdout %q", out)
	}
	envFile := filepath.Join(ref.HostAllocDir, "sandbox", "secrets", "agentkernel-inside.env")
	if _, err := os.Stat(envFile); err != nil {
		t.Fatal(err)
	}
}

func TestLaunchedCommandLooksLikeANomadTask(t *testing.T) {
	r, ref := localSandbox(t)
	// Its own session (setsid, pid unchanged) and the sandbox's umask, not the
	// launcher's 077.
	script := `umask; ps -o sid= -p $$ | tr -d ' '; echo $$`
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "task", Command: "/bin/sh", Args: []string{"-c", script}}); err != nil {
		t.Fatal(err)
	}
	out, _, _ := follow(t, r, ref, "task")
	lines := strings.Fields(out)
	if err := awaitPidRecord(ctxT(t, 10*time.Second), ref.files(), runRel("task"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	fields, _, _ := readRecord(ref.files(), path.Join(runRel("task"), filePid))
	if len(lines) != 3 || lines[0] == "0077" || lines[1] != fields[0] || lines[2] != fields[0] {
		t.Errorf("umask, session, pid = %q; recorded pid %s", lines, fields[0])
	}
}

func TestLaunchLargeEnv(t *testing.T) {
	r, ref := localSandbox(t)
	big := strings.Repeat("0123456789abcdef'\n", 4096) // 72 KiB
	start := time.Now()
	if err := r.Launch(ctxT(t, 30*time.Second), ref, Spec{ID: "big", Command: "/bin/sh", Args: []string{"-c", `printf %s "$BIG"`}, Env: map[string]string{"BIG": big}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("launch with a %d KiB env: %s", len(big)>>10, time.Since(start))
	if out, _, _ := follow(t, r, ref, "big"); out != big {
		t.Errorf("env value changed on the way: %d bytes, want %d", len(out), len(big))
	}
}
