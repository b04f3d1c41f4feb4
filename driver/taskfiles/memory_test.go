package taskfiles

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// The plugin's memory, measured where it is the plugin's alone: this test
// binary run again (TestMain) does what the driver does when a task's
// command has built a tree and exits (a Refresh for a signal, then the
// write-back), and reports its peak RSS (VmHWM) and what the calls said.
const memoryHelperEnv = "TASKFILES_MEMORY_HELPER"

// memoryJob is what the helper process is given.
type memoryJob struct {
	Task, Sandbox, State string
}

// memoryResult is what it reports.
type memoryResult struct {
	Refresh, Out string // the calls' errors, "" for none
	StateBytes   int64  // the state file's size after the refresh
	PeakRSS      int64  // VmHWM, bytes
}

func TestMain(m *testing.M) {
	if job := os.Getenv(memoryHelperEnv); job != "" {
		os.Exit(memoryHelper(job))
	}
	os.Exit(m.Run())
}

func memoryHelper(arg string) int {
	var job memoryJob
	if err := json.Unmarshal([]byte(arg), &job); err != nil {
		fmt.Println(err)
		return 1
	}
	s := &Sync{Task: allocfs.New(job.Task, "task").WithHardLinks(), Sandbox: allocfs.New(job.Sandbox, "sandbox"),
		Trees: Trees("agent", "sandbox"), UID: 65534, GID: 65534, StatePath: job.State}
	var r memoryResult
	if _, err := s.Refresh(); err != nil {
		r.Refresh = err.Error()
	}
	if fi, err := os.Stat(job.State); err == nil {
		r.StateBytes = fi.Size()
	}
	if _, err := s.Out(); err != nil {
		r.Out = err.Error()
	}
	r.PeakRSS = vmHWM()
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
	return 0
}

func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// nest makes depth nested directories named name beneath dir (deeper than
// PATH_MAX allows a path: each is made relative to the one above), then in
// the deepest a file and links hard links to it.
func nest(t *testing.T, dir string, depth int, name string, links int) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range depth {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	defer unix.Close(fd)
	f, err := unix.Openat(fd, "f", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(f)
	for i := range links {
		if err := unix.Linkat(fd, "f", fd, "l"+strconv.Itoa(i), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// The trees of issue 20, under the default limits, in the sandbox's local/:
// the plugin's peak RSS stays under maxPeakRSS, the write-back fails with
// ErrLimit and writes nothing, and the state file stays as small as the copy
// in left it. The code before listed a whole tree, a path per entry, before
// any bound, and recorded the sandbox's trees on every refresh: in this
// test it peaked at 994 MiB and wrote a 161 MB state file for the first
// tree, 1.9 GiB and 331 MB for the second. (Wide trees are bounded the same
// way, by the entries bound: TestEveryBoundStopsTheWalk.)
func TestMemoryStaysBoundedWhateverTheTree(t *testing.T) {
	const maxPeakRSS = 64 << 20
	long := strings.Repeat("n", 240)
	for _, c := range []struct {
		name  string
		build func(t *testing.T, dir string)
		want  string
	}{
		// 2.6 MiB on disk: 110 nested directories of 240-character
		// names, 6,000 hard links in the deepest.
		{"issue 20's tree", func(t *testing.T, dir string) { nest(t, dir, 110, long, 6000) },
			fmt.Sprintf("more than %d deep", MaxDepth)},
		// Ten times the name-bytes bound within the depth bound: each of
		// 44,000 hard links 7.5 KB of path.
		{"10x the name bytes", func(t *testing.T, dir string) { nest(t, dir, MaxDepth-1, long, 44_000) },
			"bytes together"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			write(t, filepath.Join(f.task, "agent/local/config"), "1", 0o644)
			if _, err := f.sync.In(); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(f.sync.StatePath)
			if err != nil {
				t.Fatal(err)
			}
			stateAfterIn := fi.Size()
			c.build(t, filepath.Join(f.sandbox, "sandbox/local"))
			write(t, filepath.Join(f.task, "agent/local/config"), "22", 0o644) // a template rendered again
			// The task's trees the write-back writes (local/, alloc/data);
			// agent/private is left out, as the refresh records its copy
			// there: it holds only the plugin's state file, which the
			// write-back never writes.
			before := treeSnapshot(t, filepath.Join(f.task, "agent/local"), filepath.Join(f.task, "alloc"))

			job, _ := json.Marshal(memoryJob{Task: f.task, Sandbox: f.sandbox, State: f.sync.StatePath})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), memoryHelperEnv+"="+string(job))
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			var r memoryResult
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("helper said %q: %v", out, err)
			}
			t.Logf("peak RSS %.1f MiB, state file %d bytes; write-back: %s", float64(r.PeakRSS)/(1<<20), r.StateBytes, r.Out)
			if r.PeakRSS <= 0 || r.PeakRSS > maxPeakRSS {
				t.Errorf("peak RSS %d MiB, want at most %d MiB", r.PeakRSS>>20, maxPeakRSS>>20)
			}
			if r.Refresh != "" || r.StateBytes != stateAfterIn {
				t.Errorf("refresh: %q, state file %d bytes, want no error and %d bytes", r.Refresh, r.StateBytes, stateAfterIn)
			}
			if !strings.Contains(r.Out, ErrLimit.Error()) || !strings.Contains(r.Out, c.want) {
				t.Errorf("write-back: %q, want ErrLimit saying %q", r.Out, c.want)
			}
			// The refresh put the template in the sandbox; the write-back,
			// over a bound, put nothing in the task's dirs.
			if after := treeSnapshot(t, filepath.Join(f.task, "agent/local"), filepath.Join(f.task, "alloc")); after != before {
				t.Errorf("the write-back over a bound wrote:\n%.2000s\nwas\n%.2000s", after, before)
			}
		})
	}
}
