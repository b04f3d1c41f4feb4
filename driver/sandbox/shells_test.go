package sandbox

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScriptsUnderOtherShells runs the launcher, the launch session and the
// exec wrapper under the shells a sandbox image may have as /bin/sh: dash
// (Debian), bash (RHEL and friends) and busybox (Alpine).
func TestScriptsUnderOtherShells(t *testing.T) {
	for _, shell := range [][]string{{"dash"}, {"bash"}, {"busybox", "sh"}} {
		t.Run(shell[0], func(t *testing.T) {
			if _, err := exec.LookPath(shell[0]); err != nil {
				t.Skipf("no %s here", shell[0])
			}
			for _, primed := range []bool{false, true} {
				r, ref := localSandboxShell(t, shell)
				ctx := ctxT(t, 20*time.Second)
				if primed {
					if err := r.Prime(ctx, ref); err != nil {
						t.Fatal(err)
					}
				}
				// The command leads a session of its own, as a Nomad task
				// does, and the pid recorded is its own (the session's one
				// launch when primed, then one by exec).
				if err := r.Launch(ctx, ref, Spec{ID: "sid", Command: "/bin/sh", Args: []string{"-c", `read -r p _ _ _ g s _ </proc/self/stat; echo "$p $g $s"`}}); err != nil {
					t.Fatal(err)
				}
				out, _, _ := follow(t, r, ref, "sid")
				rec, err := os.ReadFile(filepath.Join(ref.HostAllocDir, "alloc", runDirName, "sid", filePid))
				if f := strings.Fields(out); len(f) != 3 || f[0] != f[1] || f[0] != f[2] || !strings.HasPrefix(string(rec), f[0]+" ") {
					t.Errorf("primed=%v: pid, group and session %q, pid record %q (%v); want one pid, recorded", primed, out, rec, err)
				}
				if primed {
					if err := r.Prime(ctx, ref); err != nil {
						t.Fatal(err)
					}
				}
				env := map[string]string{"V": tricky[1] + tricky[2] + tricky[3], "UID": "ignored"}
				spec := Spec{ID: "s", Command: "/bin/sh", Args: []string{"-c", `printf '%s|' "$V" "$@"; exit 9`, "sh", tricky[3], tricky[5]}, Env: env}
				if err := r.Launch(ctx, ref, spec); err != nil {
					t.Fatalf("primed=%v: %v", primed, err)
				}
				out, _, st := follow(t, r, ref, "s")
				if want := env["V"] + "|" + tricky[3] + "|" + tricky[5] + "|"; out != want || st.Code != 9 {
					t.Errorf("primed=%v: stdout %q status %+v", primed, out, st)
				}
				if err := r.Launch(ctx, ref, Spec{ID: "k", Command: "/bin/sleep", Args: []string{"30"}}); err != nil {
					t.Fatal(err)
				}
				if err := r.Signal(ctx, ref, "k", "TERM"); err != nil {
					t.Fatal(err)
				}
				if st := waitExited(t, r, ref, "k"); st.Signal != 15 {
					t.Errorf("primed=%v: signal: %+v", primed, st)
				}
				o, _, code, err := execOutput(ctx, r, ref, "s", []string{"/bin/sh", "-c", `printf %s "$V"; exit 3`})
				if err != nil || code != 3 || string(o) != env["V"] {
					t.Errorf("primed=%v: exec: %q %d %v", primed, o, code, err)
				}
				if err := r.Launch(ctx, ref, spec); err == nil || !strings.Contains(err.Error(), "already") {
					t.Errorf("primed=%v: relaunch: %v", primed, err)
				}
			}
		})
	}
}
